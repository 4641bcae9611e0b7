import Foundation

/// The layout of one encrypted object (see docs/encryption.md):
///
///     header (44 bytes)
///       magic "TSBENC" (6) | version 1 (1) | algorithm 1 = AES-256-GCM (1)
///       | plaintext segment size, UInt32 big-endian (4) | per-object random salt (32)
///     segment 0 .. n-1: AES-256-GCM ciphertext of up to `segmentSize` plaintext bytes | 16-byte tag
///
/// Every segment but the last holds exactly `segmentSize` plaintext bytes; the last holds 1 to
/// `segmentSize` bytes, or 0 when the whole object is empty (one empty, tagged segment). Segment
/// `i` is sealed with
/// - the object key `HKDF-SHA256(master key, salt: header salt, info: "tsbackup/v1/object")`,
///   different for every object because the salt is random;
/// - the nonce `00 00 00 | i as UInt64 big-endian | 01 if final else 00` (the STREAM construction),
///   so a segment moved to another index, or a non-final segment presented as the last one, fails;
/// - the associated data `header | UInt64 big-endian byte count of name | name (UTF-8)`, binding
///   the object's logical name in the repository and every header field.
enum ObjectFormat {
    static let magic: [UInt8] = Array("TSBENC".utf8)
    static let version: UInt8 = 1
    static let algorithmAES256GCM: UInt8 = 1
    static let saltSize = 32
    static let headerSize = 6 + 1 + 1 + 4 + saltSize
    static let tagSize = 16
    /// The segment size new objects use: large enough that tags cost 0.0015%, small enough that
    /// decryption buffers stay small.
    static let defaultSegmentSize = 1 << 20
    /// Segment sizes a header may declare; outside this the header is refused rather than
    /// allowing a crafted object to ask for a huge buffer.
    static let segmentSizeRange = 4096...(16 << 20)
    static let objectKeyInfo = Data("tsbackup/v1/object".utf8)

    static func makeHeader(segmentSize: Int, salt: [UInt8]) -> Data {
        var header = Data(capacity: headerSize)
        header.append(contentsOf: magic)
        header.append(version)
        header.append(algorithmAES256GCM)
        let size = UInt32(segmentSize)
        header.append(contentsOf: [UInt8(size >> 24 & 0xFF), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF)])
        header.append(contentsOf: salt)
        return header
    }

    struct ParsedHeader {
        var segmentSize: Int
        var salt: [UInt8]
    }

    static func parseHeader(_ data: Data, name: String) throws(EncryptionError) -> ParsedHeader {
        guard data.count >= headerSize else { throw .objectRejected(name: name, problem: .truncated) }
        let bytes = [UInt8](data.prefix(headerSize))
        guard Array(bytes[0..<6]) == magic else { throw .objectRejected(name: name, problem: .notEncrypted) }
        guard bytes[6] == version, bytes[7] == algorithmAES256GCM else {
            throw .objectRejected(name: name, problem: .unsupportedFormat)
        }
        let size = Int(bytes[8]) << 24 | Int(bytes[9]) << 16 | Int(bytes[10]) << 8 | Int(bytes[11])
        guard segmentSizeRange.contains(size) else { throw .objectRejected(name: name, problem: .malformedHeader) }
        return ParsedHeader(segmentSize: size, salt: Array(bytes[12..<headerSize]))
    }

    static func associatedData(header: Data, name: String) -> Data {
        let nameBytes = Array(name.utf8)
        var ad = header
        ad.append(contentsOf: bigEndian(UInt64(nameBytes.count)))
        ad.append(contentsOf: nameBytes)
        return ad
    }

    static func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    /// Segment arithmetic for an object of known plaintext size.
    struct Geometry: Sendable, Equatable {
        let segmentSize: Int
        let plaintextSize: Int64

        var stride: Int64 { Int64(segmentSize + ObjectFormat.tagSize) }
        /// At least one segment, so an empty object still carries an authenticated final segment.
        var segmentCount: Int64 { plaintextSize == 0 ? 1 : (plaintextSize + Int64(segmentSize) - 1) / Int64(segmentSize) }
        var ciphertextSize: Int64 { Int64(ObjectFormat.headerSize) + plaintextSize + segmentCount * Int64(ObjectFormat.tagSize) }

        func plaintextRange(ofSegment index: Int64) -> Range<Int64> {
            let start = index * Int64(segmentSize)
            return start..<min(plaintextSize, start + Int64(segmentSize))
        }

        /// The plaintext of a non-empty run of consecutive segments.
        func plaintextRange(ofSegments segments: Range<Int64>) -> Range<Int64> {
            plaintextRange(ofSegment: segments.lowerBound).lowerBound..<plaintextRange(ofSegment: segments.upperBound - 1).upperBound
        }

        func ciphertextOffset(ofSegment index: Int64) -> Int64 { Int64(ObjectFormat.headerSize) + index * stride }

        func ciphertextRange(ofSegment index: Int64) -> Range<Int64> {
            let plain = plaintextRange(ofSegment: index)
            let start = ciphertextOffset(ofSegment: index)
            return start..<(start + Int64(plain.count) + Int64(ObjectFormat.tagSize))
        }

        /// The geometry whose encryption is `ciphertextSize` bytes long, or nil if no plaintext
        /// size gives that length (a truncated or padded object).
        init?(segmentSize: Int, ciphertextSize: Int64) {
            // The size is what the store reports (an S3 listing, Content-Length): a negative one
            // made the subtraction below overflow and trap (Fuzz/corpus/encryption/regression-*).
            guard ciphertextSize >= Int64(ObjectFormat.headerSize + ObjectFormat.tagSize) else { return nil }
            let body = ciphertextSize - Int64(ObjectFormat.headerSize)
            let stride = Int64(segmentSize + ObjectFormat.tagSize)
            guard body >= Int64(ObjectFormat.tagSize) else { return nil }
            let full = body / stride
            let rest = body % stride
            let plaintext: Int64
            if rest == 0 {
                plaintext = full * Int64(segmentSize)
            } else if rest == Int64(ObjectFormat.tagSize) && full == 0 {
                plaintext = 0
            } else if rest > Int64(ObjectFormat.tagSize) {
                plaintext = full * Int64(segmentSize) + rest - Int64(ObjectFormat.tagSize)
            } else {
                return nil
            }
            self.init(segmentSize: segmentSize, plaintextSize: plaintext)
            guard self.ciphertextSize == ciphertextSize else { return nil }
        }

        init(segmentSize: Int, plaintextSize: Int64) {
            self.segmentSize = segmentSize
            self.plaintextSize = plaintextSize
        }

        /// Consecutive ciphertext ranges covering the whole object, each ending on a segment
        /// boundary and about `targetSize` bytes long (the first also holds the header). Uploading
        /// parts along these ranges encrypts every segment exactly once.
        func segmentAlignedRanges(targetSize: Int64) -> [Range<Int64>] {
            let segmentsPerRange = max(1, targetSize / stride)
            var ranges: [Range<Int64>] = []
            var segment: Int64 = 0
            var start: Int64 = 0
            while segment < segmentCount {
                let last = min(segmentCount, segment + segmentsPerRange) - 1
                let end = ciphertextRange(ofSegment: last).upperBound
                ranges.append(start..<end)
                start = end
                segment = last + 1
            }
            return ranges
        }
    }
}

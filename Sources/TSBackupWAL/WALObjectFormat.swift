import CZstd
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The plain content of one archived WAL object (before the repository's encryption, if any):
///
///     magic "TSBWAL01" (8) | compression (1): 0 none, 1 zstd | reserved (3)
///     | plain size, UInt64 big-endian (8) | SHA-256 of the plain file (32) | payload
///
/// The checksum travels inside the object, so it works alike on every store, survives copies,
/// and is covered by the encryption's authentication. The zstd frame also carries zstd's own
/// content checksum (XXH64 of the plain file, `ZSTD_c_checksumFlag`, standard zstd: every decoder
/// reads it) in objects written since it was added; wal-fetch relies on that one, which the
/// decompressor checks at the frame's end, plus the recorded size, and checks the SHA-256 only of
/// objects without it (``Decoder``). The whole-object read (``decode(_:)``: timeline histories,
/// `.backup` files) checks both. Nothing reaches a place PostgreSQL reads before the
/// check passed.
public enum WALObjectFormat {
    package static let magic = Array("TSBWAL01".utf8)
    package static let headerSize = 8 + 1 + 3 + 8 + 32
    package static let compressionNone: UInt8 = 0
    package static let compressionZstd: UInt8 = 1
    /// The largest plain size an object may declare: PostgreSQL's largest segment (1 GB).
    public static let maximumPlainSize: Int64 = 1 << 30
    /// zstd level -1, the first of zstd's fast (negative) levels: WAL is compressed on the
    /// archiving path, once per segment, where PostgreSQL waits for it. Measured on real segments
    /// (pgbench, TimescaleDB inserts, the benchmark's churn; docs/pitr.md) it costs 15-20 % less
    /// CPU than level 1 and stores 0-10 points more (still less than pgBackRest's lz4). The level
    /// is not recorded: zstd decompresses every level alike, so objects of any level fetch.
    public static let defaultLevel: Int32 = -1

    /// A decoded object's description, without the payload.
    public struct Header: Sendable, Equatable {
        public var compression: UInt8
        public var plainSize: Int64
        public var sha256: [UInt8]
        public var sha256Hex: String { WALDigest.hex(sha256) }
    }

    /// Compresses `plain` and prefixes the header, in one piece. wal-push streams instead
    /// (``Encoder``); this whole-object form writes the same format and stays for small files
    /// and for tests that prove the two agree.
    /// `frameChecksum: false` writes the frame without zstd's content checksum, as builds before
    /// it did (tests of old objects).
    public static func encode(_ plain: Data, sha256 digest: [UInt8], level: Int32 = defaultLevel, frameChecksum: Bool = true) throws -> Data {
        let compressed = try Zstd.compress(plain, level: level, checksum: frameChecksum)
        var out = headerBytes(compression: compressionZstd, plainSize: Int64(plain.count), sha256: digest)
        out.append(compressed)
        return out
    }

    /// The 52-byte header.
    package static func headerBytes(compression: UInt8, plainSize: Int64, sha256 digest: [UInt8]) -> Data {
        var out = Data(capacity: headerSize)
        out.append(contentsOf: magic)
        out.append(contentsOf: [compression, 0, 0, 0])
        out.append(contentsOf: (0..<8).map { UInt8(truncatingIfNeeded: UInt64(plainSize) >> (56 - 8 * $0)) })
        out.append(contentsOf: digest)
        return out
    }

    /// The header of a stored object; throws `WALObjectError.malformed` when it is not one.
    public static func header(of data: Data) throws(WALObjectError) -> Header {
        guard data.count >= headerSize else { throw .malformed("it is shorter than its header") }
        let bytes = [UInt8](data.prefix(headerSize))
        guard Array(bytes[0..<8]) == magic else { throw .malformed("it does not start with tsbackup's WAL object header") }
        let compression = bytes[8]
        guard compression == compressionNone || compression == compressionZstd else { throw .malformed("unknown compression \(compression)") }
        let size = bytes[12..<20].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        // Nothing PostgreSQL archives is larger than its largest segment; a larger declared size
        // is damage (or a crafted object), refused before anything of that size is allocated.
        guard size <= UInt64(maximumPlainSize) else {
            throw .malformed("its header declares \(size) bytes, more than PostgreSQL's largest WAL segment (1 GB), so it is not a file tsbackup archived")
        }
        return Header(compression: compression, plainSize: Int64(size), sha256: Array(bytes[20..<52]))
    }

    /// Whether a zstd frame starting with `start` (its first 5 bytes or more) declares zstd's
    /// content checksum: the frame magic, then bit 2 of the frame header descriptor (RFC 8878,
    /// 3.1.1.1.1). False for anything that is not a zstd frame's start. A damaged flag fails
    /// safely either way: cleared, the frame no longer parses to its end (its last 4 bytes are
    /// left over) and the SHA-256 is checked; set on a frame without one, the frame ends short.
    package static func frameDeclaresContentChecksum(_ start: some Collection<UInt8>) -> Bool {
        let bytes = Array(start.prefix(5))
        return bytes.count == 5 && Array(bytes[0..<4]) == zstdFrameMagic && bytes[4] & 0x04 != 0
    }

    /// ZSTD_MAGICNUMBER 0xFD2FB528, little-endian as it is stored.
    package static let zstdFrameMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

    /// The plain file: decompressed (zstd checks its frame checksum when there is one), its size
    /// and SHA-256 checked against the header. This whole-object path (timeline histories,
    /// `.backup` files) always checks the SHA-256.
    public static func decode(_ data: Data) throws(WALObjectError) -> (Header, Data) {
        let header = try header(of: data)
        let payload = data.subdata(in: (data.startIndex + headerSize)..<data.endIndex)
        let plain: Data
        if header.compression == compressionZstd {
            do {
                plain = try Zstd.decompress(payload, expectedSize: Int(header.plainSize))
            } catch {
                throw .malformed("its compressed data does not decompress (\(error))")
            }
        } else {
            plain = payload
        }
        guard Int64(plain.count) == header.plainSize else {
            throw .checksumMismatch("it decompresses to \(plain.count) bytes, its header says \(header.plainSize)")
        }
        // WALDigest (swift-crypto) rather than Crypto here, so the fuzz build, which stands in
        // its own SHA-256 for it, can compile this file (Fuzz/sources.txt).
        guard WALDigest.sha256(plain) == header.sha256 else {
            throw .checksumMismatch("the SHA-256 of its content differs from the one recorded when it was archived")
        }
        return (header, plain)
    }
}

/// Why a stored WAL object could not be used.
public enum WALObjectError: Error, Sendable, Equatable {
    case malformed(String)
    case checksumMismatch(String)

    public var reason: String {
        switch self {
        case .malformed(let text), .checksumMismatch(let text): text
        }
    }
}

/// libzstd's one-shot API.
package enum Zstd {
    package struct Failure: Error, CustomStringConvertible {
        package var description: String
    }

    /// One frame that records its content size and, with `checksum`, zstd's content checksum.
    package static func compress(_ input: Data, level: Int32, checksum: Bool = true) throws -> Data {
        guard let context = ZSTD_createCCtx() else { throw Failure(description: "out of memory") }
        defer { ZSTD_freeCCtx(context) }
        for code in [ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level),
                     ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, checksum ? 1 : 0)] where ZSTD_isError(code) != 0 {
            throw Failure(description: String(cString: ZSTD_getErrorName(code)))
        }
        let bound = ZSTD_compressBound(input.count)
        var output = Data(count: bound)
        let written = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { inp in
                ZSTD_compress2(context, out.baseAddress, bound, inp.baseAddress, inp.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw Failure(description: String(cString: ZSTD_getErrorName(written))) }
        output.count = written
        return output
    }

    package static func decompress(_ input: Data, expectedSize: Int) throws -> Data {
        // The frame records its size; it must agree with the header's before anything is allocated.
        let frameSize = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        guard frameSize == UInt64(expectedSize) else {
            throw Failure(description: frameSize >= UInt64.max - 1 ? "the frame declares no valid size" : "the frame declares \(frameSize) bytes")
        }
        var output = Data(count: expectedSize)
        let written = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { inp in
                ZSTD_decompress(out.baseAddress, expectedSize, inp.baseAddress, inp.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw Failure(description: String(cString: ZSTD_getErrorName(written))) }
        output.count = written
        return output
    }
}

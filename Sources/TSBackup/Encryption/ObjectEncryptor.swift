import Foundation

/// Encrypts one object of known size, any byte range at a time, so parts of it can be uploaded in
/// parallel straight from the plaintext file with no encrypted temporary copy.
///
/// Made by `RepositoryEncryption.makeEncryptor(name:plaintextSize:)`; its random salt (and so its
/// key and header) is fixed at creation, so ranges produced at different times fit together.
/// The plaintext must not change while the encryptor is in use: a segment sealed twice with
/// different contents under the same nonce would weaken that object's encryption. Cutting parts
/// along `segmentAlignedRanges(targetSize:)` seals each segment once per upload attempt.
public struct ObjectEncryptor: Sendable {
    let cipher: SegmentCipher
    let geometry: ObjectFormat.Geometry

    /// The object's logical name, bound into every segment.
    public var name: String { cipher.name }
    /// Bytes of plaintext this encryptor covers.
    public var plaintextSize: Int64 { geometry.plaintextSize }
    /// Bytes of the whole encrypted object.
    public var ciphertextSize: Int64 { geometry.ciphertextSize }
    /// The object's header (the first `RepositoryEncryption.headerSize` ciphertext bytes).
    public var header: Data { cipher.header }

    /// Consecutive ciphertext ranges covering the whole object, each about `targetSize` bytes
    /// (rounded down to whole segments, at least one) and ending on a segment boundary; the first
    /// includes the header. Made for multipart uploads.
    public func segmentAlignedRanges(targetSize: Int64) -> [Range<Int64>] {
        geometry.segmentAlignedRanges(targetSize: targetSize)
    }

    /// The plaintext bytes needed to produce the ciphertext `range` (whole segments).
    public func plaintextRange(covering range: Range<Int64>) -> Range<Int64> {
        guard let segments = segments(covering: range) else { return 0..<0 }
        return geometry.plaintextRange(ofSegments: segments)
    }

    /// The ciphertext bytes in `range` (clamped to the object). `reader` is called once, with the
    /// plaintext range of the segments that overlap `range`, and must return exactly those bytes.
    public func ciphertext<E: Error>(in range: Range<Int64>, reader: (Range<Int64>) throws(E) -> Data) throws -> Data {
        let range = clamp(range)
        guard let segments = segments(covering: range) else { return headerSlice(range) }
        let plainRange = plaintextRange(covering: range)
        let plaintext = try reader(plainRange)
        return try assemble(range: range, segments: segments, plainRange: plainRange, plaintext: plaintext)
    }

    /// `ciphertext(in:reader:)` for an asynchronous reader (a file handle or a network body).
    public func ciphertext(in range: Range<Int64>, asyncReader reader: (Range<Int64>) async throws -> Data) async throws -> Data {
        let range = clamp(range)
        guard let segments = segments(covering: range) else { return headerSlice(range) }
        let plainRange = plaintextRange(covering: range)
        let plaintext = try await reader(plainRange)
        return try assemble(range: range, segments: segments, plainRange: plainRange, plaintext: plaintext)
    }

    private func clamp(_ range: Range<Int64>) -> Range<Int64> {
        range.clamped(to: 0..<geometry.ciphertextSize)
    }

    private func headerSlice(_ range: Range<Int64>) -> Data {
        let header = cipher.header
        let low = min(Int(range.lowerBound), header.count), high = min(Int(range.upperBound), header.count)
        return header.subdata(in: low..<high)
    }

    /// Indices of the segments that overlap `range`, or nil if it lies inside the header.
    func segments(covering range: Range<Int64>) -> Range<Int64>? {
        let headerSize = Int64(ObjectFormat.headerSize)
        guard range.upperBound > headerSize, !range.isEmpty else { return nil }
        let first = max(0, range.lowerBound - headerSize) / geometry.stride
        let last = min(geometry.segmentCount - 1, (range.upperBound - 1 - headerSize) / geometry.stride)
        return first..<(last + 1)
    }

    func assemble(range: Range<Int64>, segments: Range<Int64>, plainRange: Range<Int64>, plaintext: Data) throws(EncryptionError) -> Data {
        guard Int64(plaintext.count) == Int64(plainRange.count) else {
            throw .plaintextReadMismatch(name: cipher.name, expected: plainRange.count, got: plaintext.count)
        }
        let firstOffset = geometry.ciphertextOffset(ofSegment: segments.lowerBound)
        var output = Data()
        output.reserveCapacity(Int(range.count))
        if range.lowerBound < firstOffset { output.append(headerSlice(range.lowerBound..<firstOffset)) }
        let base = plaintext.startIndex
        for index in segments {
            let piece = geometry.plaintextRange(ofSegment: index)
            let low = base + Int(piece.lowerBound - plainRange.lowerBound)
            let high = base + Int(piece.upperBound - plainRange.lowerBound)
            try cipher.seal(plaintext[low..<high], index: index, final: index == geometry.segmentCount - 1, into: &output)
        }
        // `output` starts at min(range.lowerBound, firstOffset); trim to the requested range.
        let outputStart = min(range.lowerBound, firstOffset)
        let dropFront = Int(range.lowerBound - outputStart)
        let keep = Int(range.count)
        if dropFront == 0 && output.count == keep { return output }
        return output.subdata(in: dropFront..<(dropFront + keep))
    }
}

/// Decrypts and authenticates an object, one segment-aligned ciphertext range at a time, so parts
/// of it can be downloaded in parallel.
///
/// Made by `RepositoryEncryption.makeDecryptor(name:header:ciphertextSize:)` from the object's
/// header and its total size (HeadObject or the file size). The total size decides which segment
/// must carry the final flag, so a truncated object fails on its last segment. Each range
/// authenticates on its own; the caller must decrypt every range of the object (as
/// `segmentAlignedRanges` returns them) before it trusts the object as complete.
public struct ObjectDecryptor: Sendable {
    let cipher: SegmentCipher
    let geometry: ObjectFormat.Geometry

    /// The object's logical name, bound into every segment.
    public var name: String { cipher.name }
    /// Bytes of plaintext the object holds.
    public var plaintextSize: Int64 { geometry.plaintextSize }
    /// Bytes of the whole encrypted object.
    public var ciphertextSize: Int64 { geometry.ciphertextSize }
    /// Plaintext bytes per segment, as the object's header declares.
    public var segmentSize: Int { geometry.segmentSize }

    /// Consecutive ciphertext ranges covering the whole object, each about `targetSize` bytes and
    /// on segment boundaries; the first includes the header. Made for parallel ranged downloads.
    public func segmentAlignedRanges(targetSize: Int64) -> [Range<Int64>] {
        geometry.segmentAlignedRanges(targetSize: targetSize)
    }

    /// The plaintext range that the segment-aligned ciphertext range `range` decrypts to.
    public func plaintextRange(ofCiphertext range: Range<Int64>) throws(EncryptionError) -> Range<Int64> {
        let segments = try alignedSegments(range)
        guard !segments.isEmpty else { return 0..<0 }
        return geometry.plaintextRange(ofSegments: segments)
    }

    /// Decrypts `data`, the ciphertext starting at `ciphertextOffset`. The range must start at 0
    /// (the header, which is checked and skipped) or at a segment, and end at a segment's end.
    public func plaintext(ciphertextOffset: Int64, _ data: Data) throws(EncryptionError) -> Data {
        let range = ciphertextOffset..<(ciphertextOffset + Int64(data.count))
        let segments = try alignedSegments(range)
        if ciphertextOffset == 0 {
            guard data.prefix(ObjectFormat.headerSize) == cipher.header else {
                throw .objectRejected(name: cipher.name, problem: .authenticationFailed)
            }
        }
        // One segment: its plaintext as the crypto library returns it, without another copy.
        if segments.count == 1, let index = segments.first {
            let sealed = geometry.ciphertextRange(ofSegment: index)
            let low = data.startIndex + Int(sealed.lowerBound - ciphertextOffset)
            let high = data.startIndex + Int(sealed.upperBound - ciphertextOffset)
            return try cipher.open(data[low..<high], index: index, final: index == geometry.segmentCount - 1)
        }
        var output = Data()
        output.reserveCapacity(data.count)
        for index in segments {
            let sealed = geometry.ciphertextRange(ofSegment: index)
            let low = data.startIndex + Int(sealed.lowerBound - ciphertextOffset)
            let high = data.startIndex + Int(sealed.upperBound - ciphertextOffset)
            try cipher.open(data[low..<high], index: index, final: index == geometry.segmentCount - 1, into: &output)
        }
        return output
    }

    /// The segments exactly covered by `range`; header-only ranges cover none.
    private func alignedSegments(_ range: Range<Int64>) throws(EncryptionError) -> Range<Int64> {
        let headerSize = Int64(ObjectFormat.headerSize)
        let misaligned = EncryptionError.objectRejected(name: cipher.name, problem: .misalignedRange)
        guard range.upperBound <= geometry.ciphertextSize else { throw misaligned }
        let start = range.lowerBound == 0 ? headerSize : range.lowerBound
        guard start >= headerSize, (start - headerSize) % geometry.stride == 0 else { throw misaligned }
        let first = (start - headerSize) / geometry.stride
        if range.upperBound == start || (range.lowerBound == 0 && range.upperBound == headerSize) { return first..<first }
        guard range.upperBound > start else { throw misaligned }
        let last = (range.upperBound - 1 - headerSize) / geometry.stride
        guard geometry.ciphertextRange(ofSegment: last).upperBound == range.upperBound else { throw misaligned }
        return first..<(last + 1)
    }
}

import Crypto
import Foundation

/// Encrypts an object whose size is not known in advance (a pipe), piece by piece.
///
/// Feed plaintext with `update(_:)`, which returns the ciphertext ready so far (the header first),
/// then call `finish()` once for the rest. Holds back at most one segment, because only the end of
/// the input tells whether a full segment is the final one. The output is byte for byte the same
/// format as `ObjectEncryptor`'s.
public struct StreamEncryptor: Sendable {
    let cipher: SegmentCipher
    private var pending = Data()
    private var nextIndex: Int64 = 0
    private var headerWritten = false
    private var finished = false

    init(cipher: SegmentCipher) {
        self.cipher = cipher
    }

    /// The object's logical name, bound into every segment.
    public var name: String { cipher.name }

    /// Adds plaintext; returns the ciphertext completed by it (possibly empty).
    public mutating func update(_ plaintext: Data) throws(EncryptionError) -> Data {
        precondition(!finished, "StreamEncryptor used after finish()")
        pending.append(plaintext)
        var output = takeHeader()
        let size = cipher.segmentSize
        output.reserveCapacity(output.count + pending.count + (pending.count / size + 1) * ObjectFormat.tagSize)
        var consumed = 0
        // Strictly more than a segment: a segment is sealed as non-final only once a byte after it exists.
        while pending.count - consumed > size {
            let start = pending.startIndex + consumed
            try cipher.seal(pending[start..<(start + size)], index: nextIndex, final: false, into: &output)
            nextIndex += 1
            consumed += size
        }
        if consumed > 0 { pending.removeSubrange(pending.startIndex..<(pending.startIndex + consumed)) }
        return output
    }

    /// Seals the final segment (empty for an empty object) and returns the remaining ciphertext.
    public mutating func finish() throws(EncryptionError) -> Data {
        precondition(!finished, "StreamEncryptor finished twice")
        finished = true
        var output = takeHeader()
        try cipher.seal(pending, index: nextIndex, final: true, into: &output)
        pending = Data()
        return output
    }

    private mutating func takeHeader() -> Data {
        guard !headerWritten else { return Data() }
        headerWritten = true
        return cipher.header
    }
}

/// Decrypts an object fed from its first byte in pieces of any size (a download stream), without
/// knowing its size in advance.
///
/// `update(_:)` returns plaintext only of segments that authenticated; it holds back the last
/// segment seen, because only the end of the input tells whether it must be the final one.
/// `finish()` checks that the object ended with its final segment; until it returns, treat all
/// plaintext as unconfirmed (an attacker cannot alter it, but can cut the object short).
public struct StreamDecryptor: Sendable {
    private let masterKey: SymmetricKey
    /// The object's logical name, bound into every segment.
    public let name: String
    private var cipher: SegmentCipher?
    private var pending = Data()
    private var nextIndex: Int64 = 0
    private var finished = false

    init(masterKey: SymmetricKey, name: String) {
        self.masterKey = masterKey
        self.name = name
    }

    /// Adds ciphertext; returns the plaintext of the segments it completed (possibly empty).
    public mutating func update(_ ciphertext: Data) throws(EncryptionError) -> Data {
        precondition(!finished, "StreamDecryptor used after finish()")
        pending.append(ciphertext)
        if cipher == nil {
            guard pending.count >= ObjectFormat.headerSize else { return Data() }
            let header = pending.prefix(ObjectFormat.headerSize)
            let parsed = try ObjectFormat.parseHeader(header, name: name)
            cipher = SegmentCipher(master: masterKey, name: name, header: Data(header), parsed: parsed)
            pending.removeSubrange(pending.startIndex..<(pending.startIndex + ObjectFormat.headerSize))
        }
        guard let cipher else { return Data() }
        let stride = cipher.segmentSize + ObjectFormat.tagSize
        // Usually one segment per call: hand its plaintext back as it is, without a copy.
        var output: Data?
        var consumed = 0
        while pending.count - consumed > stride {
            let start = pending.startIndex + consumed
            let plain = try cipher.open(pending[start..<(start + stride)], index: nextIndex, final: false)
            if output == nil { output = plain } else { output?.append(plain) }
            nextIndex += 1
            consumed += stride
        }
        if consumed > 0 { pending.removeSubrange(pending.startIndex..<(pending.startIndex + consumed)) }
        return output ?? Data()
    }

    /// Opens the held-back segment as the final one and returns its plaintext. Throws if the input
    /// ended early (no header, a partial segment, or a last segment not sealed as final).
    public mutating func finish() throws(EncryptionError) -> Data {
        precondition(!finished, "StreamDecryptor finished twice")
        finished = true
        guard let cipher, pending.count >= ObjectFormat.tagSize else {
            throw .objectRejected(name: name, problem: .truncated)
        }
        let output = try cipher.open(pending, index: nextIndex, final: true)
        pending = Data()
        return output
    }
}

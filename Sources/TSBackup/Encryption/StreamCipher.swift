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
        var output = takeHeader()
        let size = cipher.segmentSize
        let expected = pending.count + plaintext.count
        output.reserveCapacity(output.count + expected + (expected / size + 1) * ObjectFormat.tagSize)
        var input = plaintext[...]
        // A segment is sealed as non-final only once a byte after it exists. Whole segments are
        // sealed straight from the input; only the remainder is copied into `pending`, whose
        // buffer is reused (fresh large buffers cost page faults on every call).
        while !input.isEmpty {
            if pending.count == size {
                try cipher.seal(pending, index: nextIndex, final: false, into: &output)
                nextIndex += 1
                pending.removeAll(keepingCapacity: true)
            }
            if pending.isEmpty && input.count > size {
                try cipher.seal(input.prefix(size), index: nextIndex, final: false, into: &output)
                nextIndex += 1
                input = input.dropFirst(size)
                continue
            }
            let take = min(size - pending.count, input.count)
            pending.append(input.prefix(take))
            input = input.dropFirst(take)
        }
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
        var input = ciphertext[...]
        if cipher == nil {
            let take = min(ObjectFormat.headerSize - pending.count, input.count)
            pending.append(input.prefix(take))
            input = input.dropFirst(take)
            guard pending.count == ObjectFormat.headerSize else { return Data() }
            let header = Data(pending)
            let parsed = try ObjectFormat.parseHeader(header, name: name)
            cipher = SegmentCipher(master: masterKey, name: name, header: header, parsed: parsed)
            pending.removeAll(keepingCapacity: true)
        }
        guard let cipher else { return Data() }
        let stride = cipher.segmentSize + ObjectFormat.tagSize
        // Usually one segment per call: hand its plaintext back as it is, without a copy.
        var output: Data?
        func emit(_ plain: Data) {
            if output == nil { output = plain } else { output?.append(plain) }
        }
        // As in StreamEncryptor: the last segment seen is held back until a byte after it arrives;
        // whole segments are opened straight from the input, the remainder goes to `pending`.
        while !input.isEmpty {
            if pending.count == stride {
                emit(try cipher.open(pending, index: nextIndex, final: false))
                nextIndex += 1
                pending.removeAll(keepingCapacity: true)
            }
            if pending.isEmpty && input.count > stride {
                emit(try cipher.open(input.prefix(stride), index: nextIndex, final: false))
                nextIndex += 1
                input = input.dropFirst(stride)
                continue
            }
            let take = min(stride - pending.count, input.count)
            pending.append(input.prefix(take))
            input = input.dropFirst(take)
        }
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

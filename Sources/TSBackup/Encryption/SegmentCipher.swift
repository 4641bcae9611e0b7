import Crypto
import Foundation

/// Seals and opens the segments of one object: its key, associated data and geometry-free rules.
/// Shared by the ranged encryptor/decryptor and the sequential (streaming) ones.
struct SegmentCipher: Sendable {
    let name: String
    let key: SymmetricKey
    let associatedData: Data
    let header: Data
    let segmentSize: Int

    init(master: SymmetricKey, name: String, header: Data, parsed: ObjectFormat.ParsedHeader) {
        self.name = name
        self.header = header
        self.segmentSize = parsed.segmentSize
        self.key = ObjectFormat.objectKey(master: master, salt: parsed.salt)
        self.associatedData = ObjectFormat.associatedData(header: header, name: name)
    }

    /// Appends segment `index`'s ciphertext and tag to `output`.
    func seal<Plaintext: DataProtocol>(_ plaintext: Plaintext, index: Int64, final: Bool, into output: inout Data) throws(EncryptionError) {
        precondition(plaintext.count <= segmentSize && (final || plaintext.count == segmentSize))
        do {
            let box = try AES.GCM.seal(plaintext, using: key, nonce: ObjectFormat.nonce(index: index, final: final), authenticating: associatedData)
            output.append(box.ciphertext)
            output.append(box.tag)
        } catch {
            // Sealing fails only on invalid parameters, which the format rules out.
            throw .objectRejected(name: name, problem: .malformedHeader)
        }
    }

    /// Appends segment `index`'s plaintext to `output`; `sealed` is its ciphertext and tag.
    func open(_ sealed: Data, index: Int64, final: Bool, into output: inout Data) throws(EncryptionError) {
        output.append(try open(sealed, index: index, final: final))
    }

    /// Segment `index`'s plaintext; `sealed` is its ciphertext and tag.
    func open(_ sealed: Data, index: Int64, final: Bool) throws(EncryptionError) -> Data {
        guard sealed.count >= ObjectFormat.tagSize, sealed.count <= segmentSize + ObjectFormat.tagSize,
              final || sealed.count == segmentSize + ObjectFormat.tagSize else {
            throw .objectRejected(name: name, problem: .truncated)
        }
        let split = sealed.startIndex + sealed.count - ObjectFormat.tagSize
        do {
            let box = try AES.GCM.SealedBox(nonce: ObjectFormat.nonce(index: index, final: final),
                                            ciphertext: sealed[sealed.startIndex..<split],
                                            tag: sealed[split...])
            return try AES.GCM.open(box, using: key, authenticating: associatedData)
        } catch {
            throw .objectRejected(name: name, problem: .authenticationFailed)
        }
    }
}

import Crypto
import Foundation

/// The key and nonce of a segment (see ``ObjectFormat``). Apart from the header and geometry, so
/// the fuzz build, which has no swift-crypto, can compile those (Fuzz/sources.txt).
extension ObjectFormat {
    static func objectKey(master: SymmetricKey, salt: [UInt8]) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: salt, info: objectKeyInfo, outputByteCount: 32)
    }

    static func nonce(index: Int64, final: Bool) -> AES.GCM.Nonce {
        var bytes: [UInt8] = [0, 0, 0]
        bytes.append(contentsOf: bigEndian(UInt64(index)))
        bytes.append(final ? 1 : 0)
        // 12 bytes is always a valid GCM nonce.
        return try! AES.GCM.Nonce(data: bytes)
    }
}

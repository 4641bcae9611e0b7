/// The fuzz build's stand-in for the library's `EncryptionKeyFile` (Encryption/EncryptionKeyFile.swift,
/// which imports swift-crypto): `EncryptionError`'s messages name its one constant. Keep it equal
/// to the library's.
enum EncryptionKeyFile {
    static let minimumPassphraseLength = 12
}

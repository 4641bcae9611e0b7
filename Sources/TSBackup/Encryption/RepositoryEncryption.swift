import Crypto
import Foundation
import _CryptoExtras

/// A repository's encryption, opened with its key: encrypts and decrypts the repository's objects.
///
/// Made once per command with `create(keyFile:)` (a new repository) or `open(keyFile:parameters:)`
/// (an existing one, whose marker stores `Parameters`). Holds the 256-bit master key; every object
/// gets its own key derived from it and a random salt (see `ObjectFormat` and docs/encryption.md).
/// The master key never appears in a description or reflection.
public struct RepositoryEncryption: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// What the repository's plain marker file stores about its encryption: everything needed to
    /// turn the right key file into the master key and to tell a wrong key from a damaged file.
    /// None of it is secret.
    public struct Parameters: Codable, Sendable, Equatable {
        /// The format version of these parameters and of the objects (1).
        public var version: Int
        /// The AEAD: "aes-256-gcm".
        public var algorithm: String
        /// Plaintext bytes per encrypted segment of new objects.
        public var segmentSize: Int
        /// How the key file becomes the master key.
        public var kdf: KDF
        /// The repository's random salt, base64 (32 bytes).
        public var salt: String
        /// HMAC-SHA256 under a key derived from the master key over the canonical parameters,
        /// base64: authenticates only with the right key.
        public var keyCheck: String
        /// SHA-256 (hex) of the canonical parameters and the key check: tells a damaged marker from
        /// a wrong key. Not a security measure (anyone can recompute it); the key check is.
        public var checksum: String

        // snake_case like every other file tsbackup stores.
        enum CodingKeys: String, CodingKey {
            case version, algorithm, kdf, salt, checksum
            case segmentSize = "segment_size"
            case keyCheck = "key_check"
        }

        /// The key derivation function and its cost.
        public struct KDF: Codable, Sendable, Equatable {
            /// "scrypt" (a passphrase) or "hkdf-sha256" (a raw 32-byte key, only salted per repository).
            public var name: String
            /// scrypt's cost N (a power of two), block size r and parallelism p; nil for hkdf-sha256.
            public var n: Int?
            public var r: Int?
            public var p: Int?
        }

        /// The fields the key check and the checksum cover, in a fixed text form.
        var canonical: String {
            ["tsbackup-encryption", "v\(version)", algorithm, String(segmentSize), kdf.name,
             String(kdf.n ?? 0), String(kdf.r ?? 0), String(kdf.p ?? 0), salt].joined(separator: "|")
        }

        var computedChecksum: String {
            SHA256.hash(data: Data((canonical + "|" + keyCheck).utf8)).map { String(format: "%02x", $0) }.joined()
        }
    }

    /// scrypt costs for passphrases.
    public struct ScryptCost: Sendable, Equatable {
        public var n: Int
        public var r: Int
        public var p: Int

        /// N = 2^16, r = 8, p = 2: 64 MiB of memory and about 2^17 * 8 block mixes (OWASP's
        /// second listed scrypt setting). Memory stays far below the 256 MB process budget.
        public static let `default` = ScryptCost(n: 1 << 16, r: 8, p: 2)

        public init(n: Int, r: Int, p: Int) {
            self.n = n
            self.r = r
            self.p = p
        }

        /// Memory scrypt needs for one lane: 128 * N * r bytes.
        var memory: Int { 128 * n * r }

        /// Bounds `open` accepts: a damaged or hostile marker must not make tsbackup allocate
        /// gigabytes or spin for hours before it can even say the key is wrong.
        var isAcceptable: Bool {
            n >= 1 << 10 && n <= 1 << 20 && n & (n - 1) == 0 && (1...32).contains(r) && (1...16).contains(p)
                && memory <= 256 << 20 && n * r * p <= 1 << 24
        }
    }

    /// Plaintext bytes per segment of new repositories (1 MiB).
    public static let defaultSegmentSize = ObjectFormat.defaultSegmentSize

    static let algorithmName = "aes-256-gcm"
    static let scryptName = "scrypt"
    static let rawKeyKDFName = "hkdf-sha256"
    static let saltSize = 32

    let masterKey: SymmetricKey
    /// Plaintext bytes per segment of objects this value encrypts.
    public let segmentSize: Int

    public var description: String { "repository encryption (AES-256-GCM, \(segmentSize)-byte segments)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["segmentSize": segmentSize]) }

    init(masterKey: SymmetricKey, segmentSize: Int) {
        self.masterKey = masterKey
        self.segmentSize = segmentSize
    }

    // MARK: - Creating and opening

    /// A new repository's encryption: a fresh random salt, the master key derived from the key
    /// file, and the parameters to store in the repository's marker.
    public static func create(keyFile: EncryptionKeyFile, scryptCost: ScryptCost = .default,
                              segmentSize: Int = RepositoryEncryption.defaultSegmentSize)
        throws(EncryptionError) -> (RepositoryEncryption, Parameters) {
        precondition(ObjectFormat.segmentSizeRange.contains(segmentSize), "segment size out of range")
        precondition(scryptCost.isAcceptable, "scrypt cost out of the accepted bounds")
        let salt = randomBytes(saltSize)
        let kdf: Parameters.KDF
        switch keyFile.material {
        case .rawKey: kdf = .init(name: rawKeyKDFName)
        case .passphrase: kdf = .init(name: scryptName, n: scryptCost.n, r: scryptCost.r, p: scryptCost.p)
        }
        var parameters = Parameters(version: Int(ObjectFormat.version), algorithm: algorithmName, segmentSize: segmentSize,
                                    kdf: kdf, salt: Data(salt).base64EncodedString(), keyCheck: "", checksum: "")
        let master = try deriveMasterKey(keyFile.material, kdf: kdf, salt: salt)
        parameters.keyCheck = Data(keyCheck(master: master, parameters: parameters)).base64EncodedString()
        parameters.checksum = parameters.computedChecksum
        return (RepositoryEncryption(masterKey: master, segmentSize: segmentSize), parameters)
    }

    /// Opens an existing repository's encryption. Throws `.corruptParameters` or
    /// `.unsupportedParameters` when the stored parameters are unusable (checked before any key
    /// derivation), `.keyKindMismatch` or `.wrongKey` when the key file is not the repository's.
    public static func open(keyFile: EncryptionKeyFile, parameters: Parameters) throws(EncryptionError) -> RepositoryEncryption {
        guard parameters.version == Int(ObjectFormat.version) else {
            throw .unsupportedParameters(reason: "format version \(parameters.version); this tsbackup knows version \(ObjectFormat.version)")
        }
        guard parameters.checksum == parameters.computedChecksum else {
            throw .corruptParameters(reason: "their checksum does not match")
        }
        guard parameters.algorithm == algorithmName else {
            throw .unsupportedParameters(reason: "algorithm \(parameters.algorithm)")
        }
        guard ObjectFormat.segmentSizeRange.contains(parameters.segmentSize) else {
            throw .unsupportedParameters(reason: "segment size \(parameters.segmentSize)")
        }
        guard let salt = Data(base64Encoded: parameters.salt), salt.count == saltSize else {
            throw .corruptParameters(reason: "the salt is not \(saltSize) bytes of base64")
        }
        guard let check = Data(base64Encoded: parameters.keyCheck), check.count == SHA256.byteCount else {
            throw .corruptParameters(reason: "the key check is not \(SHA256.byteCount) bytes of base64")
        }
        let repositoryKind: EncryptionError.KeyKind
        switch parameters.kdf.name {
        case scryptName:
            guard let n = parameters.kdf.n, let r = parameters.kdf.r, let p = parameters.kdf.p,
                  ScryptCost(n: n, r: r, p: p).isAcceptable else {
                let cost = "N=\(parameters.kdf.n ?? 0) r=\(parameters.kdf.r ?? 0) p=\(parameters.kdf.p ?? 0)"
                throw .unsupportedParameters(reason: "scrypt cost \(cost) is outside the accepted bounds")
            }
            repositoryKind = .passphrase
        case rawKeyKDFName:
            repositoryKind = .rawKey
        default:
            throw .unsupportedParameters(reason: "key derivation function \(parameters.kdf.name)")
        }
        guard repositoryKind == keyFile.kind else {
            throw .keyKindMismatch(repositoryUses: repositoryKind, keyFileHolds: keyFile.kind)
        }
        let master = try deriveMasterKey(keyFile.material, kdf: parameters.kdf, salt: Array(salt))
        let key = keyCheckKey(master: master)
        guard HMAC<SHA256>.isValidAuthenticationCode(check, authenticating: Data(parameters.canonical.utf8), using: key) else {
            throw .wrongKey
        }
        return RepositoryEncryption(masterKey: master, segmentSize: parameters.segmentSize)
    }

    /// The encryption of an existing repository whose marker holds `parameters` (nil: the
    /// repository is not encrypted), given the key file the user named (nil: none). Nil when
    /// neither is present. A key for a plain repository, or no key for an encrypted one, is an
    /// error: the marker alone never switches encryption off.
    public static func forExistingRepository(keyFile: EncryptionKeyFile?, parameters: Parameters?) throws(EncryptionError) -> RepositoryEncryption? {
        switch (keyFile, parameters) {
        case (nil, nil): return nil
        case (nil, .some): throw .keyRequired
        case (.some, nil): throw .repositoryNotEncrypted
        case let (.some(keyFile), .some(parameters)): return try open(keyFile: keyFile, parameters: parameters)
        }
    }

    static func deriveMasterKey(_ material: EncryptionKeyFile.Material, kdf: Parameters.KDF, salt: [UInt8]) throws(EncryptionError) -> SymmetricKey {
        switch material {
        case .rawKey(let key):
            // A raw key is already uniformly random; HKDF with the repository's salt only makes
            // two repositories sharing one key file use unrelated master keys.
            return HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: salt, info: Data("tsbackup/v1/master".utf8), outputByteCount: 32)
        case .passphrase(let passphrase):
            guard let n = kdf.n, let r = kdf.r, let p = kdf.p else { throw .corruptParameters(reason: "scrypt costs are missing") }
            do {
                return try KDF.Scrypt.deriveKey(from: passphrase, salt: salt, outputByteCount: 32, rounds: n, blockSize: r, parallelism: p)
            } catch {
                throw .keyDerivationFailed
            }
        }
    }

    static func keyCheckKey(master: SymmetricKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: master, info: Data("tsbackup/v1/key-check".utf8), outputByteCount: 32)
    }

    static func keyCheck(master: SymmetricKey, parameters: Parameters) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Data(parameters.canonical.utf8), using: keyCheckKey(master: master)))
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        // BoringSSL's RAND_bytes, through a fresh random key.
        precondition(count == 32)
        return SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    // MARK: - Objects

    /// Bytes of the encryption of a `plaintextSize`-byte object: header, plaintext and one 16-byte
    /// tag per segment (at least one).
    public func encryptedSize(plaintextSize: Int64) -> Int64 {
        ObjectFormat.Geometry(segmentSize: segmentSize, plaintextSize: plaintextSize).ciphertextSize
    }

    /// Bytes of an object's header, which `makeDecryptor` needs first.
    public static let headerSize = ObjectFormat.headerSize

    /// Encrypts a small object held in memory (manifest, roles.sql, definitions) stored as `name`.
    public func encrypt(_ data: Data, name: String) throws(EncryptionError) -> Data {
        let encryptor = makeEncryptor(name: name, plaintextSize: Int64(data.count))
        let all = 0..<encryptor.ciphertextSize
        return try encryptor.assemble(range: all, segments: 0..<encryptor.geometry.segmentCount,
                                      plainRange: 0..<Int64(data.count), plaintext: data)
    }

    /// Decrypts and authenticates a whole object held in memory, stored as `name`.
    public func decrypt(_ data: Data, name: String) throws(EncryptionError) -> Data {
        let decryptor = try makeDecryptor(name: name, header: data.prefix(ObjectFormat.headerSize), ciphertextSize: Int64(data.count))
        return try decryptor.plaintext(ciphertextOffset: 0, data)
    }

    /// An encryptor for one object of `plaintextSize` bytes stored as `name`, with a fresh random
    /// salt: every range it produces belongs to the same ciphertext.
    public func makeEncryptor(name: String, plaintextSize: Int64) -> ObjectEncryptor {
        let salt = Self.randomBytes(ObjectFormat.saltSize)
        let header = ObjectFormat.makeHeader(segmentSize: segmentSize, salt: salt)
        let cipher = SegmentCipher(master: masterKey, name: name, header: header,
                                   parsed: .init(segmentSize: segmentSize, salt: salt))
        return ObjectEncryptor(cipher: cipher, geometry: .init(segmentSize: segmentSize, plaintextSize: plaintextSize))
    }

    /// A decryptor for the object stored as `name` whose encryption is `ciphertextSize` bytes and
    /// starts with `header` (at least the first `headerSize` bytes; more are ignored).
    public func makeDecryptor(name: String, header: Data, ciphertextSize: Int64) throws(EncryptionError) -> ObjectDecryptor {
        let parsed = try ObjectFormat.parseHeader(header, name: name)
        guard let geometry = ObjectFormat.Geometry(segmentSize: parsed.segmentSize, ciphertextSize: ciphertextSize) else {
            throw .objectRejected(name: name, problem: .truncated)
        }
        let cipher = SegmentCipher(master: masterKey, name: name, header: Data(header.prefix(ObjectFormat.headerSize)), parsed: parsed)
        return ObjectDecryptor(cipher: cipher, geometry: geometry)
    }

    /// An encryptor for an object whose size is not known in advance (a stream).
    public func makeStreamEncryptor(name: String) -> StreamEncryptor {
        let salt = Self.randomBytes(ObjectFormat.saltSize)
        let header = ObjectFormat.makeHeader(segmentSize: segmentSize, salt: salt)
        return StreamEncryptor(cipher: SegmentCipher(master: masterKey, name: name, header: header,
                                                     parsed: .init(segmentSize: segmentSize, salt: salt)))
    }

    /// A decryptor fed an object's encryption from its first byte, in pieces of any size.
    public func makeStreamDecryptor(name: String) -> StreamDecryptor {
        StreamDecryptor(masterKey: masterKey, name: name)
    }
}

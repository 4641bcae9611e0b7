import Crypto
import Foundation

/// The repository's marker file, `tsbackup-repository.json`: its format and, for an encrypted
/// repository, the encryption parameters (none of them secret) that turn the right key file into
/// the key and tell a wrong key from a damaged marker.
struct RepositoryMarker: Codable, Sendable {
    static let name = "tsbackup-repository.json"

    var formatVersion: Int
    var kind: String
    var layout: String
    var encryption: RepositoryEncryption.Parameters?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case kind, layout, encryption
    }

    init(encryption: RepositoryEncryption.Parameters?) {
        formatVersion = 1
        kind = "tsbackup-repository"
        layout = "backups/<id>/manifest.json"
        self.encryption = encryption
    }

    func encoded() throws -> Data { Data((try JSONOutput.encode(self) + "\n").utf8) }

    static func decode(_ data: Data, location: String) throws -> RepositoryMarker {
        do {
            return try JSONOutput.decode(RepositoryMarker.self, from: data)
        } catch {
            throw TSBackupError(.failed, "The repository marker \(location)/\(name) is damaged (it is not the JSON tsbackup writes), so the repository cannot be opened safely. Restore the file from a copy, or check that --repo names a tsbackup repository.")
        }
    }

    /// A new repository's marker: encrypted when a key file is given.
    static func creating(keyFile: EncryptionKeyFile?) throws -> (RepositoryMarker, RepositoryEncryption?) {
        guard let keyFile else { return (RepositoryMarker(encryption: nil), nil) }
        let (encryption, parameters) = try translatingEncryptionErrors { try RepositoryEncryption.create(keyFile: keyFile) }
        return (RepositoryMarker(encryption: parameters), encryption)
    }

    /// The encryption this marker asks for, opened with the key file: refuses a missing or wrong
    /// key, and a key for a repository that is not encrypted.
    func openEncryption(keyFile: EncryptionKeyFile?, location: String) throws -> RepositoryEncryption? {
        try translatingEncryptionErrors { try RepositoryEncryption.forExistingRepository(keyFile: keyFile, parameters: encryption) }
    }
}

/// Stored bytes and plain bytes: the same in a plain repository, sealed under the repository key
/// (bound to the object's repository key name) in an encrypted one.
struct ObjectCodec: Sendable {
    let encryption: RepositoryEncryption?

    /// The stored form of `data`, the object `name` (its repository key, e.g. `backups/<id>/roles.sql`).
    func seal(_ data: Data, name: String) throws -> Data {
        guard let encryption else { return data }
        return try translatingEncryptionErrors { try encryption.encrypt(data, name: name) }
    }

    /// The plain form of the stored object `name`; a tampered object is refused, naming it.
    func open(_ data: Data, name: String) throws -> Data {
        guard let encryption else { return data }
        return try translatingEncryptionErrors { try encryption.decrypt(data, name: name) }
    }

    /// ``open(_:name:)`` for an archive object (WAL): a damaged or altered object is refused in
    /// words that fit the archive (there is no backup to verify).
    func openArchiveObject(_ data: Data, name: String) throws -> Data {
        guard let encryption else { return data }
        do {
            return try encryption.decrypt(data, name: name)
        } catch let error {
            if case .objectRejected(_, let problem) = error {
                throw TSBackupError(.failed, "The archive object \(name) failed authentication (\(problem.rawValue)): it was damaged, altered, or stored under another name, and was not used.")
            }
            throw error.tsbackupError
        }
    }

    /// ``openArchiveObject(_:name:)`` piece by piece: the stored object `name` fed from its first
    /// byte, its plain bytes handed back as each encrypted segment authenticates.
    func archiveObjectOpener(name: String) -> ArchiveObjectOpener {
        ArchiveObjectOpener(name: name, decryptor: encryption?.makeStreamDecryptor(name: name))
    }

    /// ``seal(_:name:)`` piece by piece: the stored form of the object `name`, whose plain bytes
    /// are fed in order; nil in a plain repository (the pieces are stored as they are).
    func archiveObjectSealer(name: String) -> StreamEncryptor? {
        encryption?.makeStreamEncryptor(name: name)
    }

    /// Encrypts (or copies) a local file into its stored form.
    func sealFile(at source: String, to destination: String, name: String) throws {
        guard let encryption else {
            try? FileManager.default.removeItem(atPath: destination)
            try FileManager.default.copyItem(atPath: source, toPath: destination)
            return
        }
        _ = try translatingEncryptionErrors { try encryption.encryptFile(at: source, to: destination, name: name) }
    }

    /// Decrypts (or copies) a stored file into its plain form; nothing unauthenticated is left.
    func openFile(at source: String, to destination: String, name: String) throws {
        guard let encryption else {
            try? FileManager.default.removeItem(atPath: destination)
            try FileManager.default.copyItem(atPath: source, toPath: destination)
            return
        }
        _ = try translatingEncryptionErrors { try encryption.decryptFile(at: source, to: destination, name: name) }
    }

    /// SHA-256 (hex) and size of the plain content of a stored local file, decrypting in bounded memory.
    func plainHash(ofStoredFile path: String, name: String) throws -> (hex: String, bytes: Int64) {
        guard let encryption else { return try FileSystem.sha256(of: path) }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw FileSystem.ioError("open \(path)") }
        defer { try? handle.close() }
        var decryptor = encryption.makeStreamDecryptor(name: name)
        var hasher = SHA256()
        var total: Int64 = 0
        do {
            while true {
                let chunk = try handle.read(upToCount: 4 << 20) ?? Data()
                let plain = chunk.isEmpty ? try decryptor.finish() : try decryptor.update(chunk)
                hasher.update(data: plain)
                total += Int64(plain.count)
                if chunk.isEmpty { break }
            }
        } catch let error as EncryptionError {
            throw error.tsbackupError
        }
        return (FileSystem.hex(hasher.finalize()), total)
    }
}

/// Opens a stored archive object piece by piece (see ``ObjectCodec/archiveObjectOpener(name:)``),
/// refusing a damaged or altered one in the same words as ``ObjectCodec/openArchiveObject(_:name:)``.
struct ArchiveObjectOpener {
    let name: String
    var decryptor: StreamDecryptor?

    /// Plain bytes of the next stored piece (in a plain repository, the piece itself).
    mutating func update(_ stored: Data) throws -> Data {
        guard decryptor != nil else { return stored }
        do { return try decryptor!.update(stored) } catch { throw translated(error) }
    }

    /// The last plain bytes, once the object is known to end with its final segment.
    mutating func finish() throws -> Data {
        guard decryptor != nil else { return Data() }
        do { return try decryptor!.finish() } catch { throw translated(error) }
    }

    private func translated(_ error: EncryptionError) -> TSBackupError {
        if case .objectRejected(_, let problem) = error {
            return TSBackupError(.failed, "The archive object \(name) failed authentication (\(problem.rawValue)): it was damaged, altered, or stored under another name, and was not used.")
        }
        return error.tsbackupError
    }
}

/// Checks a stored file's plain content as it streams past: decrypts it (in an encrypted
/// repository; each segment authenticated before its bytes are handed on), counts and hashes
/// it, and at the end compares size and SHA-256 with the manifest's.
struct StreamedFileCheck {
    let file: BackupManifest.FileEntry
    let entryID: String
    /// The object's repository name (`backups/<id>/<path>`), bound into its encryption.
    let name: String
    private var decryptor: StreamDecryptor?
    private var hasher = SHA256()
    private var bytes: Int64 = 0

    init(codec: ObjectCodec, file: BackupManifest.FileEntry, entryID: String, name: String) {
        self.file = file
        self.entryID = entryID
        self.name = name
        decryptor = codec.encryption?.makeStreamDecryptor(name: name)
    }

    /// Plain bytes of the next stored piece, after checking they do not run past the manifest's size.
    mutating func update(_ stored: Data) throws -> Data {
        let plain: Data
        if decryptor != nil {
            do { plain = try decryptor!.update(stored) } catch { throw error.tsbackupError }
        } else {
            plain = stored
        }
        try account(plain)
        return plain
    }

    /// The last plain bytes, once the whole file is known to match the manifest.
    mutating func finish() throws -> Data {
        var tail = Data()
        if decryptor != nil {
            do { tail = try decryptor!.finish() } catch { throw error.tsbackupError }
        }
        try account(tail)
        let hex = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard bytes == file.bytes, hex == file.sha256 else {
            throw TSBackupError(.failed, "The file \(file.path) of entry \(entryID) is corrupt or was altered (\(bytes == file.bytes ? "its SHA-256 differs from the manifest's" : "it has \(bytes) bytes, the manifest says \(file.bytes)")). Run `tsbackup verify \(entryID)` and take a new backup (or export).")
        }
        return tail
    }

    private mutating func account(_ plain: Data) throws {
        bytes += Int64(plain.count)
        guard bytes <= file.bytes else {
            throw TSBackupError(.failed, "The file \(file.path) of entry \(entryID) is corrupt or was altered (it is longer than the manifest's \(file.bytes) bytes). Run `tsbackup verify \(entryID)` and take a new backup (or export).")
        }
        hasher.update(data: plain)
    }
}

/// A scratch directory for an entry's plain files (restore, import, verify of encrypted or
/// remote entries): checked for room first, removed by ``MaterializedEntry/remove()``.
enum ScratchSpace {
    /// Where scratch directories go: TSBACKUP_SCRATCH_DIR, else TMPDIR, else /tmp.
    static func base(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let dir = environment["TSBACKUP_SCRATCH_DIR"], !dir.isEmpty { return dir }
        return FileManager.default.temporaryDirectory.path
    }

    /// A new directory with room for `bytes`, or a precondition error saying how much is missing.
    static func make(for bytes: Int64, purpose: String) throws -> String {
        let base = base()
        if let free = FileSystem.freeBytes(at: FileSystem.nearestExistingAncestor(of: base)), free < bytes + (64 << 20) {
            throw TSBackupError(.precondition, "\(purpose) needs \(ByteCount.format(bytes)) of local scratch space in \(base), which has \(ByteCount.format(free)) free. Free space there, or point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem.")
        }
        let directory = base + "/tsbackup-scratch-\(UUID().uuidString)"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw TSBackupError(.failed, "Could not create the scratch directory \(directory): \(error.localizedDescription). Check TSBACKUP_SCRATCH_DIR (or TMPDIR) and its permissions.")
        }
        return directory
    }
}

/// Runs `body`, turning an ``EncryptionError`` into the ``TSBackupError`` it stands for.
func translatingEncryptionErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as EncryptionError {
        throw error.tsbackupError
    }
}

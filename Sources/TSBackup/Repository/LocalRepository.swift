import Foundation

/// A directory of backups.
///
/// ```
/// REPO/
///   tsbackup-repository.json     marks the directory as a repository (format version)
///   lock                         held (flock) by the one process writing; names it
///   backups/
///     20261126T231500Z/          a finished entry: manifest.json is written last
///       manifest.json
///       dump/ or dump.pgdump     the pg_dump archive
///       roles.sql
///     20261126T232000Z.partial/  a run in progress, or one that was killed: never complete
/// ```
///
/// The staging directory of an entry being written IS `backups/<id>.partial`: pg_dump writes
/// straight into the repository, and the rename to `backups/<id>` after the manifest is the commit.
public struct LocalRepository: Repository {
    public static let markerFile = "tsbackup-repository.json"
    static let partialSuffix = ".partial"
    public typealias Entry = RepositoryEntry
    public typealias EntryState = RepositoryEntry.State

    public let root: String
    /// Stored bytes and plain bytes: the same, or sealed under the repository's key.
    let codec: ObjectCodec
    public var backupsDirectory: String { root + "/backups" }
    public var location: String { root }
    public var isEncrypted: Bool { codec.encryption != nil }

    init(root: String, codec: ObjectCodec = ObjectCodec(encryption: nil)) {
        self.root = root
        self.codec = codec
    }

    /// Opens an existing repository, or creates it when `create` is set.
    public static func open(_ path: String, create: Bool) throws -> LocalRepository {
        try open(path, create: create, access: RepositoryAccess(path: path))
    }

    static func open(_ path: String, create: Bool, access: RepositoryAccess) throws -> LocalRepository {
        let root = URL(fileURLWithPath: path).standardizedFileURL.path
        let keyFile = try translatingEncryptionErrors { try EncryptionKeyFile.resolve(option: access.encryptionKeyFile, environment: [:]) }
        let marker = root + "/" + markerFile
        if let data = FileManager.default.contents(atPath: marker) {
            let encryption = try RepositoryMarker.decode(data, location: root).openEncryption(keyFile: keyFile, location: root)
            return LocalRepository(root: root, codec: ObjectCodec(encryption: encryption))
        }
        guard create else {
            throw TSBackupError(.notFound, "\(root) is not a tsbackup repository (it has no \(markerFile)). Check --repo; a repository is created by the first `tsbackup backup --repo DIR` into an empty or new directory.")
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw TSBackupError(.usage, "\(root) is a file, not a directory. Give --repo a directory (it is created if missing).")
            }
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            guard contents.filter({ !$0.hasPrefix(".") && $0 != "lost+found" }).isEmpty else {
                throw TSBackupError(.precondition, "\(root) is not empty and not a tsbackup repository (it has no \(markerFile)). tsbackup never writes its files among others'. Give --repo an empty or new directory.")
            }
        }
        // Encrypted or not is decided here, by the first write, and recorded in the marker.
        let (description, encryption) = try RepositoryMarker.creating(keyFile: keyFile)
        do {
            try FileManager.default.createDirectory(atPath: root + "/backups", withIntermediateDirectories: true)
        } catch {
            throw TSBackupError(.failed, "Could not create the repository directory \(root): \(error.localizedDescription). Check the path and its permissions.")
        }
        try FileSystem.writeAtomically(try description.encoded(), to: marker)
        return LocalRepository(root: root, codec: ObjectCodec(encryption: encryption))
    }

    // MARK: Reading

    /// Every entry, oldest first (ids sort by time).
    public func entries() -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backupsDirectory)) ?? []
        return names.sorted().compactMap { name -> Entry? in
            guard !name.hasPrefix(".") else { return nil }
            let directory = backupsDirectory + "/" + name
            if name.hasSuffix(Self.partialSuffix) {
                return Entry(id: String(name.dropLast(Self.partialSuffix.count)), state: .incomplete, location: directory)
            }
            return readEntry(id: name, directory: directory)
        }
    }

    /// The entry in `directory`, from its manifest (incomplete without a readable one).
    func readEntry(id: String, directory: String) -> Entry {
        guard let stored = FileManager.default.contents(atPath: directory + "/manifest.json") else {
            return Entry(id: id, state: .incomplete, location: directory)
        }
        do {
            return .decoding(id: id, manifest: try codec.open(stored, name: objectName(id, "manifest.json")), location: directory)
        } catch {
            var entry = Entry(id: id, state: .incomplete, location: directory)
            entry.problem = (error as? TSBackupError)?.message ?? "\(error)"
            return entry
        }
    }

    /// One directory listing and one `stat` of each manifest. The manifest is always written
    /// to a new file and renamed into place (and entries appear and go by renames), so inode,
    /// size and change time tell a replaced manifest from the one read before.
    public func listing() async throws -> [ListedEntry]? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backupsDirectory)) ?? []
        return names.sorted().compactMap { name -> ListedEntry? in
            guard !name.hasPrefix(".") else { return nil }
            let directory = backupsDirectory + "/" + name
            if name.hasSuffix(Self.partialSuffix) {
                return ListedEntry(id: String(name.dropLast(Self.partialSuffix.count)), location: directory, fingerprint: nil, staging: true)
            }
            var info = stat()
            guard stat(directory + "/manifest.json", &info) == 0 else {
                return ListedEntry(id: name, location: directory, fingerprint: nil)
            }
            let fingerprint = "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
            return ListedEntry(id: name, location: directory, fingerprint: fingerprint)
        }
    }

    public func entry(listed: ListedEntry) async throws -> RepositoryEntry {
        if listed.staging { return Entry(id: listed.id, state: .incomplete, location: listed.location) }
        return readEntry(id: listed.id, directory: listed.location)
    }

    /// The repository-relative name of an entry's file: what its encryption is bound to.
    func objectName(_ id: String, _ path: String) -> String { "backups/\(id)/\(path)" }

    public func storedBytes(of entry: RepositoryEntry) async -> Int64 {
        FileSystem.size(of: entry.location)
    }

    public func readFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry) async throws -> Data {
        let path = entry.location + "/" + (try EntryPath.confined(file.path, entry: entry.id))
        guard let stored = FileManager.default.contents(atPath: path) else {
            throw TSBackupError(.failed, "Entry \(entry.id) lacks its file \(file.path). Run `tsbackup verify \(entry.id)`; take a new backup.")
        }
        let data = try codec.open(stored, name: objectName(entry.id, file.path))
        guard Int64(data.count) == file.bytes, FileSystem.sha256(of: data) == file.sha256 else {
            throw TSBackupError(.failed, "The file \(file.path) of entry \(entry.id) is corrupt or was altered (its SHA-256 differs from the manifest's); it was not used. Run `tsbackup verify \(entry.id)` and take a new backup.")
        }
        return data
    }

    public func materialize(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> MaterializedEntry {
        try EntryPath.confine(files, entry: entry.id)
        guard isEncrypted else { return MaterializedEntry(directory: entry.location, isScratch: false) }
        // Child tools read plain files: decrypt (and authenticate) into a scratch directory.
        let directory = try ScratchSpace.make(for: files.reduce(0) { $0 + $1.bytes }, purpose: "Decrypting entry \(entry.id)")
        let local = MaterializedEntry(directory: directory, isScratch: true)
        do {
            let codec = codec
            _ = try await Concurrently.map(files, limit: max(1, ProcessInfo.processInfo.activeProcessorCount)) { file in
                let destination = directory + "/" + file.path
                try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                let source = entry.location + "/" + file.path
                guard FileManager.default.fileExists(atPath: source) else {
                    throw TSBackupError(.failed, "Entry \(entry.id) lacks its file \(file.path). Run `tsbackup verify \(entry.id)`; take a new backup.")
                }
                try codec.openFile(at: source, to: destination, name: "backups/\(entry.id)/\(file.path)")
            }
        } catch {
            local.remove()
            throw error
        }
        return local
    }

    public var readsInPlace: Bool { !isEncrypted }

    public func streamFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry, readAhead: Int,
                           to consume: @Sendable (Data) async throws -> Void) async throws {
        let path = entry.location + "/" + (try EntryPath.confined(file.path, entry: entry.id))
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw TSBackupError(.failed, "Entry \(entry.id) lacks its file \(file.path). Run `tsbackup verify \(entry.id)`; take a new backup.")
        }
        defer { try? handle.close() }
        var check = StreamedFileCheck(codec: codec, file: file, entryID: entry.id, name: objectName(entry.id, file.path))
        while true {
            let stored: Data
            do {
                stored = try handle.read(upToCount: 4 << 20) ?? Data()
            } catch {
                throw FileSystem.ioError("read \(path)")
            }
            if stored.isEmpty { break }
            let plain = try check.update(stored)
            if !plain.isEmpty { try await consume(plain) }
        }
        let tail = try check.finish()
        if !tail.isEmpty { try await consume(tail) }
    }

    public func verifyFiles(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> (problems: [String], bytes: Int64) {
        try EntryPath.confine(files, entry: entry.id)
        guard isEncrypted else { return try Verify.checkFiles(files, directory: entry.location) }
        var problems: [String] = []
        var bytes: Int64 = 0
        for file in files {
            let path = entry.location + "/" + file.path
            guard FileManager.default.fileExists(atPath: path) else {
                problems.append("missing file \(file.path)")
                continue
            }
            do {
                let (hex, size) = try codec.plainHash(ofStoredFile: path, name: objectName(entry.id, file.path))
                bytes += size
                if size != file.bytes {
                    problems.append("\(file.path) has \(size) bytes, the manifest says \(file.bytes)")
                } else if hex != file.sha256 {
                    problems.append("\(file.path) is corrupt: its SHA-256 differs from the manifest's")
                }
            } catch let error as TSBackupError {
                problems.append("\(file.path) is corrupt: \(error.message)")
            }
        }
        let listed = Set(files.map(\.path))
        for file in try FileSystem.regularFiles(under: entry.location) where file != "manifest.json" && !listed.contains(file) {
            problems.append("unexpected file \(file), not in the manifest")
        }
        return (problems, bytes)
    }

    // MARK: Writing (callers hold the repository lock)

    public func lock(command: String) async throws -> any RepositoryLease {
        try RepositoryLock.acquire(self, command: command)
    }

    public func newID(now: Date) -> String {
        let taken = Set(((try? FileManager.default.contentsOfDirectory(atPath: backupsDirectory)) ?? []).map {
            $0.hasSuffix(Self.partialSuffix) ? String($0.dropLast(Self.partialSuffix.count)) : $0
        })
        return Self.uniqueID(Self.baseID(now), taken: taken)
    }

    /// Creates the staging directory `backups/<id>.partial`.
    public func beginEntry(_ id: String) throws -> StagedEntry {
        let staging = backupsDirectory + "/" + id + Self.partialSuffix
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        } catch {
            throw TSBackupError(.failed, "Could not create \(staging): \(error.localizedDescription). Check permissions and free space of the repository.")
        }
        return StagedEntry(id: id, directory: staging)
    }

    /// Makes a staged entry final: every file fsynced, the manifest written last and atomically,
    /// then the directory renamed from `<id>.partial` to `<id>`.
    @discardableResult
    public func commitEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async throws -> Manifest {
        if isEncrypted {
            // Each staged file is replaced by its encryption, bound to its name in the repository.
            let codec = codec
            let files = try FileSystem.regularFiles(under: staged.directory)
            _ = try await Concurrently.map(files, limit: max(1, ProcessInfo.processInfo.activeProcessorCount)) { file in
                let path = staged.directory + "/" + file
                try codec.sealFile(at: path, to: path + ".sealing", name: "backups/\(staged.id)/\(file)")
                guard Foundation.rename(path + ".sealing", path) == 0 else { throw FileSystem.ioError("rename \(path).sealing") }
            }
        }
        try FileSystem.syncTree(staged.directory)
        let json = try ManifestChecksum.stored(manifest)
        try FileSystem.writeAtomically(try codec.seal(json, name: objectName(manifest.id, "manifest.json")), to: staged.directory + "/manifest.json")
        try FileSystem.rename(staged.directory, to: backupsDirectory + "/" + manifest.id)
        return manifest
    }

    /// Written into the staging directory as it comes (fsynced at the end); sealed at commit in
    /// an encrypted repository, as every staged file is.
    public func writeStreamedFile(_ staged: StagedEntry, path: String, expectedBytes: Int64,
                                  _ produce: (_ write: @escaping @Sendable (Data) async throws -> Void) async throws -> Void) async throws -> StreamedFile {
        let relative = try EntryPath.confined(path, entry: staged.id)
        let file = staged.directory + "/" + relative
        try? FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: file) else {
            throw FileSystem.ioError("create \(file)")
        }
        let writer = LockedFileWriter(handle: handle, path: file)
        let digest = StreamDigest()
        do {
            try await produce { data in
                digest.update(data)
                try writer.write(data)
            }
            try writer.sync()
            writer.close()
        } catch {
            writer.close()
            try? FileManager.default.removeItem(atPath: file)
            throw error
        }
        return digest.result()
    }

    public func checkSpace(forStreaming bytes: Int64) throws {
        try checkSpace(forWriting: bytes)
    }

    public func failEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: staged.directory)) ?? [] {
            try? FileManager.default.removeItem(atPath: staged.directory + "/" + name)
        }
        guard let json = try? ManifestChecksum.stored(manifest),
              let sealed = try? codec.seal(json, name: objectName(manifest.id, "manifest.json")) else { return }
        if (try? FileSystem.writeAtomically(sealed, to: staged.directory + "/manifest.json")) != nil {
            try? FileSystem.rename(staged.directory, to: backupsDirectory + "/" + manifest.id)
        }
    }

    public func deleteEntry(_ entry: RepositoryEntry) async throws {
        // Rename first so a crash half-way leaves an incomplete entry, never a damaged "complete" one.
        let doomed = backupsDirectory + "/." + entry.id + ".deleting"
        try FileSystem.rename(entry.location, to: doomed)
        do {
            try FileManager.default.removeItem(atPath: doomed)
        } catch {
            throw TSBackupError(.failed, "Backup \(entry.id) was withdrawn but its files could not all be removed from \(doomed): \(error.localizedDescription). Remove that directory by hand.")
        }
    }

    /// Removes `.partial` directories left by runs that died, and deletions a crash interrupted.
    public func removeInterruptedEntries() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backupsDirectory)) ?? []
        for name in names where name.hasPrefix(".") && name.hasSuffix(".deleting") {
            try? FileManager.default.removeItem(atPath: backupsDirectory + "/" + name)
        }
        return entries().filter { $0.state == .incomplete && $0.location.hasSuffix(Self.partialSuffix) }.map { entry in
            try? FileManager.default.removeItem(atPath: entry.location)
            return entry.id
        }
    }

    public func checkSpace(forWriting bytes: Int64) throws {
        try Self.checkSpace(at: root, forWriting: bytes)
    }

    /// Checked before the repository exists, so a refused run creates nothing.
    static func checkSpace(at root: String, forWriting bytes: Int64) throws {
        if let free = FileSystem.freeBytes(at: FileSystem.nearestExistingAncestor(of: root)), free < bytes {
            throw TSBackupError(.precondition, "The repository \(root) has \(ByteCount.format(free)) free, less than the database's \(ByteCount.format(bytes)) that a backup may need. Free space there or choose a repository on a larger filesystem.")
        }
    }
}

import Foundation

/// What every kind of repository entry's manifest has: the commit-record fields.
public protocol EntryManifest: Codable, Sendable {
    var id: String { get }
    var status: BackupManifest.Status { get set }
    var error: String? { get set }
    var startedAt: Date { get }
    var finishedAt: Date { get set }
    var durationSeconds: Double { get set }
}

extension EntryManifest {
    /// Closes the run: its outcome and when it ended.
    public mutating func markFinished(_ status: BackupManifest.Status, error: String? = nil) {
        self.status = status
        self.error = error
        finishedAt = Date()
        durationSeconds = finishedAt.timeIntervalSince(startedAt)
    }
}

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
    public var backupsDirectory: String { root + "/backups" }
    public var location: String { root }
    public var isEncrypted: Bool { false }

    /// Opens an existing repository, or creates it when `create` is set.
    public static func open(_ path: String, create: Bool) throws -> LocalRepository {
        try open(path, create: create, access: RepositoryAccess(path: path))
    }

    static func open(_ path: String, create: Bool, access: RepositoryAccess) throws -> LocalRepository {
        let root = URL(fileURLWithPath: path).standardizedFileURL.path
        let repository = LocalRepository(root: root)
        let marker = root + "/" + markerFile
        if FileManager.default.fileExists(atPath: marker) {
            return repository
        }
        guard create else {
            throw TSBackupError(.notFound, "\(root) is not a tsbackup repository (it has no \(markerFile)). Check --repo; a repository is created by the first `tsbackup backup --repo DIR`.")
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw TSBackupError(.usage, "\(root) is a file, not a directory. Give --repo a directory (it is created if missing).")
            }
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            guard contents.filter({ !$0.hasPrefix(".") && $0 != "lost+found" }).isEmpty else {
                throw TSBackupError(.usage, "\(root) is not empty and not a tsbackup repository. Give --repo an empty or new directory, so tsbackup never mixes its files with others.")
            }
        }
        do {
            try FileManager.default.createDirectory(atPath: root + "/backups", withIntermediateDirectories: true)
        } catch {
            throw TSBackupError(.failed, "Could not create the repository directory \(root): \(error.localizedDescription). Check the path and its permissions.")
        }
        let description = #"{"format_version": 1, "kind": "tsbackup-repository", "layout": "backups/<id>/manifest.json"}"# + "\n"
        try FileSystem.writeAtomically(Data(description.utf8), to: marker)
        return repository
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
            return .decoding(id: name, manifest: FileManager.default.contents(atPath: directory + "/manifest.json"), location: directory)
        }
    }

    public func storedBytes(of entry: RepositoryEntry) async -> Int64 {
        FileSystem.size(of: entry.location)
    }

    public func readFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry) async throws -> Data {
        let path = entry.location + "/" + (try EntryPath.confined(file.path, entry: entry.id))
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TSBackupError(.failed, "Entry \(entry.id) lacks its file \(file.path). Run `tsbackup verify \(entry.id)`; take a new backup.")
        }
        guard Int64(data.count) == file.bytes, FileSystem.sha256(of: data) == file.sha256 else {
            throw TSBackupError(.failed, "The file \(file.path) of entry \(entry.id) is corrupt or was altered (its SHA-256 differs from the manifest's); it was not used. Run `tsbackup verify \(entry.id)` and take a new backup.")
        }
        return data
    }

    public func materialize(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> MaterializedEntry {
        try EntryPath.confine(files, entry: entry.id)
        return MaterializedEntry(directory: entry.location, isScratch: false)
    }

    public func verifyFiles(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> (problems: [String], bytes: Int64) {
        try EntryPath.confine(files, entry: entry.id)
        return try Verify.checkFiles(files, directory: entry.location)
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
    public func commitEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async throws {
        try FileSystem.syncTree(staged.directory)
        try FileSystem.writeAtomically(Data((try JSONOutput.encode(manifest) + "\n").utf8), to: staged.directory + "/manifest.json")
        try FileSystem.rename(staged.directory, to: backupsDirectory + "/" + manifest.id)
    }

    public func failEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: staged.directory)) ?? [] {
            try? FileManager.default.removeItem(atPath: staged.directory + "/" + name)
        }
        guard let json = try? JSONOutput.encode(manifest) else { return }
        if (try? FileSystem.writeAtomically(Data(json.utf8), to: staged.directory + "/manifest.json")) != nil {
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

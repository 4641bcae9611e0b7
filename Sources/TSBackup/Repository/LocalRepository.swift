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
public struct LocalRepository: Sendable {
    public static let markerFile = "tsbackup-repository.json"
    static let partialSuffix = ".partial"

    public let root: String
    public var backupsDirectory: String { root + "/backups" }

    public enum EntryState: String, Sendable, Codable {
        case complete, failed
        /// A `.partial` directory: a run is writing it, or one was interrupted.
        case incomplete
    }

    public struct Entry: Sendable {
        public var id: String
        public var directory: String
        public var state: EntryState
        /// The manifest of a database backup (`"kind": "database"`).
        public var manifest: BackupManifest?
        /// The manifest of a single-hypertable export (`"kind": "hypertable"`).
        public var hypertable: HypertableManifest?

        public var kind: String? { manifest?.kind ?? hypertable?.kind }
        public var error: String? { manifest?.error ?? hypertable?.error }
    }

    /// Read before the whole manifest, to pick the type that decodes it.
    private struct ManifestKind: Decodable {
        var kind: String?
    }

    /// Opens an existing repository, or creates it when `create` is set.
    public static func open(_ path: String, create: Bool) throws -> LocalRepository {
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
                return Entry(id: String(name.dropLast(Self.partialSuffix.count)), directory: directory, state: .incomplete, manifest: nil)
            }
            let data = FileManager.default.contents(atPath: directory + "/manifest.json")
            if let data, (try? JSONOutput.decode(ManifestKind.self, from: data))?.kind == HypertableManifest.kind {
                guard let export = try? JSONOutput.decode(HypertableManifest.self, from: data) else {
                    return Entry(id: name, directory: directory, state: .incomplete, manifest: nil)
                }
                return Entry(id: name, directory: directory, state: export.status == .complete ? .complete : .failed, hypertable: export)
            }
            guard let data, let manifest = try? JSONOutput.decode(BackupManifest.self, from: data) else {
                // A finished directory must hold a readable manifest; without one it is not a backup.
                return Entry(id: name, directory: directory, state: .incomplete, manifest: nil)
            }
            return Entry(id: name, directory: directory, state: manifest.status == .complete ? .complete : .failed, manifest: manifest)
        }
    }

    /// The entry with this id; a clear error listing what exists otherwise.
    public func entry(_ id: String) throws -> Entry {
        let all = entries()
        if let found = all.first(where: { $0.id == id }) { return found }
        let known = all.suffix(5).map(\.id)
        let hint = known.isEmpty ? "The repository holds no backups yet." : "Recent ids: \(known.joined(separator: ", ")). `tsbackup list --repo \(root)` shows them all."
        throw TSBackupError(.notFound, "No backup with id \"\(id)\" in \(root). \(hint)")
    }

    /// The manifest of a complete entry.
    public func completeManifest(_ id: String) throws -> (Entry, BackupManifest) {
        let entry = try entry(id)
        if entry.hypertable != nil {
            throw TSBackupError(.usage, "Entry \(id) is a single-hypertable export, not a database backup. Use `tsbackup import-hypertable \(id)` with it.")
        }
        guard entry.state == .complete, let manifest = entry.manifest else {
            throw TSBackupError(.precondition, "Backup \(id) is \(entry.state.rawValue)\(entry.manifest?.error.map { " (\($0))" } ?? ""), not complete, so it cannot be used. Take a new backup; delete this one with `tsbackup delete \(id) --repo \(root) --yes`.")
        }
        return (entry, manifest)
    }

    /// The manifest of a complete single-hypertable export.
    public func completeHypertableManifest(_ id: String) throws -> (Entry, HypertableManifest) {
        let entry = try entry(id)
        if entry.manifest != nil {
            throw TSBackupError(.usage, "Entry \(id) is a database backup, not a single-hypertable export; import-hypertable reads entries written by `tsbackup export-hypertable`.")
        }
        guard entry.state == .complete, let manifest = entry.hypertable else {
            throw TSBackupError(.precondition, "Export \(id) is \(entry.state.rawValue)\(entry.error.map { " (\($0))" } ?? ""), not complete, so it cannot be imported. Export the hypertable again; delete this entry with `tsbackup delete \(id) --repo \(root) --yes`.")
        }
        return (entry, manifest)
    }

    // MARK: Writing (callers hold the repository lock)

    /// A new, unique, time-sortable id, e.g. 20261126T231500Z (with -2, -3... within one second).
    public func newID(now: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let base = formatter.string(from: now)
        let taken = Set(((try? FileManager.default.contentsOfDirectory(atPath: backupsDirectory)) ?? []).map {
            $0.hasSuffix(Self.partialSuffix) ? String($0.dropLast(Self.partialSuffix.count)) : $0
        })
        var id = base
        var n = 2
        while taken.contains(id) {
            id = "\(base)-\(n)"
            n += 1
        }
        return id
    }

    /// Creates the staging directory `backups/<id>.partial`.
    public func beginEntry(_ id: String) throws -> String {
        let staging = backupsDirectory + "/" + id + Self.partialSuffix
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        } catch {
            throw TSBackupError(.failed, "Could not create \(staging): \(error.localizedDescription). Check permissions and free space of the repository.")
        }
        return staging
    }

    /// Makes a staged entry final: every file fsynced, the manifest written last and atomically,
    /// then the directory renamed from `<id>.partial` to `<id>`.
    public func commitEntry<Manifest: EntryManifest>(staging: String, manifest: Manifest) throws {
        try FileSystem.syncTree(staging)
        try FileSystem.writeAtomically(Data((try JSONOutput.encode(manifest) + "\n").utf8), to: staging + "/manifest.json")
        try FileSystem.rename(staging, to: backupsDirectory + "/" + manifest.id)
    }

    /// Records a failed run: its data is removed, its manifest says why.
    public func failEntry<Manifest: EntryManifest>(staging: String, manifest: Manifest) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: staging)) ?? [] {
            try? FileManager.default.removeItem(atPath: staging + "/" + name)
        }
        guard let json = try? JSONOutput.encode(manifest) else { return }
        if (try? FileSystem.writeAtomically(Data(json.utf8), to: staging + "/manifest.json")) != nil {
            try? FileSystem.rename(staging, to: backupsDirectory + "/" + manifest.id)
        }
    }

    public func deleteEntry(_ entry: Entry) throws {
        // Rename first so a crash half-way leaves an incomplete entry, never a damaged "complete" one.
        let doomed = backupsDirectory + "/." + entry.id + ".deleting"
        try FileSystem.rename(entry.directory, to: doomed)
        do {
            try FileManager.default.removeItem(atPath: doomed)
        } catch {
            throw TSBackupError(.failed, "Backup \(entry.id) was withdrawn but its files could not all be removed from \(doomed): \(error.localizedDescription). Remove that directory by hand.")
        }
    }

    /// Removes `.partial` directories left by runs that died. Only call while holding the lock.
    public func removeInterruptedEntries() -> [String] {
        entries().filter { $0.state == .incomplete && $0.directory.hasSuffix(Self.partialSuffix) }.map { entry in
            try? FileManager.default.removeItem(atPath: entry.directory)
            return entry.id
        }
    }
}

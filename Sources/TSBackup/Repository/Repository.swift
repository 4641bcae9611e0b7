import Foundation

/// Where backups live: the one seam every use case goes through.
///
/// Keys are relative to the repository's root and never built by use cases: an entry's files are
/// named by the paths its manifest records (`dump/toc.dat`, `roles.sql`, `data/00001.copy.zst`),
/// and the implementation decides where they are stored. Entries live in the `backups/`
/// namespace (`backups/<id>/...`); the WAL archive lives in `wal/` (``ArchiveStore``, ``ArchiveLayout``), and other kinds get namespaces of
/// their own beside it, so listing and garbage collection of one never touch another.
///
/// A run writes an entry in four steps: ``beginEntry(_:)`` gives a LOCAL staging directory
/// (child tools such as pg_dump write there), the use case fills it, then ``commitEntry(_:manifest:)``
/// stores every file and the manifest last (or ``failEntry(_:manifest:)`` records why it failed).
/// Reading goes through ``readFile(_:of:)`` for small files (checked against the manifest and, in
/// an encrypted repository, authenticated) and ``materialize(_:files:)`` for files a child tool
/// (pg_restore, psql) reads.
public protocol Repository: ArchiveStore {
    /// How the user names this repository (a path or an `s3://` URL); never holds a secret.
    var location: String { get }
    /// Whether stored files are encrypted (decided when the repository was first written).
    var isEncrypted: Bool { get }

    /// Every entry, oldest first (ids sort by time). An entry without a readable manifest is incomplete.
    func entries() async throws -> [RepositoryEntry]
    /// The entries' names with a fingerprint of each manifest, without reading any manifest
    /// (a directory listing and a stat per entry; an S3 listing with ETags), oldest first: what
    /// ``EntryListingCache`` revalidates against. Nil when the repository cannot say cheaply.
    func listing() async throws -> [ListedEntry]?
    /// The entry a ``listing()`` named, its manifest read and decoded as ``entries()`` would.
    func entry(listed: ListedEntry) async throws -> RepositoryEntry

    /// Takes the repository's lock for a writing run (backup, export, delete, gc).
    func lock(command: String) async throws -> any RepositoryLease

    // MARK: Writing (callers hold the lock)

    /// A new, unique, time-sortable id, e.g. 20261126T231500Z (with -2, -3... within one second).
    func newID(now: Date) async throws -> String
    /// Starts an entry: the local directory its files are written into.
    func beginEntry(_ id: String) async throws -> StagedEntry
    /// Stores every staged file, then the manifest, last: only then is the entry complete.
    /// Returns the manifest as stored: a repository may add warnings of its own (S3 retries).
    @discardableResult
    func commitEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async throws -> Manifest
    /// Records a failed run: its data is removed, its manifest says why.
    func failEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async
    /// Removes an entry; a crash half-way leaves it incomplete, never damaged-but-complete.
    func deleteEntry(_ entry: RepositoryEntry) async throws
    /// Removes what runs that died left behind. Only call while holding the lock.
    func removeInterruptedEntries() async throws -> [String]
    /// Refuses a run whose `bytes` the storage (or its local staging) has no room for.
    func checkSpace(forWriting bytes: Int64) async throws

    // MARK: Reading

    /// Bytes the entry occupies in storage.
    func storedBytes(of entry: RepositoryEntry) async -> Int64
    /// A small file of an entry, checked against the manifest's size and SHA-256 and, in an
    /// encrypted repository, authenticated: a tampered file is refused, naming it.
    func readFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry) async throws -> Data
    /// `files` of an entry as plain local files, for child tools. In a local, unencrypted
    /// repository that is the entry's own directory (no copy); otherwise a scratch directory
    /// (its free space checked first) that ``MaterializedEntry/remove()`` deletes.
    func materialize(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> MaterializedEntry
    /// Whether ``materialize(_:files:)`` hands out the entry's own files (a local, unencrypted
    /// repository) rather than a copy; readers that can stream use ``streamFile(_:of:to:)`` otherwise.
    var readsInPlace: Bool { get }
    /// The plain content of one file, in order, in pieces of a few MiB (memory stays bounded
    /// whatever the file's size): downloaded and, in an encrypted repository, authenticated
    /// segment by segment. Its size and SHA-256 are checked against the manifest as it streams;
    /// a missing, altered or cut-short file throws, naming it, after `consume` may have seen
    /// some of it. So everything consumed is unconfirmed until this returns: the caller must be
    /// able to undo it (import-hypertable drops the table it was loading).
    func streamFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry,
                    to consume: @Sendable (Data) async throws -> Void) async throws
    /// Re-reads every stored file of the entry against `files` (size and SHA-256 of the plain
    /// content); each problem names the file. Stored files the manifest does not list are problems too.
    func verifyFiles(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> (problems: [String], bytes: Int64)

    /// Releases connections; the repository is not used afterwards.
    func close() async
}

/// Held by one writing run; ``release()`` gives it up.
public protocol RepositoryLease: Sendable {
    /// What the lock said when taken over from a holder that died (or whose lease expired).
    var staleHolder: String? { get }
    func release() async
}

/// One entry of a repository: a database backup or a hypertable export, or an unfinished run.
public struct RepositoryEntry: Sendable {
    public enum State: String, Sendable, Codable {
        case complete, failed
        /// No readable manifest: a run is writing it, or one was interrupted.
        case incomplete
    }

    public var id: String
    public var state: State
    /// The manifest of a database backup (`"kind": "database"`).
    public var manifest: BackupManifest?
    /// The manifest of a single-hypertable export (`"kind": "hypertable"`).
    public var hypertable: HypertableManifest?
    /// The manifest of a physical base backup (`"kind": "base"`).
    public var base: BaseBackupManifest?
    /// Where the implementation keeps the entry (a directory, a key prefix); for its own use.
    public var location: String
    /// Why a stored manifest could not be used (it failed authentication or does not decode):
    /// such an entry is never complete, and every command that needs it says this.
    public var problem: String?
    /// The manifest was written before manifests carried their own checksum (see
    /// ``ManifestChecksum``): it is read, but nothing vouches for its content; `verify` warns.
    public var manifestUnchecked = false

    public init(id: String, state: State, manifest: BackupManifest? = nil, hypertable: HypertableManifest? = nil, location: String) {
        self.id = id
        self.state = state
        self.manifest = manifest
        self.hypertable = hypertable
        self.location = location
    }

    public var kind: String? { manifest?.kind ?? hypertable?.kind ?? base?.kind }
    public var error: String? { manifest?.error ?? hypertable?.error ?? base?.error }
    /// The files the manifest lists (none without a manifest).
    public var files: [BackupManifest.FileEntry] { manifest?.files ?? hypertable?.files ?? base?.files ?? [] }

    /// Read before the whole manifest, to pick the type that decodes it.
    private struct ManifestKind: Decodable {
        var kind: String?
    }

    /// The entry a stored manifest (decrypted, if the repository is encrypted) describes. A
    /// manifest whose own checksum does not match, or that does not decode, makes a corrupt entry:
    /// never complete, with a ``problem`` naming `manifest.json` that every command reports.
    static func decoding(id: String, manifest stored: Data?, location: String) -> RepositoryEntry {
        guard let stored else { return RepositoryEntry(id: id, state: .incomplete, location: location) }
        func corrupt(_ reason: String) -> RepositoryEntry {
            var entry = RepositoryEntry(id: id, state: .incomplete, location: location)
            entry.problem = "The manifest backups/\(id)/manifest.json is corrupt: \(reason). Nothing in entry \(id) can be trusted, so it is not used; take a new backup, then delete this entry."
            return entry
        }
        let data: Data
        var unchecked = false
        switch ManifestChecksum.open(stored) {
        case .checked(let content):
            data = content
        case .legacy(let content):
            data = content
            unchecked = true
        case .corrupt(let reason):
            return corrupt(reason)
        }
        var entry: RepositoryEntry
        let kind = (try? JSONOutput.decode(ManifestKind.self, from: data))?.kind
        if kind == BaseBackupManifest.kind {
            guard let base = try? JSONOutput.decode(BaseBackupManifest.self, from: data) else {
                return corrupt("it is not a base backup's manifest tsbackup can read")
            }
            guard base.id == id else { return corrupt("it describes entry \(base.id), not \(id)") }
            entry = RepositoryEntry(id: id, state: base.status == .complete ? .complete : .failed, location: location)
            entry.base = base
        } else if kind == HypertableManifest.kind {
            guard let export = try? JSONOutput.decode(HypertableManifest.self, from: data) else {
                return corrupt("it is not a hypertable export's manifest tsbackup can read")
            }
            guard export.id == id else { return corrupt("it describes entry \(export.id), not \(id)") }
            entry = RepositoryEntry(id: id, state: export.status == .complete ? .complete : .failed, hypertable: export, location: location)
        } else {
            // A finished entry must hold a readable manifest of its own id; without one it is not a backup.
            guard let manifest = try? JSONOutput.decode(BackupManifest.self, from: data) else {
                return corrupt("it is not a manifest tsbackup can read (it does not decode)")
            }
            guard manifest.id == id else { return corrupt("it describes entry \(manifest.id), not \(id)") }
            entry = RepositoryEntry(id: id, state: manifest.status == .complete ? .complete : .failed, manifest: manifest, location: location)
        }
        entry.manifestUnchecked = unchecked
        return entry
    }
}

/// An entry being written: its files go into `directory`, a local directory.
public struct StagedEntry: Sendable {
    public var id: String
    /// Where the run writes the entry's files (pg_dump's output, roles.sql, data files).
    public var directory: String

    public init(id: String, directory: String) {
        self.id = id
        self.directory = directory
    }
}

/// An entry's files as plain local files.
public struct MaterializedEntry: Sendable {
    /// The directory holding the files under their manifest paths.
    public var directory: String
    /// Whether `directory` is a scratch copy that ``remove()`` deletes.
    public var isScratch: Bool

    public init(directory: String, isScratch: Bool) {
        self.directory = directory
        self.isScratch = isScratch
    }

    /// Deletes a scratch copy; the entry's own directory is never touched.
    public func remove() {
        guard isScratch else { return }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension Repository {
    public func close() async {}

    /// The entry with this id; a clear error listing what exists otherwise.
    public func entry(_ id: String) async throws -> RepositoryEntry {
        let all = try await entries()
        if let found = all.first(where: { $0.id == id }) { return found }
        let known = all.suffix(5).map(\.id)
        let hint = known.isEmpty ? "The repository holds no backups yet." : "Recent ids: \(known.joined(separator: ", ")). `tsbackup list --repo \(location)` shows them all."
        throw TSBackupError(.notFound, "No backup with id \"\(id)\" in \(location). \(hint)")
    }

    /// The manifest of a complete database backup.
    public func completeManifest(_ id: String) async throws -> (RepositoryEntry, BackupManifest) {
        let entry = try await entry(id)
        if entry.hypertable != nil {
            throw TSBackupError(.usage, "Entry \(id) is a single-hypertable export, not a database backup. Use `tsbackup import-hypertable \(id)` with it.")
        }
        if entry.base != nil {
            throw TSBackupError(.usage, "Entry \(id) is a physical base backup, not a database backup. Use `tsbackup recover --repo \(location) --to-time T --pgdata DIR` to bring back a cluster from it.")
        }
        if let problem = entry.problem { throw TSBackupError(.failed, problem) }
        guard entry.state == .complete, let manifest = entry.manifest else {
            throw TSBackupError(.precondition, "Backup \(id) is \(entry.state.rawValue)\(entry.manifest?.error.map { " (\($0))" } ?? ""), not complete, so it cannot be used. Take a new backup; delete this one with `tsbackup delete \(id) --repo \(location) --yes`.")
        }
        return (entry, manifest)
    }

    /// The manifest of a complete single-hypertable export.
    public func completeHypertableManifest(_ id: String) async throws -> (RepositoryEntry, HypertableManifest) {
        let entry = try await entry(id)
        if entry.manifest != nil || entry.base != nil {
            throw TSBackupError(.usage, "Entry \(id) is a \(entry.base != nil ? "physical base backup" : "database backup"), not a single-hypertable export; import-hypertable reads entries written by `tsbackup export-hypertable`.")
        }
        if let problem = entry.problem { throw TSBackupError(.failed, problem) }
        guard entry.state == .complete, let manifest = entry.hypertable else {
            throw TSBackupError(.precondition, "Export \(id) is \(entry.state.rawValue)\(entry.error.map { " (\($0))" } ?? ""), not complete, so it cannot be imported. Export the hypertable again; delete this entry with `tsbackup delete \(id) --repo \(location) --yes`.")
        }
        return (entry, manifest)
    }

    /// Runs `body` holding the lock; a lease taken over from a dead holder first has that run's
    /// leftovers removed, which the returned warning reports.
    public func withLock<T: Sendable>(command: String, _ body: (_ staleWarning: String?) async throws -> T) async throws -> T {
        let lease = try await lock(command: command)
        do {
            var warning: String?
            if let stale = lease.staleHolder {
                let removed = (try? await removeInterruptedEntries()) ?? []
                warning = "A previous run (\(stale)) ended without releasing the repository\(removed.isEmpty ? "" : "; its unfinished entries \(removed.joined(separator: ", ")) were removed")."
            }
            let result = try await body(warning)
            await lease.release()
            return result
        } catch {
            await lease.release()
            throw error
        }
    }

    public func newID() async throws -> String { try await newID(now: Date()) }

    /// The id format: UTC time to the second.
    static func baseID(_ now: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: now)
    }

    /// `base`, or `base-2`, `base-3`... whichever is not taken.
    static func uniqueID(_ base: String, taken: Set<String>) -> String {
        var id = base
        var n = 2
        while taken.contains(id) {
            id = "\(base)-\(n)"
            n += 1
        }
        return id
    }
}

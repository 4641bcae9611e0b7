import Crypto
import Foundation
import Synchronization

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
    /// Stores the file `path` of a staged entry while `produce` writes it (through `write`,
    /// called in order, one call at a time), hashing its plain content on the way: a file too
    /// large to stage (a base backup's tar) is never held locally in a store that is not local.
    /// A local repository writes it into the staging directory (sealed at commit like every
    /// file); S3 uploads it as a multipart upload as the bytes come (encrypted on the fly with
    /// the same chunked format, in an encrypted repository), a few parts in flight. The file
    /// belongs to the entry like a staged one: it counts only once ``commitEntry(_:manifest:)``
    /// has written the manifest, and ``failEntry(_:manifest:)`` removes it. When `produce` or
    /// the storing fails, whatever was stored of it is removed (an S3 multipart upload aborted)
    /// and the error is rethrown. `expectedBytes` is a generous estimate of its size.
    func writeStreamedFile(_ staged: StagedEntry, path: String, expectedBytes: Int64,
                           _ produce: (_ write: @escaping @Sendable (Data) async throws -> Void) async throws -> Void) async throws -> StreamedFile
    /// Refuses a run whose files of `bytes` in all go through ``writeStreamedFile(_:path:expectedBytes:_:)``
    /// when the storage has no room for them (a local repository); S3 stages nothing for them.
    func checkSpace(forStreaming bytes: Int64) async throws
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
    /// `readAhead`: how many pieces may be fetched ahead of `consume` (parallel ranged GETs on
    /// S3; a local file is read in order whatever it is).
    func streamFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry, readAhead: Int,
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

/// The plain size and SHA-256 of a file stored by ``Repository/writeStreamedFile(_:path:expectedBytes:_:)``.
public struct StreamedFile: Sendable, Equatable {
    public var bytes: Int64
    public var sha256: String

    public init(bytes: Int64, sha256: String) {
        self.bytes = bytes
        self.sha256 = sha256
    }
}

/// Size and SHA-256 of bytes that pass by, shared with a `@Sendable` writer.
final class StreamDigest: Sendable {
    private let state = Mutex((hasher: SHA256(), bytes: Int64(0)))

    func update(_ data: Data) {
        state.withLock { state in
            state.hasher.update(data: data)
            state.bytes += Int64(data.count)
        }
    }

    func result() -> StreamedFile {
        state.withLock { StreamedFile(bytes: $0.bytes, sha256: FileSystem.hex($0.hasher.finalize())) }
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

    /// ``streamFile(_:of:readAhead:to:)`` with three pieces ahead.
    public func streamFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry,
                           to consume: @Sendable (Data) async throws -> Void) async throws {
        try await streamFile(file, of: entry, readAhead: 3, to: consume)
    }

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

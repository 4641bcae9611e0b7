import Foundation

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

import Foundation

/// An object of the WAL archive, named by what it is, never by a path: the repository decides
/// where it lives (``ArchiveLayout``), so use cases never build keys.
public enum ArchiveObject: Sendable, Hashable, CustomStringConvertible {
    /// `wal/archive.json`: which cluster (system identifier) the archive belongs to.
    case walMarker
    /// A file PostgreSQL archives (a segment, `.partial` segment, `.history` or `.backup` file) of
    /// the cluster with `systemIdentifier`.
    case wal(systemIdentifier: UInt64, file: WALFileName)

    public var description: String { ArchiveLayout.name(of: self) }
}

/// Where the namespaces beside `backups/` keep their objects, relative to the repository's root.
///
/// ```
/// wal/archive.json                                    the archive marker (system identifier, segment size)
/// wal/<system identifier>/<timeline, 8 hex>/<file>.zst  one object per archived file
/// ```
///
/// The same relative name is the local path under the repository directory, the S3 key under
/// the repository's prefix, and the name an encrypted object is bound to.
public enum ArchiveLayout {
    public static let walNamespace = "wal"
    static let markerName = "wal/archive.json"
    static let objectSuffix = ".zst"

    /// The repository-relative name of `object`.
    public static func name(of object: ArchiveObject) -> String {
        switch object {
        case .walMarker:
            return markerName
        case .wal(let system, let file):
            return "\(walNamespace)/\(system)/\(WALFileName.hex8(file.timeline))/\(file.name)\(objectSuffix)"
        }
    }

    /// The prefix every object of `scope` starts with.
    static func prefix(of scope: ArchiveScope) -> String {
        switch scope {
        case .cluster(let system): return "\(walNamespace)/\(system)/"
        case .timeline(let system, let timeline): return "\(walNamespace)/\(system)/\(WALFileName.hex8(timeline))/"
        }
    }

    /// The object a relative name stands for; nil for names tsbackup does not write (temporary
    /// files, strangers), which listings skip.
    static func object(named name: String) -> ArchiveObject? {
        if name == markerName { return .walMarker }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == walNamespace, let system = UInt64(parts[1]), String(system) == parts[1],
              parts[3].hasSuffix(objectSuffix),
              let file = WALFileName(String(parts[3].dropLast(objectSuffix.count))),
              WALFileName.hex8(file.timeline) == parts[2] else { return nil }
        return .wal(systemIdentifier: system, file: file)
    }
}

/// Which archive objects a listing covers.
public enum ArchiveScope: Sendable, Hashable {
    /// Every object of one cluster.
    case cluster(systemIdentifier: UInt64)
    /// The objects of one timeline of one cluster.
    case timeline(systemIdentifier: UInt64, timeline: UInt32)
}

/// One stored archive object, as a listing reports it.
public struct ArchiveObjectInfo: Sendable, Hashable {
    public var object: ArchiveObject
    /// Bytes in storage (compressed, and encrypted when the repository is).
    public var storedBytes: Int64

    public init(object: ArchiveObject, storedBytes: Int64) {
        self.object = object
        self.storedBytes = storedBytes
    }
}

/// What a create-only put found.
public enum ArchivePutOutcome: Sendable, Equatable {
    /// The object did not exist and now holds the data.
    case created
    /// An object of that name exists already; nothing was written.
    case exists
}

/// The WAL archive's objects, on any repository: small, whole objects written once.
///
/// Writes are create-only, so two writers never overwrite each other: locally a temporary file is
/// written, fsynced and hard-linked to its name (link fails when the name exists), on S3 a single
/// PutObject with `If-None-Match: *`. No lock is taken: PostgreSQL runs one archive_command at a
/// time per cluster, and different clusters write under different system identifiers.
public protocol ArchiveStore: Sendable {
    /// Stores `data` (encrypted when the repository is, bound to the object's name) unless an
    /// object of that name exists.
    func createArchiveObject(_ object: ArchiveObject, data: Data) async throws -> ArchivePutOutcome
    /// ``createArchiveObject(_:data:)`` for an object given as consecutive pieces: a store that
    /// can writes (and seals) them one by one rather than joining them first.
    func createArchiveObject(_ object: ArchiveObject, pieces: [Data]) async throws -> ArchivePutOutcome
    /// The object's plain content (decrypted and authenticated), or nil when there is none.
    func readArchiveObject(_ object: ArchiveObject) async throws -> Data?
    /// The object's plain content handed to `consume` in pieces, in order (each decrypted and
    /// authenticated before it is handed over; whether the object ended where it should is known
    /// only when this returns). False when there is no such object.
    func readArchiveObject(_ object: ArchiveObject, pieces consume: (Data) throws -> Void) async throws -> Bool
    /// Whether the object exists (no content is read).
    func archiveObjectExists(_ object: ArchiveObject) async throws -> Bool
    /// Every object in `scope`, in name order (S3 listings are followed page by page).
    func listArchiveObjects(_ scope: ArchiveScope) async throws -> [ArchiveObjectInfo]
    /// Deletes objects (in batches on S3); missing ones count as deleted.
    func deleteArchiveObjects(_ objects: [ArchiveObject]) async throws
}

extension ArchiveStore {
    /// Joins the pieces: for stores that send an object in one request anyway (S3's PutObject).
    public func createArchiveObject(_ object: ArchiveObject, pieces: [Data]) async throws -> ArchivePutOutcome {
        var data = Data(capacity: pieces.reduce(0) { $0 + $1.count })
        for piece in pieces { data.append(piece) }
        return try await createArchiveObject(object, data: data)
    }

    /// Hands over the whole object as one piece.
    public func readArchiveObject(_ object: ArchiveObject, pieces consume: (Data) throws -> Void) async throws -> Bool {
        guard let data = try await readArchiveObject(object) else { return false }
        try consume(data)
        return true
    }
}

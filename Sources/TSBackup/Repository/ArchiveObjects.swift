import Foundation

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

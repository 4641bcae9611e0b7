import Foundation

/// `wal/archive.json`: the cluster a repository's WAL archive belongs to. Written by the first
/// wal-push; every later push and fetch reads it, so a second cluster pushing into the same
/// repository is refused instead of mixing its WAL in.
public struct WALArchiveMarker: Codable, Sendable, Equatable {
    public static let kind = "tsbackup-wal-archive"

    public var kind: String
    public var formatVersion: Int
    /// The cluster's system identifier (pg_control, and every segment's long page header), as a
    /// decimal string: JSON readers lose precision on 64-bit integers.
    public var systemIdentifier: String
    /// Bytes per WAL segment (wal_segment_size), from the first segment archived; nil when the
    /// first file archived was not a segment (then 16 MB is assumed until one is).
    public var walSegmentSize: Int64?
    /// XLOG_PAGE_MAGIC of the first segment (0xD110 for PostgreSQL 15), as hex.
    public var walPageMagic: String?
    public var createdAt: Date
    /// The tsbackup version that created the archive.
    public var createdBy: String

    enum CodingKeys: String, CodingKey {
        case kind
        case formatVersion = "format_version"
        case systemIdentifier = "system_identifier"
        case walSegmentSize = "wal_segment_size"
        case walPageMagic = "wal_page_magic"
        case createdAt = "created_at"
        case createdBy = "created_by"
    }

    public init(systemIdentifier: UInt64, walSegmentSize: Int64?, walPageMagic: UInt16?, createdAt: Date = Date()) {
        kind = Self.kind
        formatVersion = 1
        self.systemIdentifier = String(systemIdentifier)
        self.walSegmentSize = walSegmentSize
        self.walPageMagic = walPageMagic.map { String(format: "%04X", $0) }
        self.createdAt = createdAt
        createdBy = "tsbackup \(TSBackupVersion.current)"
    }

    public var system: UInt64? { UInt64(systemIdentifier) }
    /// The archive's segment size: as recorded, else PostgreSQL's default 16 MB.
    public var segmentSize: Int64 { walSegmentSize ?? 16 << 20 }

    func encoded() throws -> Data { Data((try JSONOutput.encode(self) + "\n").utf8) }

    static func decode(_ data: Data, location: String) throws -> WALArchiveMarker {
        guard let marker = try? JSONOutput.decode(WALArchiveMarker.self, from: data), marker.kind == kind, marker.system != nil,
              marker.walSegmentSize.map(WALFileName.isValidSegmentSize) ?? true else {
            throw TSBackupError(.failed, "The WAL archive marker \(location)/\(ArchiveLayout.markerName) is damaged (it is not the JSON tsbackup writes), so tsbackup cannot tell which cluster the archive belongs to and refused. Restore the file from a copy, or check that --repo names the right repository.")
        }
        return marker
    }

    /// The marker of `repository`'s archive, or nil when nothing was archived there yet.
    public static func read(_ repository: any Repository) async throws -> WALArchiveMarker? {
        guard let data = try await repository.readArchiveObject(.walMarker) else { return nil }
        return try decode(data, location: repository.location)
    }

    /// The marker, created for this cluster when the repository has none; refuses a repository
    /// holding another cluster's archive.
    static func claim(_ repository: any Repository, systemIdentifier: UInt64, segmentSize: Int64?, magic: UInt16?) async throws -> WALArchiveMarker {
        var marker = try await read(repository)
        if marker == nil {
            let fresh = WALArchiveMarker(systemIdentifier: systemIdentifier, walSegmentSize: segmentSize, walPageMagic: magic)
            switch try await repository.createArchiveObject(.walMarker, data: try fresh.encoded()) {
            case .created: return fresh
            case .exists: marker = try await read(repository)  // created meanwhile: check against it
            }
        }
        guard let marker else {
            throw TSBackupError(.failed, "The WAL archive marker of \(repository.location) vanished while it was being read. Try again.")
        }
        try marker.check(systemIdentifier: systemIdentifier, location: repository.location)
        return marker
    }

    /// Refuses a cluster other than the archive's.
    func check(systemIdentifier: UInt64, location: String) throws {
        guard systemIdentifier != system else { return }
        throw TSBackupError(.precondition, "The repository \(location) holds the WAL archive of another PostgreSQL cluster (system identifier \(self.systemIdentifier), archived since \(ISO8601DateFormatter().string(from: createdAt))); this cluster's system identifier is \(systemIdentifier), so its WAL was not archived there. Give each cluster a repository (or S3 prefix) of its own: point archive_command's --repo at a new one. A cluster restored from this archive's base backups keeps the old identifier; one made by initdb or pg_upgrade does not.")
    }
}

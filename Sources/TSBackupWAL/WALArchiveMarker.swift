#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
        self.walPageMagic = walPageMagic.map {
            let digits = String($0, radix: 16, uppercase: true)
            return String(repeating: "0", count: 4 - digits.count) + digits
        }
        self.createdAt = createdAt
        createdBy = "tsbackup \(TSBackupVersion.current)"
    }

    public var system: UInt64? { UInt64(systemIdentifier) }
    /// The archive's segment size: as recorded, else PostgreSQL's default 16 MB.
    public var segmentSize: Int64 { walSegmentSize ?? 16 << 20 }

    package func encoded() throws -> Data { Data((try JSONOutput.encode(self) + "\n").utf8) }

    package static func decode(_ data: Data, location: String) throws -> WALArchiveMarker {
        guard let marker = try? JSONOutput.decode(WALArchiveMarker.self, from: data), marker.kind == kind, marker.system != nil,
              marker.walSegmentSize.map(WALFileName.isValidSegmentSize) ?? true else {
            throw TSBackupError(.failed, "The WAL archive marker \(location)/\(ArchiveLayout.markerName) is damaged (it is not the JSON tsbackup writes), so tsbackup cannot tell which cluster the archive belongs to and refused. Restore the file from a copy, or check that --repo names the right repository.")
        }
        return marker
    }

    /// Refuses a cluster other than the archive's.
    package func check(systemIdentifier: UInt64, location: String) throws {
        guard systemIdentifier != system else { return }
        throw TSBackupError(.precondition, "The repository \(location) holds the WAL archive of another PostgreSQL cluster (system identifier \(self.systemIdentifier), archived since \(createdAt.ISO8601Format())); this cluster's system identifier is \(systemIdentifier), so its WAL was not archived there. Give each cluster a repository (or S3 prefix) of its own: point archive_command's --repo at a new one. A cluster restored from this archive's base backups keeps the old identifier; one made by initdb or pg_upgrade does not.")
    }
}

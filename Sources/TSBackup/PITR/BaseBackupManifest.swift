import Foundation

/// What a physical base backup is: the cluster's files as `pg_basebackup` streamed them (a
/// compressed tar with PostgreSQL's own `backup_manifest` inside), and where in the WAL it starts
/// and ends, so `recover` can pick it and replay archived WAL from it.
///
/// Stored as `manifest.json` with `"kind": "base"` in `backups/<id>/`, written last like every
/// entry's manifest. Documented in `docs/pitr.md`.
public struct BaseBackupManifest: EntryManifest, Equatable {
    public static let kind = "base"

    public var formatVersion: Int = 1
    public var kind: String = BaseBackupManifest.kind
    public var id: String
    public var label: String?
    public var status: BackupManifest.Status
    public var error: String?
    public var startedAt: Date
    public var finishedAt: Date
    public var durationSeconds: Double
    public var tsbackupVersion: String

    /// Who was backed up (host, port, user; the database is the one the survey connected to first).
    public var source: BackupManifest.Source
    public var server: ServerInspection.Server
    public var pgBasebackup: PostgresTool
    /// `pg_control_system()`'s system identifier, as decimal text (it does not fit JSON numbers safely).
    public var systemIdentifier: String
    /// The timeline the backup was taken on.
    public var timeline: Int
    /// The first WAL location replay needs (pg_basebackup's "write-ahead log start point").
    public var startLSN: String
    /// Where the backup becomes consistent: recovery must replay at least to here.
    public var stopLSN: String
    /// The WAL segment holding `startLSN` and the one holding `stopLSN`.
    public var startSegment: String
    public var stopSegment: String
    /// When the backup started and when it ended on the server's clock.
    public var startTime: Date
    public var stopTime: Date
    /// "zstd": how the tar files were compressed (client side, by pg_basebackup).
    public var compression: String
    /// The tar archives: `base.tar.zst` for the data directory (PostgreSQL's `backup_manifest`
    /// is inside it, as pg_basebackup puts it when writing to standard output).
    public var archives: [String]
    /// Every database at backup time with its TimescaleDB state, read over normal connections.
    public var databases: [Database]
    public var clusterBytes: Int64
    public var files: [BackupManifest.FileEntry]
    public var warnings: [String]

    public struct Database: Codable, Sendable, Equatable {
        public var name: String
        /// The installed TimescaleDB version, nil without the extension.
        public var timescaledb: String?
        public var catalogVersion: String?
        public var hypertables: [Hypertable]
    }

    public struct Hypertable: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var chunkCount: Int

        enum CodingKeys: String, CodingKey {
            case schema, name
            case chunkCount = "chunk_count"
        }
    }


    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case kind, id, label, status, error
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case durationSeconds = "duration_seconds"
        case tsbackupVersion = "tsbackup_version"
        case source, server
        case pgBasebackup = "pg_basebackup"
        case systemIdentifier = "system_identifier"
        case timeline
        case startLSN = "start_lsn"
        case stopLSN = "stop_lsn"
        case startSegment = "start_segment"
        case stopSegment = "stop_segment"
        case startTime = "start_time"
        case stopTime = "stop_time"
        case compression, archives, databases
        case clusterBytes = "cluster_bytes"
        case files, warnings
    }
}

extension BaseBackupManifest.Database {
    enum CodingKeys: String, CodingKey {
        case name, timescaledb
        case catalogVersion = "catalog_version"
        case hypertables
    }
}

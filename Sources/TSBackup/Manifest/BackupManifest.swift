import Foundation

/// What a backup is: everything needed to judge, restore and verify it without the source.
///
/// Stored as `manifest.json` in the backup's directory, written last (like a commit record).
/// The schema is documented in `docs/manifest.md`.
public struct BackupManifest: EntryManifest, Equatable {
    public static let currentFormatVersion = 1

    public enum Status: String, Codable, Sendable {
        /// Every file is on disk, fsynced and hashed, and the archive's contents were checked.
        case complete
        /// The run failed; `error` says why. Such an entry is never restored.
        case failed
    }

    public enum Format: String, Codable, Sendable, CaseIterable {
        /// `pg_dump -Fd`: one file per table, dumps and restores in parallel.
        case directory
        /// `pg_dump -Fc`: one file.
        case custom
    }

    public var formatVersion: Int = BackupManifest.currentFormatVersion
    /// "database" for a whole-database backup.
    public var kind: String = "database"
    public var id: String
    public var label: String?
    public var status: Status
    public var error: String?
    public var startedAt: Date
    public var finishedAt: Date
    public var durationSeconds: Double
    public var tsbackupVersion: String

    public var source: Source
    public var server: ServerInspection.Server
    public var pgDump: PostgresTool
    public var timescaledb: TimescaleDB?
    public var extensions: [ServerInspection.Extension]
    public var hypertables: [Hypertable]
    public var plainTables: [PlainTable]
    public var jobs: [Job]
    /// Every chunk table ("schema.name"); the archive must hold each one's definition and data.
    public var chunkTables: [String]
    public var databaseBytes: Int64

    public var format: Format
    public var jobsUsed: Int
    /// Content hashes per table were computed in the dump's snapshot.
    public var checksums: Bool
    /// pg_dump's --compress level for the main archive (0 when tsbackup compresses its data
    /// files, ``fileCompression``), nil for pg_dump's default.
    public var compression: Int?
    /// The archive, relative to the backup's directory: a directory (`dump`) or a file (`dump.pgdump`).
    public var archive: String
    /// Roles the database needs, as SQL without passwords, relative to the backup's directory.
    public var rolesFile: String
    /// How the roles were captured: "pg_dumpall" or "catalog query".
    public var rolesSource: String
    public var files: [FileEntry]
    public var warnings: [String]
    public var retries: [Retry]
    /// Set when chunks were dumped in batches past the lock limit (docs/manifest.md).
    public var chunkPath: ChunkPath? = nil
    /// Wall-clock seconds of each phase of the run ("dump", "survey", "archive check", ...), for
    /// seeing where a backup's time goes. Phases that overlap (the survey runs beside pg_dump)
    /// are timed separately. Absent in manifests written before tsbackup recorded it.
    public var phaseSeconds: [String: Double]? = nil
    /// Which archive format was written and why: chosen per database unless `--format` was
    /// given. Absent in manifests written before tsbackup chose the format.
    public var formatChoice: FormatChoice? = nil
    /// Set when tsbackup compressed the directory archive's data files itself (zstd), after
    /// pg_dump wrote them uncompressed; nil when pg_dump compressed them (every backup taken
    /// before this existed, custom-format archives, `--compress 0-9`).
    public var fileCompression: FileCompression? = nil

    /// How the data files of a directory archive are stored (``ArchiveDataCompression``): every
    /// `files[]` path inside the archive ending in `suffix` is one zstd frame (with its content
    /// checksum) of the file pg_dump wrote under the name without the suffix.
    public struct FileCompression: Codable, Sendable, Equatable {
        /// "zstd".
        public var method: String
        public var level: Int
        /// ".zst".
        public var suffix: String
        /// Data files compressed, their plain bytes (what a restore decompresses into scratch
        /// space) and their stored bytes.
        public var files: Int
        public var plainBytes: Int64
        public var bytes: Int64

        enum CodingKeys: String, CodingKey {
            case method, level, suffix, files
            case plainBytes = "plain_bytes"
            case bytes
        }
    }

    public struct Source: Codable, Sendable, Equatable {
        public var host: String
        public var port: Int
        public var database: String
        public var user: String
    }

    public struct TimescaleDB: Codable, Sendable, Equatable {
        public var version: String
        public var catalogVersion: String?
        public var license: String?
        public var schema: String
    }

    public struct Hypertable: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var owner: String
        public var dimensions: [ServerInspection.Dimension]
        public var chunkCount: Int
        public var rowCount: Int64
        public var totalBytes: Int64
        public var indexCount: Int
        public var constraintCount: Int
        public var foreignKeyCount: Int
        public var contentHash: String?
        /// "pg_dump" (the main archive) or "chunk_batches"; nil in backups taken before batching.
        public var dumpPath: String? = nil
    }

    public struct PlainTable: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var rowCount: Int64
        public var totalBytes: Int64
        public var contentHash: String?
    }

    public struct Job: Codable, Sendable, Equatable {
        public var id: Int
        public var application: String
        public var procedure: String
        public var owner: String
        public var hypertable: String?
    }

    public struct FileEntry: Codable, Sendable, Equatable {
        /// Relative to the backup's directory.
        public var path: String
        public var bytes: Int64
        public var sha256: String

        public init(path: String, bytes: Int64, sha256: String) {
            self.path = path
            self.bytes = bytes
            self.sha256 = sha256
        }
    }

    public struct Retry: Codable, Sendable, Equatable {
        public var attempt: Int
        public var reason: String
    }

    public var totalRows: Int64 { [hypertables.saturatingSum(\.rowCount), plainTables.saturatingSum(\.rowCount)].saturatingSum { $0 } }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case kind, id, label, status, error
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case durationSeconds = "duration_seconds"
        case tsbackupVersion = "tsbackup_version"
        case source, server
        case pgDump = "pg_dump"
        case timescaledb, extensions, hypertables
        case plainTables = "plain_tables"
        case jobs
        case chunkTables = "chunk_tables"
        case databaseBytes = "database_bytes"
        case format
        case jobsUsed = "parallel_jobs"
        case checksums, compression, archive
        case rolesFile = "roles_file"
        case rolesSource = "roles_source"
        case files, warnings, retries
        case chunkPath = "chunk_path"
        case phaseSeconds = "phase_seconds"
        case formatChoice = "format_choice"
        case fileCompression = "file_compression"
    }
}

extension BackupManifest.TimescaleDB {
    enum CodingKeys: String, CodingKey {
        case version
        case catalogVersion = "catalog_version"
        case license, schema
    }
}

extension BackupManifest.Hypertable {
    enum CodingKeys: String, CodingKey {
        case schema, name, owner, dimensions
        case chunkCount = "chunk_count"
        case rowCount = "row_count"
        case totalBytes = "total_bytes"
        case indexCount = "index_count"
        case constraintCount = "constraint_count"
        case foreignKeyCount = "foreign_key_count"
        case contentHash = "content_hash"
        case dumpPath = "dump_path"
    }
}

extension BackupManifest.PlainTable {
    enum CodingKeys: String, CodingKey {
        case schema, name
        case rowCount = "row_count"
        case totalBytes = "total_bytes"
        case contentHash = "content_hash"
    }
}

extension PostgresTool {
    enum CodingKeys: String, CodingKey {
        case path, version
        case majorVersion = "major_version"
    }
}

/// What `tsbackup inspect` learns about a server and one of its databases.
///
/// Its JSON form is a stable interface, documented in `docs/inspect-json.md`: keys are snake_case,
/// fields are only ever added, and `format_version` changes if one is removed or changes meaning.
public struct ServerInspection: Codable, Sendable, Equatable {
    public static let currentFormatVersion = 1

    public var formatVersion: Int = ServerInspection.currentFormatVersion
    public var connection: Connection
    public var server: Server
    public var timescaledb: TimescaleDB
    public var extensions: [Extension]
    public var hypertables: [Hypertable]
    public var plainTableCount: Int
    public var plainTableBytes: Int64
    public var databaseBytes: Int64
    public var role: Role
    public var lockBudget: LockBudget
    public var warnings: [String]

    public struct Connection: Codable, Sendable, Equatable {
        public var host: String
        public var port: Int
        public var database: String
        public var user: String
    }

    public struct Server: Codable, Sendable, Equatable {
        /// `server_version`, e.g. "15.20 (Debian 15.20-0+deb12u1)".
        public var version: String
        /// `server_version_num`, e.g. 150020.
        public var versionNumber: Int
        public var majorVersion: Int
    }

    public struct TimescaleDB: Codable, Sendable, Equatable {
        /// The extension is installed in this database.
        public var installed: Bool
        /// `pg_extension.extversion`, nil when not installed.
        public var version: String?
        /// The catalog's own stamp, `_timescaledb_catalog.metadata.timescaledb_version`.
        public var catalogVersion: String?
        public var schema: String?
        /// `timescaledb.license` ("apache" or "timescale"), nil when not loaded.
        public var license: String?
        /// The loader library is in `shared_preload_libraries`.
        public var preloaded: Bool
        /// The version `CREATE EXTENSION timescaledb` installs by default on this server.
        public var defaultVersion: String?
        /// Every version `CREATE EXTENSION timescaledb VERSION '...'` can install here.
        public var installableVersions: [String]
        public var restoring: RestoreMode
        /// User-defined jobs and policies (`_timescaledb_config.bgw_job`, id >= 1000).
        public var userJobCount: Int
        /// A "TimescaleDB Background Worker Scheduler" process serves this database.
        public var schedulerRunning: Bool
        /// This database's installed version is older than the server's default: it needs
        /// ALTER EXTENSION timescaledb UPDATE (as the first statement of a fresh session).
        public var behindDefault: Bool = false
        /// Every database of the server that has TimescaleDB installed, with its version.
        public var databases: [DatabaseVersion] = []
    }

    /// One database's TimescaleDB version, as read by connecting to it.
    public struct DatabaseVersion: Codable, Sendable, Equatable {
        public var database: String
        public var version: String
        /// Older than the server's `default_version`.
        public var behindDefault: Bool

        enum CodingKeys: String, CodingKey {
            case database, version
            case behindDefault = "behind_default"
        }
    }

    public struct RestoreMode: Codable, Sendable, Equatable {
        /// `timescaledb.restoring` as this session sees it; nil when the extension is not loaded.
        public var session: Bool?
        /// `ALTER DATABASE ... SET timescaledb.restoring = on` is in force for this database.
        public var databaseSetting: Bool
        /// Every database of the server with that setting (a database left in restore mode).
        public var databasesInRestoreMode: [String]
    }

    public struct Extension: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public var schema: String
    }

    public struct Hypertable: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var owner: String
        public var dimensions: [Dimension]
        public var chunkCount: Int
        public var tableBytes: Int64
        public var indexBytes: Int64
        public var toastBytes: Int64
        public var totalBytes: Int64
        public var compressionEnabled: Bool
    }

    public struct Dimension: Codable, Sendable, Equatable {
        /// 1 for the primary (time) dimension, then in creation order.
        public var number: Int
        public var column: String
        /// The column's type, e.g. "timestamp with time zone", "bigint".
        public var columnType: String
        /// "time" (open, interval-partitioned) or "space" (closed, hash-partitioned).
        public var kind: String
        /// A time interval as PostgreSQL prints it, e.g. "1 day"; nil for integer time and space.
        public var timeInterval: String?
        /// The chunk interval in microseconds for time columns of date/time types.
        public var intervalMicroseconds: Int64?
        /// The chunk interval of an integer time column.
        public var integerInterval: Int64?
        /// Number of hash partitions of a space dimension.
        public var partitions: Int?
    }

    public struct Role: Codable, Sendable, Equatable {
        public var name: String
        public var superuser: Bool
        public var createDatabase: Bool
        public var createRole: Bool
        public var databaseOwner: Bool
        /// May create schemas/objects in this database (CREATE privilege).
        public var canCreateInDatabase: Bool
        /// Tables, chunks and sequences this role cannot SELECT (a full backup needs all).
        public var unreadableRelations: Int
        public var capabilities: [Capability]
    }

    public struct Capability: Codable, Sendable, Equatable {
        /// "backup", "restore", "hypertable-export" or "hypertable-import".
        public var action: String
        public var allowed: Bool
        public var reason: String
    }

    public struct LockBudget: Codable, Sendable, Equatable {
        public var maxLocksPerTransaction: Int
        public var maxConnections: Int
        public var maxPreparedTransactions: Int
        /// `max_locks_per_transaction * (max_connections + max_prepared_transactions)`.
        public var budget: Int
        /// Relations a full pg_dump locks in one transaction (tables, chunks, sequences, views...).
        public var relationsToLock: Int
        /// Indexes of hypertable roots and chunks that a backup's row count through the roots
        /// locks beside pg_dump, in the same snapshot transaction.
        public var indexesToLock: Int
        /// The budget covers 1.2 x (relations + indexes) (headroom for concurrent load).
        public var sufficient: Bool
        /// The smallest `max_locks_per_transaction` that would be sufficient.
        public var recommendedMaxLocksPerTransaction: Int
    }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case connection, server, timescaledb, extensions, hypertables
        case plainTableCount = "plain_table_count"
        case plainTableBytes = "plain_table_bytes"
        case databaseBytes = "database_bytes"
        case role
        case lockBudget = "lock_budget"
        case warnings
    }
}

extension ServerInspection.Server {
    enum CodingKeys: String, CodingKey {
        case version
        case versionNumber = "version_number"
        case majorVersion = "major_version"
    }
}

extension ServerInspection.TimescaleDB {
    enum CodingKeys: String, CodingKey {
        case installed, version
        case catalogVersion = "catalog_version"
        case schema, license, preloaded
        case defaultVersion = "default_version"
        case installableVersions = "installable_versions"
        case restoring
        case userJobCount = "user_job_count"
        case schedulerRunning = "scheduler_running"
        case behindDefault = "behind_default"
        case databases
    }
}

extension ServerInspection.RestoreMode {
    enum CodingKeys: String, CodingKey {
        case session
        case databaseSetting = "database_setting"
        case databasesInRestoreMode = "databases_in_restore_mode"
    }
}

extension ServerInspection.Hypertable {
    enum CodingKeys: String, CodingKey {
        case schema, name, owner, dimensions
        case chunkCount = "chunk_count"
        case tableBytes = "table_bytes"
        case indexBytes = "index_bytes"
        case toastBytes = "toast_bytes"
        case totalBytes = "total_bytes"
        case compressionEnabled = "compression_enabled"
    }
}

extension ServerInspection.Dimension {
    enum CodingKeys: String, CodingKey {
        case number, column
        case columnType = "column_type"
        case kind
        case timeInterval = "time_interval"
        case intervalMicroseconds = "interval_microseconds"
        case integerInterval = "integer_interval"
        case partitions
    }
}

extension ServerInspection.Role {
    enum CodingKeys: String, CodingKey {
        case name, superuser
        case createDatabase = "create_database"
        case createRole = "create_role"
        case databaseOwner = "database_owner"
        case canCreateInDatabase = "can_create_in_database"
        case unreadableRelations = "unreadable_relations"
        case capabilities
    }
}

extension ServerInspection.LockBudget {
    enum CodingKeys: String, CodingKey {
        case maxLocksPerTransaction = "max_locks_per_transaction"
        case maxConnections = "max_connections"
        case maxPreparedTransactions = "max_prepared_transactions"
        case budget
        case relationsToLock = "relations_to_lock"
        case indexesToLock = "indexes_to_lock"
        case sufficient
        case recommendedMaxLocksPerTransaction = "recommended_max_locks_per_transaction"
    }
}

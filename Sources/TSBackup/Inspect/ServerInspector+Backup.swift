import Foundation
import PostgresNIO

/// What a backup needs to know about the server and its TimescaleDB before it starts, read in two
/// round trips on the backup's own connection.
///
/// `ServerInspector.inspect()` (the `inspect` command) reads much more: installable versions, the
/// scheduler, and the TimescaleDB version of every other database through a connection to each.
/// A backup uses none of that, and those connections were a fixed cost of every backup, paid
/// on the way to every backup's first step; at a few dozen chunks the fixed costs are most of a backup.
struct BackupServerFacts: Sendable, Equatable {
    var server: ServerInspection.Server
    /// `pg_extension.extversion` of timescaledb; nil when it is not installed here.
    var timescaleVersion: String?
    var timescaleSchema: String?
    /// `_timescaledb_catalog.metadata.timescaledb_version`; nil without TimescaleDB.
    var catalogVersion: String?
    /// `timescaledb.license` as this session sees it; nil when not loaded.
    var license: String?
    /// `ALTER DATABASE ... SET timescaledb.restoring = on` is in force for this database.
    var restoringDatabaseSetting: Bool
    /// `max_locks_per_transaction`, `max_connections`, `max_prepared_transactions` and the
    /// relations pg_dump locks; with the indexes counted by ``lockBudget(_:)``, the lock budget.
    var maxLocksPerTransaction: Int
    var maxConnections: Int
    var maxPreparedTransactions: Int
    var relationsToLock: Int
    var databaseBytes: Int64
    /// The connected role is a superuser, so it can read every table.
    var superuser = false

    var timescaleInstalled: Bool { timescaleVersion != nil }

    /// Reads the facts; the figures are the same ``ServerInspector`` computes for `inspect`.
    static func read(_ session: DatabaseSession) async throws -> BackupServerFacts {
        let row = try await session.row(
            PostgresQuery(unsafeSQL: """
            SELECT current_setting('server_version'), current_setting('server_version_num')::int4,
                   e.extversion, n.nspname::text, current_setting('timescaledb.license', true),
                   EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                           WHERE s.setrole = 0 AND d.datname = current_database() AND EXISTS (
                             SELECT 1 FROM unnest(s.setconfig) c
                             WHERE lower(c) IN ('timescaledb.restoring=on', 'timescaledb.restoring=true', 'timescaledb.restoring=1', 'timescaledb.restoring=yes'))),
                   current_setting('max_locks_per_transaction')::int8, current_setting('max_connections')::int8,
                   current_setting('max_prepared_transactions')::int8,
                   (\(ServerInspector.relationsToLockQuery)),
                   pg_database_size(current_database()),
                   coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
            FROM (SELECT 1) one
            LEFT JOIN pg_extension e ON e.extname = 'timescaledb'
            LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
            """), as: (String, Int32, String?, String?, String?, Bool, Int64, Int64, Int64, Int64, Int64, Bool).self,
            purpose: "reading the server version, TimescaleDB and lock settings")
        let (version, number, extensionVersion, schema, license, restoring, locks, connections, prepared, relations, databaseBytes, superuser) = row
        var catalogVersion: String?
        if extensionVersion != nil {
            // Only now: this table exists only where the extension is installed.
            catalogVersion = try await session.rows(
                "SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version'",
                as: String.self, purpose: "reading the TimescaleDB catalog version").first
        }
        return BackupServerFacts(
            server: .init(version: version, versionNumber: Int(number), majorVersion: Int(number) / 10000),
            timescaleVersion: extensionVersion, timescaleSchema: schema, catalogVersion: catalogVersion,
            license: license.flatMap { $0.isEmpty ? nil : $0 }, restoringDatabaseSetting: restoring,
            maxLocksPerTransaction: Int(locks), maxConnections: Int(connections), maxPreparedTransactions: Int(prepared),
            relationsToLock: Int(relations), databaseBytes: databaseBytes, superuser: superuser)
    }

    /// The lock budget, with the indexes of the hypertables and their chunks counted now. Called
    /// after the check that the role can read every table: the count names every chunk, and a
    /// role without access to a schema would fail it with a less helpful message.
    func lockBudget(_ session: DatabaseSession) async throws -> ServerInspection.LockBudget {
        let indexes = try await ServerInspector.hypertableIndexes(session, timescaleInstalled: timescaleInstalled).values.reduce(0, +)
        return ServerInspector.lockBudget(maxLocks: maxLocksPerTransaction, maxConnections: maxConnections,
                                          maxPrepared: maxPreparedTransactions, relations: relationsToLock, indexes: indexes)
    }
}

extension ServerInspector {
    /// Bytes of every user table (relkind r, p, m: chunks included), keyed "schema.name", for the
    /// backup's format choice and its progress. `pg_relation_size` opens each relation, and the
    /// session keeps a cache entry for every relation it opened (about 5 kB each, measured at
    /// 991 chunks) until it ends; the backup's own session stays open for the whole backup, so
    /// at 50,000 chunks this one reading held about 190 MB on the server from the preflight to
    /// the commit (measured). Past `relationsPerSession` relations the sizes are read in slices
    /// of oids, each on a short session of its own; below it, on this session as one query.
    static func tableBytes(_ session: DatabaseSession, relationsPerSession: Int) async throws -> [String: Int64] {
        let condition = "c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        let read: @Sendable (DatabaseSession, Int64, Int64) async throws -> [(String, Int64)] = { session, after, upTo in
            try await session.rows(
                PostgresQuery(unsafeSQL: """
                SELECT format('%s.%s', n.nspname, c.relname), pg_relation_size(c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE \(condition) AND c.oid::int8 > \(after) AND c.oid::int8 <= \(upTo)
                """), as: (String, Int64).self, purpose: "reading table sizes")
        }
        let count = try await session.value(
            PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE \(condition)"),
            as: Int64.self, purpose: "counting tables")
        let rows = count <= Int64(relationsPerSession)
            ? try await read(session, -1, Int64(UInt32.max))
            : try await inSlices(session, purpose: "slicing the tables whose sizes are read", lastKey: { after in
                PostgresQuery(unsafeSQL: """
                SELECT max(oid)::int8 FROM (SELECT c.oid::int8 AS oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                            WHERE \(condition) AND c.oid::int8 > \(after) ORDER BY 1 LIMIT \(Int64(relationsPerSession))) s
                """)
            }, read: read).flatMap { $0 }
        return Dictionary(rows, uniquingKeysWith: { a, _ in a })
    }
}

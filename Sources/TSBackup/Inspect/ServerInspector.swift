import Foundation
import PostgresNIO

/// Reads everything a backup or restore decision depends on from a live server.
public struct ServerInspector: Sendable {
    public let session: DatabaseSession

    public init(session: DatabaseSession) {
        self.session = session
    }

    /// Connects with `settings`, inspects, disconnects.
    public static func inspect(_ settings: ConnectionSettings) async throws -> ServerInspection {
        try await DatabaseSession.with(settings) { try await ServerInspector(session: $0).inspect() }
    }

    public func inspect() async throws -> ServerInspection {
        let settings = session.settings
        let server = try await serverVersion()
        let timescale = try await timescaleDB()
        let hypertables = timescale.installed ? try await hypertables() : []
        let (plainCount, plainBytes) = try await plainTables(timescaleInstalled: timescale.installed)
        let databaseBytes = try await session.value(
            "SELECT pg_database_size(current_database())", as: Int64.self, purpose: "reading the database size")
        let lockBudget = try await lockBudget()
        let role = try await role(timescale: timescale, hypertableCount: hypertables.count)

        var warnings: [String] = settings.warnings
        if !timescale.preloaded {
            warnings.append("timescaledb is not in shared_preload_libraries on this server: TimescaleDB cannot work here until it is added and the server restarted.")
        }
        if timescale.restoring.databaseSetting || timescale.restoring.session == true {
            warnings.append("Database \"\(settings.database)\" is in TimescaleDB restore mode (timescaledb.restoring = on): inserts into hypertables fail and no background jobs run. If no restore is running, finish it with SELECT timescaledb_post_restore(), or run ALTER DATABASE \(quoteIdentifier(settings.database)) RESET timescaledb.restoring.")
        }
        let others = timescale.restoring.databasesInRestoreMode.filter { $0 != settings.database }
        if !others.isEmpty {
            warnings.append("Other databases on this server are stuck in TimescaleDB restore mode: \(others.joined(separator: ", ")). Each needs ALTER DATABASE <name> RESET timescaledb.restoring (or timescaledb_post_restore()) unless a restore is running there.")
        }
        if let version = timescale.version, let catalog = timescale.catalogVersion, version != catalog {
            warnings.append("The TimescaleDB extension is at \(version) but its catalog says \(catalog): a restore or update did not finish. Do not back up this database before resolving it.")
        }
        for behind in timescale.databases where behind.behindDefault {
            warnings.append("Database \"\(behind.database)\" has TimescaleDB \(behind.version), behind this server's default \(timescale.defaultVersion ?? "?"). Update it: connect with a fresh session (psql -X -d \(behind.database)) and run ALTER EXTENSION timescaledb UPDATE as its first statement.")
        }
        if timescale.installed, !timescale.schedulerRunning, !timescale.restoring.databaseSetting {
            warnings.append("No TimescaleDB background scheduler runs for this database, so its jobs and policies do not run. A superuser can start it with SELECT _timescaledb_functions.start_background_workers().")
        }
        if !lockBudget.sufficient {
            warnings.append("pg_dump would lock \(lockBudget.relationsToLock) relations, and a backup's row count through the hypertable roots beside it \(lockBudget.indexesToLock) indexes of their chunks, but the server's lock table holds about \(lockBudget.budget) (max_locks_per_transaction \(lockBudget.maxLocksPerTransaction) x (max_connections \(lockBudget.maxConnections) + max_prepared_transactions \(lockBudget.maxPreparedTransactions))): a backup in one pass would fail with \"out of shared memory\"; tsbackup backup then dumps chunks in batches if the rest fits, or refuses. To dump in one pass, set max_locks_per_transaction = \(lockBudget.recommendedMaxLocksPerTransaction) or more and restart the server.")
        }

        return ServerInspection(
            connection: .init(host: settings.host, port: settings.port, database: settings.database, user: settings.user),
            server: server,
            timescaledb: timescale,
            extensions: try await otherExtensions(),
            hypertables: hypertables,
            plainTableCount: plainCount,
            plainTableBytes: plainBytes,
            databaseBytes: databaseBytes,
            role: role,
            lockBudget: lockBudget,
            warnings: warnings
        )
    }

    func serverVersion() async throws -> ServerInspection.Server {
        let (version, number) = try await session.row(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
            as: (String, Int32).self, purpose: "reading the server version")
        return .init(version: version, versionNumber: Int(number), majorVersion: Int(number) / 10000)
    }

    func timescaleDB() async throws -> ServerInspection.TimescaleDB {
        let installed = try await session.rows(
            """
            SELECT e.extversion, n.nspname::text FROM pg_extension e
            JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'
            """, as: (String, String).self, purpose: "looking for the timescaledb extension").first
        let defaultVersion = try await session.rows(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
            as: (String?).self, purpose: "reading the installable TimescaleDB versions").first ?? nil
        let installable = try await installableTimescaleDBVersions()
        let preloaded = try await timescaleDBPreloaded()
        let (license, restoringText) = try await session.row(
            "SELECT current_setting('timescaledb.license', true), current_setting('timescaledb.restoring', true)",
            as: (String?, String?).self)
        let stuck = try await session.rows(
            """
            SELECT d.datname::text, (d.datname = current_database()) FROM pg_db_role_setting s
            JOIN pg_database d ON d.oid = s.setdatabase
            WHERE s.setrole = 0 AND EXISTS (
              SELECT 1 FROM unnest(s.setconfig) c
              WHERE lower(c) IN ('timescaledb.restoring=on', 'timescaledb.restoring=true', 'timescaledb.restoring=1', 'timescaledb.restoring=yes'))
            ORDER BY 1
            """, as: (String, Bool).self, purpose: "looking for databases in restore mode")

        var catalogVersion: String?
        var jobs = 0
        if installed != nil {
            catalogVersion = try await session.rows(
                "SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version'",
                as: String.self).first
            jobs = Int(try await session.value(
                "SELECT count(*) FROM _timescaledb_config.bgw_job WHERE id >= 1000", as: Int64.self))
        }
        let scheduler = try await schedulerRunning()
        let databases = installable.isEmpty ? [] : await databaseVersions(defaultVersion: defaultVersion, own: installed?.0)

        return .init(
            installed: installed != nil,
            version: installed?.0,
            catalogVersion: catalogVersion,
            schema: installed?.1,
            license: license.flatMap { $0.isEmpty ? nil : $0 },
            preloaded: preloaded,
            defaultVersion: defaultVersion,
            installableVersions: installable,
            restoring: .init(
                session: restoringText.flatMap { $0.isEmpty ? nil : ["on", "true", "1", "yes"].contains($0.lowercased()) },
                databaseSetting: stuck.contains { $0.1 },
                databasesInRestoreMode: stuck.map(\.0)),
            userJobCount: jobs,
            schedulerRunning: scheduler,
            behindDefault: Self.isBehind(installed?.0, defaultVersion),
            databases: databases
        )
    }

    static func isBehind(_ version: String?, _ defaultVersion: String?) -> Bool {
        guard let version, let defaultVersion else { return false }
        return VersionNumber.isOrderedBefore(version, defaultVersion)
    }

    /// The TimescaleDB version of every database on the server that has it. Other databases are
    /// read through short connections of their own; one that cannot be reached (no CONNECT
    /// privilege, dropped meanwhile) is left out.
    func databaseVersions(defaultVersion: String?, own: String?) async -> [ServerInspection.DatabaseVersion] {
        let current = session.settings.database
        guard let names = try? await session.values(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1 LIMIT 500",
            as: String.self, purpose: "listing databases") else { return [] }
        var result: [ServerInspection.DatabaseVersion] = []
        for name in names {
            let version: String?
            if name == current {
                version = own
            } else {
                // disable_load: reading pg_extension must not load that database's versioned
                // library (it may be missing, and loading it would be the probe's only effect).
                var settings = session.settings.with(database: name).with(setting: "timescaledb.disable_load", "on")
                settings.connectTimeoutSeconds = min(settings.connectTimeoutSeconds, 5)
                version = try? await DatabaseSession.with(settings) { other in
                    try await other.rows("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", as: String.self).first
                } ?? nil
            }
            if let version {
                result.append(.init(database: name, version: version, behindDefault: Self.isBehind(version, defaultVersion)))
            }
        }
        return result
    }

    /// Every version `CREATE EXTENSION timescaledb VERSION '...'` can install, ascending.
    func installableTimescaleDBVersions() async throws -> [String] {
        try await session.values(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'timescaledb'",
            as: String.self, purpose: "reading the installable TimescaleDB versions"
        ).sorted(by: VersionNumber.isOrderedBefore)
    }

    /// shared_preload_libraries is hidden from non-superusers; the loader's own setting is not,
    /// and it is an integer only when the loader library really is loaded (otherwise at most a
    /// string placeholder from postgresql.conf).
    func timescaleDBPreloaded() async throws -> Bool {
        try await session.value(
            """
            SELECT EXISTS (SELECT 1 FROM pg_settings
                           WHERE name = 'timescaledb.max_background_workers' AND vartype = 'integer')
            """, as: Bool.self, purpose: "checking that the TimescaleDB loader is preloaded")
    }

    /// A TimescaleDB scheduler process serves the connected database.
    func schedulerRunning() async throws -> Bool {
        try await session.value(
            """
            SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                           WHERE backend_type = 'TimescaleDB Background Worker Scheduler' AND datname = current_database())
            """, as: Bool.self, purpose: "looking for the TimescaleDB scheduler")
    }

    /// Tables, chunks and sequences pg_dump would need but this role cannot SELECT, "schema.name".
    func unreadableRelations() async throws -> [String] {
        try await session.values(
            """
            SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm', 'f', 'S')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
              AND NOT has_table_privilege(c.oid, 'SELECT')
              -- pg_dump skips extension members, except the data of extension configuration tables
              AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                   OR c.oid = ANY (ARRAY(SELECT unnest(extconfig) FROM pg_extension)))
            ORDER BY 1
            """, as: String.self, purpose: "checking which tables the role can read")
    }

    func otherExtensions() async throws -> [ServerInspection.Extension] {
        try await session.rows(
            """
            SELECT e.extname::text, e.extversion, n.nspname::text FROM pg_extension e
            JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname <> 'timescaledb' ORDER BY e.extname
            """, as: (String, String, String).self, purpose: "listing extensions"
        ).map { .init(name: $0.0, version: $0.1, schema: $0.2) }
    }

    func hypertables() async throws -> [ServerInspection.Hypertable] {
        let tables = try await session.rows(
            """
            SELECT h.hypertable_schema::text, h.hypertable_name::text, h.owner::text, h.num_chunks::int8,
                   coalesce(h.compression_enabled, false)
            FROM timescaledb_information.hypertables h
            ORDER BY 1, 2
            """, as: (String, String, String, Int64, Bool).self,
            purpose: "listing hypertables")
        let sizes = try await hypertableSizes(chunksPerSession: TestSeams.sizesChunksPerSession() ?? Self.sizeChunksPerSession)
        let dimensions = try await session.rows(
            """
            SELECT hypertable_schema::text, hypertable_name::text, dimension_number::int8, column_name::text,
                   column_type::text, lower(dimension_type), time_interval::text,
                   (extract(epoch FROM time_interval) * 1000000)::int8, integer_interval::int8, num_partitions::int8
            FROM timescaledb_information.dimensions ORDER BY 1, 2, 3
            """, as: (String, String, Int64, String, String, String, String?, Int64?, Int64?, Int64?).self,
            purpose: "listing hypertable dimensions")
        return tables.map { t in
            let size = sizes[[t.0, t.1]]
            return ServerInspection.Hypertable(
                schema: t.0, name: t.1, owner: t.2,
                dimensions: dimensions.filter { $0.0 == t.0 && $0.1 == t.1 }.map { d in
                    ServerInspection.Dimension(
                        number: Int(d.2), column: d.3, columnType: d.4, kind: d.5,
                        timeInterval: d.6, intervalMicroseconds: d.7, integerInterval: d.8,
                        partitions: d.9.map(Int.init))
                },
                chunkCount: Int(t.3), tableBytes: size?.table ?? 0, indexBytes: size?.index ?? 0, toastBytes: size?.toast ?? 0,
                totalBytes: size?.total ?? 0, compressionEnabled: t.4)
        }
    }

    /// Bytes of one hypertable: its root, chunks and compressed chunks, as
    /// hypertable_detailed_size() adds them up.
    struct HypertableSizes: Sendable, Equatable {
        var table: Int64 = 0
        var index: Int64 = 0
        var toast: Int64 = 0
        var total: Int64 = 0

        static func + (a: HypertableSizes, b: HypertableSizes) -> HypertableSizes {
            HypertableSizes(table: a.table + b.table, index: a.index + b.index, toast: a.toast + b.toast, total: a.total + b.total)
        }
    }

    /// Chunks whose sizes one server session reads (see ``hypertableSizes(chunksPerSession:)``).
    static let sizeChunksPerSession = 5_000

    /// Sizes of every hypertable, keyed by [schema, name]. Reading a relation's size opens it, and the
    /// session keeps a cache entry for every relation it opened until it ends: a backup's
    /// survey session that read the sizes of 10,000 chunks and their indexes held about 150 MB on
    /// the server for the whole backup (measured), and the growth is linear in chunks. So past
    /// `chunksPerSession` chunks the sizes are read in slices of chunk ids, each on a short
    /// session of its own; below it, on this session, as one query. Sizes are read from the
    /// files, not the snapshot, so another session reads the same figures.
    func hypertableSizes(chunksPerSession: Int) async throws -> [[String]: HypertableSizes] {
        let chunks = try await session.value("SELECT count(*) FROM _timescaledb_catalog.chunk WHERE NOT dropped", as: Int64.self,
                                             purpose: "counting chunks")
        guard chunks > Int64(chunksPerSession) else {
            return try await Self.sizes(session, chunkIDsAfter: nil, upTo: nil)
        }
        // The roots are few: their sizes are read here; the chunks' on sessions of their own.
        var sizes = try await Self.sizes(session, chunkIDsAfter: nil, upTo: -1)
        let slices = try await Self.inSlices(session, purpose: "slicing the chunks whose sizes are read", lastKey: { after in
            """
            SELECT max(id)::int8 FROM (SELECT id FROM _timescaledb_catalog.chunk WHERE NOT dropped AND id > \(after)
                                       ORDER BY id LIMIT \(Int64(chunksPerSession))) s
            """
        }, read: { try await Self.sizes($0, chunkIDsAfter: $1, upTo: $2) })
        for slice in slices { sizes.merge(slice, uniquingKeysWith: +) }
        return sizes
    }

    /// Reads relations in slices of keys (chunk ids, oids), each slice on a short server session
    /// of its own, so that no session keeps a cache entry for every relation. `lastKey(after)` is
    /// a catalog-only query on `session` for the last key of the slice after `after` (NULL when
    /// none is left); `read(session, after, upTo)` reads the keys in (`after`, `upTo`].
    static func inSlices<T: Sendable>(_ session: DatabaseSession, purpose: String, lastKey: (Int64) -> PostgresQuery,
                                      read: @escaping @Sendable (DatabaseSession, Int64, Int64) async throws -> T) async throws -> [T] {
        var slices: [T] = []
        var after: Int64 = -1
        while let last = try await session.value(lastKey(after), as: Int64?.self, purpose: purpose) {
            slices.append(try await DatabaseSession.with(session.settings) { try await read($0, after, last) })
            after = last
        }
        return slices
    }

    /// One reading of sizes: every hypertable's root and chunks (`chunkIDsAfter` nil), only
    /// the roots (`upTo` -1), or the chunks with ids in (`chunkIDsAfter`, `upTo`] (with their
    /// compressed chunks) and no root.
    static func sizes(_ session: DatabaseSession, chunkIDsAfter: Int64?, upTo: Int64?) async throws -> [[String]: HypertableSizes] {
        let roots = chunkIDsAfter == nil
        let lower = chunkIDsAfter ?? -1
        let upper = upTo ?? Int64.max
        let rows = try await session.rows(
            """
            WITH relations AS (
                -- The root, its chunks and their compressed chunks: what hypertable_detailed_size()
                -- adds up, read in one pass (that function took ~6 ms per chunk).
                SELECT ht.schema_name, ht.table_name, format('%I.%I', ht.schema_name, ht.table_name)::regclass AS r
                FROM _timescaledb_catalog.hypertable ht WHERE \(roots)
                UNION ALL
                SELECT ht.schema_name, ht.table_name, to_regclass(format('%I.%I', c.schema_name, c.table_name))
                FROM _timescaledb_catalog.hypertable ht JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = ht.id AND NOT c.dropped
                WHERE c.id > \(lower) AND c.id <= \(upper)
                UNION ALL
                SELECT ht.schema_name, ht.table_name, to_regclass(format('%I.%I', z.schema_name, z.table_name))
                FROM _timescaledb_catalog.hypertable ht JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = ht.id AND NOT c.dropped
                JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id
                WHERE c.id > \(lower) AND c.id <= \(upper)
            )
            SELECT x.schema_name::text, x.table_name::text,
                   sum(pg_relation_size(x.r, 'main') + pg_relation_size(x.r, 'fsm') + pg_relation_size(x.r, 'vm') + pg_relation_size(x.r, 'init'))::int8,
                   sum(pg_indexes_size(x.r))::int8,
                   sum(coalesce(pg_total_relation_size(nullif(t.reltoastrelid, 0)), 0))::int8,
                   sum(pg_total_relation_size(x.r))::int8
            FROM relations x JOIN pg_class t ON t.oid = x.r
            GROUP BY 1, 2
            """, as: (String, String, Int64, Int64, Int64, Int64).self, purpose: "reading hypertable sizes")
        return Dictionary(rows.map { ([$0.0, $0.1], HypertableSizes(table: $0.2, index: $0.3, toast: $0.4, total: $0.5)) }, uniquingKeysWith: +)
    }

    /// User tables that are neither hypertables, chunks, nor owned by an extension.
    func plainTables(timescaleInstalled: Bool) async throws -> (Int, Int64) {
        let (count, bytes) = try await session.row(
            PostgresQuery(unsafeSQL: """
            SELECT count(*), coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE \(Self.plainTableCondition(timescaleInstalled: timescaleInstalled))
            """), as: (Int64, Int64).self, purpose: "counting plain tables")
        return (Int(count), bytes)
    }

    /// SQL condition on `pg_class c` / `pg_namespace n` selecting plain user tables.
    static func plainTableCondition(timescaleInstalled: Bool) -> String {
        let timescaleFilter = timescaleInstalled
            ? """
              AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h WHERE h.schema_name = n.nspname AND h.table_name = c.relname)
              AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname)
              """
            : ""
        return """
            c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
              AND n.nspname NOT LIKE '\\_timescaledb\\_%' AND n.nspname NOT LIKE 'timescaledb\\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid AND dep.deptype = 'e')
              \(timescaleFilter)
            """
    }

    func lockBudget() async throws -> ServerInspection.LockBudget {
        let (locks, connections, prepared, relations) = try await session.row(
            PostgresQuery(unsafeSQL: """
            SELECT current_setting('max_locks_per_transaction')::int8, current_setting('max_connections')::int8,
                   current_setting('max_prepared_transactions')::int8, (\(Self.relationsToLockQuery))
            """), as: (Int64, Int64, Int64, Int64).self, purpose: "reading lock settings")
        let indexes = try await Self.hypertableIndexes(session).values.reduce(0, +)
        return Self.lockBudget(maxLocks: Int(locks), maxConnections: Int(connections),
                               maxPrepared: Int(prepared), relations: Int(relations), indexes: indexes)
    }

    /// The relations pg_dump locks (tables, views, sequences... outside the system schemas), as a
    /// scalar subquery's text.
    static let relationsToLockQuery = """
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm', 'f', 'S', 'v')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
        """

    /// Indexes of each hypertable's root and chunks, by hypertable id (empty without TimescaleDB).
    ///
    /// The backup's survey counts every hypertable's rows through its root inside the snapshot's
    /// transaction, beside pg_dump; planning that count locks every chunk and each of its indexes
    /// until the transaction ends. The chunks are pg_dump's relations already (a lock on the same
    /// relation shares one lock-table entry between sessions), but the indexes are new entries.
    /// `timescaleInstalled` spares the round trip that checks it when the caller knows.
    static func hypertableIndexes(_ session: DatabaseSession, timescaleInstalled: Bool? = nil) async throws -> [Int: Int] {
        let installed: Bool
        if let timescaleInstalled {
            installed = timescaleInstalled
        } else {
            installed = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", as: Bool.self)
        }
        guard installed else { return [:] }
        let rows = try await session.rows(
            """
            SELECT t.hypertable_id::int8, count(*) FROM (
                SELECT h.id AS hypertable_id, to_regclass(format('%I.%I', h.schema_name, h.table_name)) AS r
                FROM _timescaledb_catalog.hypertable h
                UNION ALL
                SELECT c.hypertable_id, to_regclass(format('%I.%I', c.schema_name, c.table_name))
                FROM _timescaledb_catalog.chunk c WHERE NOT c.dropped
            ) t JOIN pg_index i ON i.indrelid = t.r
            GROUP BY 1
            """, as: (Int64, Int64).self, purpose: "counting the indexes of hypertables and their chunks")
        return Dictionary(rows.map { (Int($0.0), Int($0.1)) }, uniquingKeysWith: +)
    }

    /// pg_dump holds a lock on every relation it dumps until it ends, and the survey beside it
    /// also holds the `indexes` of the hypertables it counts through their roots; the shared lock
    /// table has room for `max_locks_per_transaction` x slots. 20 % headroom covers concurrent sessions.
    public static func lockBudget(maxLocks: Int, maxConnections: Int, maxPrepared: Int, relations: Int, indexes: Int = 0) -> ServerInspection.LockBudget {
        let slots = max(1, maxConnections + maxPrepared)
        let budget = maxLocks * slots
        let needed = ((relations + indexes) * 12 + 9) / 10
        let recommended = max(maxLocks, (needed + slots - 1) / slots)
        return .init(maxLocksPerTransaction: maxLocks, maxConnections: maxConnections,
                     maxPreparedTransactions: maxPrepared, budget: budget, relationsToLock: relations,
                     indexesToLock: indexes, sufficient: budget >= needed, recommendedMaxLocksPerTransaction: recommended)
    }

    func role(timescale: ServerInspection.TimescaleDB, hypertableCount: Int) async throws -> ServerInspection.Role {
        let (name, superuser, createDB, createRole, owner, canCreate) = try await session.row(
            """
            SELECT r.rolname::text, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                   pg_has_role(current_user, d.datdba, 'MEMBER'), has_database_privilege(current_database(), 'CREATE')
            FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
            """, as: (String, Bool, Bool, Bool, Bool, Bool).self, purpose: "reading the role's privileges")
        let unreadable = try await unreadableRelations().count
        let readableHypertables = timescale.installed ? Int(try await session.value(
            """
            SELECT count(*) FROM timescaledb_information.hypertables
            WHERE has_table_privilege(format('%I.%I', hypertable_schema, hypertable_name), 'SELECT')
            """, as: Int64.self)) : 0

        var capabilities: [ServerInspection.Capability] = []
        capabilities.append(unreadable == 0
            ? .init(action: "backup", allowed: true, reason: "can read every table, chunk and sequence, as pg_dump needs")
            : .init(action: "backup", allowed: false, reason: "cannot read \(unreadable) tables, chunks or sequences; a full backup needs SELECT on all of them (a superuser or the owner of every table)"))
        capabilities.append(superuser
            ? .init(action: "restore", allowed: true, reason: "superuser: may run timescaledb_pre_restore/post_restore, load the TimescaleDB catalog and restart background workers")
            : .init(action: "restore", allowed: false, reason: "not a superuser: a full TimescaleDB restore must load the extension catalog and stop/start background workers, which only a superuser may do; ask an administrator or operator to run it"))
        if !timescale.installed {
            capabilities.append(.init(action: "hypertable-export", allowed: false, reason: "TimescaleDB is not installed in this database, so it holds no hypertable"))
        } else {
            capabilities.append(readableHypertables > 0
                ? .init(action: "hypertable-export", allowed: true, reason: "can read \(readableHypertables) of \(hypertableCount) hypertables; no admin rights needed")
                : .init(action: "hypertable-export", allowed: false, reason: "cannot read any hypertable (needs SELECT on the table)"))
        }
        let canImport = (owner || canCreate || superuser) && timescale.installed
        capabilities.append(.init(
            action: "hypertable-import", allowed: canImport,
            reason: canImport
                ? "may create tables here and TimescaleDB is installed; create_hypertable needs no admin rights"
                : (timescale.installed ? "needs to own the database or have CREATE on it" : "TimescaleDB must be installed in this database first (CREATE EXTENSION timescaledb; allowed for the database owner)")))

        return .init(name: name, superuser: superuser, createDatabase: createDB, createRole: createRole,
                     databaseOwner: owner, canCreateInDatabase: canCreate,
                     unreadableRelations: Int(unreadable), capabilities: capabilities)
    }
}

/// Compares dotted version numbers numerically ("2.9.0" < "2.19.3").
public enum VersionNumber {
    public static func components(_ version: String) -> [Int] {
        version.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
    }

    public static func isOrderedBefore(_ a: String, _ b: String) -> Bool {
        components(a).lexicographicallyPrecedes(components(b))
    }
}

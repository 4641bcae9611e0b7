import Foundation
import PostgresNIO

/// The `export-hypertable` use case: one hypertable (or a time window of it) with its definition
/// and TimescaleDB settings, restorable without the rest of the database and without admin rights.
///
/// `pg_dump -t` cannot do this: it dumps the root table, which holds no rows. Here the rows are
/// copied chunk by chunk, each by its own psql on one exported snapshot, while this session
/// counts and hashes the same rows in that snapshot.
public enum HypertableExport {
    public struct Request: Sendable {
        public var settings: ConnectionSettings
        public var repository: RepositoryAccess
        /// "schema.name"; unqualified means public.
        public var table: String
        /// Inclusive lower and exclusive upper bound on the primary dimension.
        public var since: String?
        public var until: String?
        public var jobs = 2
        /// At most this many chunks per data file; nil groups chunks by size alone.
        public var chunksPerFile: Int?

        public init(settings: ConnectionSettings, repository: RepositoryAccess, table: String) {
            self.settings = settings
            self.repository = repository
            self.table = table
        }
    }

    public static func run(_ request: Request) async throws -> HypertableManifest {
        let (schema, name) = try QualifiedName.parse(request.table, option: "--table")
        return try await DatabaseSession.with(request.settings) { session in
            let plan = try await preflight(request, schema: schema, name: name, session: session)
            return try await request.repository.with(create: true) { repository in
                try await repository.withLock(command: "export-hypertable \(plan.qualified) of \(request.settings.displayName)") { staleWarning in
                    var warnings = request.settings.warnings
                    if let staleWarning { warnings.append(staleWarning) }
                    return try await execute(request, plan: plan, session: session, repository: repository, warnings: warnings)
                }
            }
        }
    }

    struct Plan {
        var schema: String
        var name: String
        /// Quoted "schema"."name".
        var qualified: String
        var server: ServerInspection.Server
        var timescaledb: BackupManifest.TimescaleDB
        var pgDump: PostgresTool
        var psql: PostgresTool
        var compressor: [String]
        var compressorName: String
        var primaryColumn: String
        var primaryType: String
        var integerTime: Bool
        /// SQL condition of the window on the table's columns; nil for all rows.
        var condition: String?
        /// The window's bounds as typed SQL literals.
        var sinceLiteral: String?
        var untilLiteral: String?
    }

    static func preflight(_ request: Request, schema: String, name: String, session: DatabaseSession) async throws -> Plan {
        let inspector = ServerInspector(session: session)
        let server = try await inspector.serverVersion()
        let timescale = try await inspector.timescaleDB()
        guard timescale.installed, let version = timescale.version else {
            throw TSBackupError(.precondition, "TimescaleDB is not installed in database \"\(request.settings.database)\" of \(request.settings.displayName), so it has no hypertables. Check --db; a plain table is copied with `pg_dump -t`.")
        }
        let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(name))"
        let relation = try await session.rows(
            "SELECT c.relkind::text, has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = \(schema) AND c.relname = \(name)",
            as: (String, Bool).self, purpose: "looking up \(schema).\(name)").first
        guard let relation else {
            throw TSBackupError(.notFound, "There is no table \(schema).\(name) in database \"\(request.settings.database)\" of \(request.settings.displayName). Check --table (SCHEMA.NAME); `tsbackup inspect --db ...` lists the hypertables.")
        }
        let isHypertable = try await session.value(
            "SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = \(schema) AND table_name = \(name))",
            as: Bool.self, purpose: "checking that \(schema).\(name) is a hypertable")
        guard isHypertable else {
            throw TSBackupError(.usage, "\(schema).\(name) is a plain table (relkind \(relation.0)), not a hypertable; export-hypertable copies hypertables only. For a plain table `pg_dump -t \(schema).\(name)` is enough.")
        }
        guard relation.1 else {
            throw TSBackupError(.permission, "Role \"\(request.settings.user)\" cannot read \(schema).\(name) on \(request.settings.displayName). Ask its owner for GRANT SELECT ON \(qualified) TO \(quoteIdentifier(request.settings.user)), or export as the owner.")
        }
        let (primaryColumn, primaryType, integerTime) = try await session.row(
            """
            SELECT d.column_name::text, format_type(d.column_type, NULL),
                   d.column_type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
            FROM _timescaledb_catalog.dimension d JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id
            WHERE h.schema_name = \(schema) AND h.table_name = \(name) AND d.interval_length IS NOT NULL
            ORDER BY d.id LIMIT 1
            """, as: (String, String, Bool).self, purpose: "reading the primary dimension of \(schema).\(name)")

        var conditions: [String] = []
        var literals: [String: String] = [:]
        for (option, value, op) in [("--since", request.since, ">="), ("--until", request.until, "<")] {
            guard let value else { continue }
            let literal = "\(SQLLiteral.quote(value))::\(primaryType)"
            do {
                try await session.execute("SELECT \(literal)", purpose: "checking \(option)")
            } catch let error as TSBackupError where error.kind == .failed {
                throw TSBackupError(.usage, "\(option) \(value) is not a value of \(schema).\(name)'s time column \(primaryColumn) (\(primaryType)): \(error.message) Give a \(integerTime ? "whole number" : "timestamp such as 2026-01-05 or 2026-01-05 12:00:00+00 (UTC unless an offset is given)").")
            }
            conditions.append("\(quoteIdentifier(primaryColumn)) \(op) \(literal)")
            literals[option] = literal
        }
        if let since = request.since, let until = request.until {
            let empty = try await session.value(PostgresQuery(unsafeSQL: "SELECT NOT (\(SQLLiteral.quote(since))::\(primaryType) < \(SQLLiteral.quote(until))::\(primaryType))"), as: Bool.self)
            if empty {
                throw TSBackupError(.usage, "--since \(since) is not before --until \(until): the window [since, until) holds no rows. Swap or correct them.")
            }
        }

        let pgDump = try await PostgresTools.locate("pg_dump", minimumMajor: server.majorVersion)
        let psql = try await PostgresTools.locate("psql", minimumMajor: server.majorVersion)
        let compressor = try Compressor.locate()
        return Plan(schema: schema, name: name, qualified: qualified, server: server,
                    timescaledb: .init(version: version, catalogVersion: timescale.catalogVersion, license: timescale.license, schema: timescale.schema ?? "public"),
                    pgDump: pgDump, psql: psql, compressor: compressor.compress, compressorName: compressor.name,
                    primaryColumn: primaryColumn, primaryType: primaryType, integerTime: integerTime,
                    condition: conditions.isEmpty ? nil : conditions.joined(separator: " AND "),
                    sinceLiteral: literals["--since"], untilLiteral: literals["--until"])
    }

    static func execute(_ request: Request, plan: Plan, session: DatabaseSession, repository: any Repository,
                        warnings initialWarnings: [String]) async throws -> HypertableManifest {
        let id = try await repository.newID()
        let started = Date()
        let staged = try await repository.beginEntry(id)
        let staging = staged.directory
        var manifest = HypertableManifest(
            id: id, status: .failed, error: nil, startedAt: started, finishedAt: started, durationSeconds: 0,
            tsbackupVersion: TSBackupVersion.current,
            source: .init(host: request.settings.host, port: request.settings.port, database: request.settings.database, user: request.settings.user),
            server: plan.server, pgDump: plan.pgDump, psql: plan.psql, timescaledb: plan.timescaledb,
            table: .init(schema: plan.schema, name: plan.name, owner: ""), columns: [], dimensions: [],
            compression: .init(enabled: false, segmentBy: [], orderBy: []), jobs: [],
            window: request.since == nil && request.until == nil ? nil : .init(column: plan.primaryColumn, since: request.since, until: request.until),
            definitionFile: "schema.sql", definitionObjects: [], definitionRemoved: [], dataFormat: "text",
            compressionProgram: plan.compressorName, parallelJobs: max(1, request.jobs), dataFiles: [],
            rowCount: 0, contentHash: "", files: [], warnings: initialWarnings)
        do {
            try await TableContent.prepare(session)
            try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            let snapshot = try await session.value("SELECT pg_export_snapshot()", as: String.self)
            let result: (Int64, String)
            do {
                try await describe(plan: plan, session: session, into: &manifest)
                let layout = try await layout(plan: plan, session: session)
                if !layout.tieredChunks.isEmpty {
                    throw TSBackupError(.precondition, "\(plan.schema).\(plan.name) has tiered (OSM) chunks whose rows live outside PostgreSQL: \(layout.tieredChunks.map(\.display).joined(separator: ", ")). export-hypertable copies only chunks stored in the database and would leave those rows out, so nothing was exported. Move the tiered data back into the database first (untier_chunk), then export again.")
                }
                manifest.continuousAggregates = layout.continuousAggregates
                if !layout.continuousAggregates.isEmpty {
                    manifest.warnings.append("Continuous aggregates on \(plan.schema).\(plan.name) are not part of the export (their definitions and materialized rows are not copied): \(layout.continuousAggregates.joined(separator: ", ")). Recreate them on the target after importing, or use `tsbackup backup` for the whole database.")
                }
                let chunks = layout.chunks
                if !chunks.isEmpty {
                    // Holding the chunks keeps retention from dropping one before its psql reads it.
                    try await session.execute("LOCK TABLE \(chunks.map(\.qualified).joined(separator: ", ")) IN ACCESS SHARE MODE",
                                              purpose: "locking the chunks of \(plan.schema).\(plan.name)")
                }
                try await dumpDefinition(request, plan: plan, snapshot: snapshot, staging: staging, into: &manifest)
                try FileManager.default.createDirectory(atPath: staging + "/data", withIntermediateDirectories: false)
                let copied = try await copyChunks(chunks, layout: layout, request: request, plan: plan, snapshot: snapshot, staging: staging,
                                                  columns: manifest.columns)
                manifest.dataFiles = copied.map(\.0)
                let copies = copied.flatMap(\.1)
                let primaryDimension = layout.dimensions.first(where: \.open)?.id
                manifest.chunks = copies.map { copy in
                    let primary = copy.chunk.slices.first { $0.dimensionID == primaryDimension }
                    return .init(name: copy.chunk.display, state: copy.chunk.state, status: Int(copy.chunk.status), rows: copy.copied,
                                 rootRows: copy.root?.count, file: copy.file, rangeStart: primary?.start, rangeEnd: primary?.end)
                }

                // The figures of record come from the hypertable root on this snapshot, never
                // from what was copied. Where every chunk's range is expressible the per-chunk
                // root parts make up the hash, and the root's own count of the window proves
                // they cover every row; otherwise the root is hashed whole.
                let rowList = manifest.columns.map { quoteIdentifier($0.name) }.joined(separator: ", ")
                let perChunk = copies.allSatisfy { $0.root != nil }
                let whole: ContentParts? = perChunk ? nil : try await ContentParts.measure(
                    session, rowsQuery: ChunkCatalog.rootRowsQuery(root: plan.qualified, columns: rowList, conditions: [plan.condition]),
                    purpose: "hashing \(plan.schema).\(plan.name) through its root")
                let rootRows: Int64
                if let whole {
                    rootRows = whole.count
                } else {
                    rootRows = try await session.value(
                        PostgresQuery(unsafeSQL: ChunkCatalog.rootCountQuery(root: plan.qualified, conditions: [plan.condition])),
                        as: Int64.self, purpose: "counting \(plan.schema).\(plan.name) through its root")
                }
                let check = RootCheck(copies: copies, rootRows: rootRows)
                if let failure = check.failure(table: "\(plan.schema).\(plan.name)", window: manifest.windowDescription) {
                    throw failure
                }
                result = try await ContentParts.combine(whole.map { [$0] } ?? copies.compactMap(\.root), session: session)
            } catch {
                _ = try? await session.execute("ROLLBACK")
                throw error
            }
            _ = try? await session.execute("COMMIT")
            let (rows, hash) = result
            manifest.rowCount = rows
            manifest.contentHash = hash
            let copied = manifest.dataFiles.reduce(0) { $0 + $1.rows }
            guard copied == rows else {
                throw TSBackupError(.failed, "The data files hold \(copied) rows but the hypertable root holds \(rows) in \(plan.schema).\(plan.name) (\(manifest.windowDescription)); the export is inconsistent and was not kept. Run it again; if it repeats, report it with the server version.")
            }

            manifest.files = try await FileSystem.hashFiles(under: staging)
            manifest.markFinished(.complete)
            return try await repository.commitEntry(staged, manifest: manifest)
        } catch {
            let failure = (error as? TSBackupError) ?? TSBackupError(.failed, "The export failed: \(error)")
            manifest.markFinished(.failed, error: failure.message)
            await repository.failEntry(staged, manifest: manifest)
            throw failure
        }
    }

    /// Columns, dimensions, compression settings and jobs, read from the catalog in the snapshot.
    static func describe(plan: Plan, session: DatabaseSession, into manifest: inout HypertableManifest) async throws {
        let (schema, name) = (plan.schema, plan.name)
        manifest.table.owner = try await session.value(
            "SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = \(schema) AND c.relname = \(name)",
            as: String.self, purpose: "reading the owner of \(schema).\(name)")
        manifest.columns = try await session.rows(
            PostgresQuery(unsafeSQL: """
            SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated <> ''
            FROM pg_attribute a WHERE a.attrelid = \(SQLLiteral.quote(plan.qualified))::regclass
              AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """), as: (String, String, Bool, Bool).self, purpose: "reading the columns of \(schema).\(name)"
        ).map { .init(name: $0.0, type: $0.1, notNull: $0.2, generated: $0.3) }
        let dimensions = try await session.rows(
            """
            SELECT d.column_name::text, format_type(d.column_type, NULL), d.interval_length, d.num_slices::int8,
                   CASE WHEN d.interval_length IS NOT NULL AND d.column_type IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                        THEN justify_hours(d.interval_length * interval '1 microsecond')::text END,
                   CASE WHEN d.partitioning_func IS NOT NULL THEN format('%I.%I', d.partitioning_func_schema, d.partitioning_func) END,
                   CASE WHEN d.integer_now_func IS NOT NULL THEN format('%I.%I', d.integer_now_func_schema, d.integer_now_func) END
            FROM _timescaledb_catalog.dimension d JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id
            WHERE h.schema_name = \(schema) AND h.table_name = \(name) ORDER BY d.id
            """, as: (String, String, Int64?, Int64?, String?, String?, String?).self, purpose: "reading the dimensions of \(schema).\(name)")
        manifest.dimensions = dimensions.enumerated().map { index, d in
            .init(number: index + 1, column: d.0, columnType: d.1, kind: d.2 == nil ? "space" : "time",
                  intervalLength: d.2, timeInterval: d.4, partitions: d.3.map(Int.init),
                  partitioningFunction: d.5, integerNowFunction: d.6)
        }
        let enabled = try await session.value(
            "SELECT coalesce((SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_schema = \(schema) AND hypertable_name = \(name)), false)",
            as: Bool.self, purpose: "reading the compression state of \(schema).\(name)")
        manifest.compression.enabled = enabled
        if enabled {
            let settings = try await session.rows(
                """
                SELECT attname::text, segmentby_column_index::int8, orderby_column_index::int8, orderby_asc, orderby_nullsfirst
                FROM timescaledb_information.compression_settings WHERE hypertable_schema = \(schema) AND hypertable_name = \(name)
                """, as: (String, Int64?, Int64?, Bool?, Bool?).self, purpose: "reading the compression settings of \(schema).\(name)")
            manifest.compression.segmentBy = settings.filter { $0.1 != nil }.sorted { $0.1! < $1.1! }.map(\.0)
            manifest.compression.orderBy = settings.filter { $0.2 != nil }.sorted { $0.2! < $1.2! }.map { s in
                "\(SQLText.identifier(s.0))\(s.3 == false ? " DESC" : "")\(s.4 == true ? " NULLS FIRST" : (s.3 == false ? " NULLS LAST" : ""))"
            }
        }
        manifest.jobs = try await session.rows(
            """
            SELECT job_id::int8, proc_name::text, schedule_interval::text, config::text
            FROM timescaledb_information.jobs WHERE hypertable_schema = \(schema) AND hypertable_name = \(name) ORDER BY job_id
            """, as: (Int64, String, String, String?).self, purpose: "reading the jobs of \(schema).\(name)"
        ).map { .init(id: Int($0.0), procedure: $0.1, scheduleInterval: $0.2, config: $0.3) }
    }

    typealias Chunk = ChunkCatalog.Chunk

    /// What the catalog says about the hypertable in the snapshot: its dimensions, the chunks
    /// holding rows of the window in time order, and the tiered chunks and continuous aggregates
    /// an export cannot carry.
    struct Layout {
        var hypertableID: Int32
        var dimensions: [ChunkCatalog.Dimension]
        var chunks: [Chunk]
        var tieredChunks: [Chunk]
        var continuousAggregates: [String]
    }

    static func layout(plan: Plan, session: DatabaseSession) async throws -> Layout {
        let hypertableID = try await session.value(
            "SELECT id FROM _timescaledb_catalog.hypertable WHERE schema_name = \(plan.schema) AND table_name = \(plan.name)",
            as: Int32.self, purpose: "looking up the catalog id of \(plan.schema).\(plan.name)")
        let dimensions = try await ChunkCatalog.dimensions(hypertableID: hypertableID, session: session)
        let catalog = try await ChunkCatalog.chunks(hypertableID: hypertableID, session: session)
        // timescaledb_information.chunks gives the window's chunks in time order (it leaves out
        // dropped and tiered chunks); the catalog rows give their compression state and ranges.
        let ordered = try await windowChunkNames(plan: plan, session: session)
        let byName = Dictionary(catalog.map { ($0.display, $0) }, uniquingKeysWith: { first, _ in first })
        var chunks: [Chunk] = []
        for name in ordered {
            guard let chunk = byName[name] else {
                throw TSBackupError(.failed, "Chunk \(name) of \(plan.schema).\(plan.name) is listed by timescaledb_information.chunks but not in _timescaledb_catalog.chunk; the catalog is inconsistent. Nothing was exported; report it with the TimescaleDB version.")
            }
            chunks.append(chunk)
        }
        let caggs = try await session.values(
            """
            SELECT format('%s.%s', ca.user_view_schema, ca.user_view_name) FROM _timescaledb_catalog.continuous_agg ca
            WHERE ca.raw_hypertable_id = \(hypertableID) ORDER BY 1
            """, as: String.self, purpose: "listing the continuous aggregates on \(plan.schema).\(plan.name)")
        return Layout(hypertableID: hypertableID, dimensions: dimensions, chunks: chunks,
                      tieredChunks: catalog.filter(\.osm), continuousAggregates: caggs)
    }

    /// "schema.name" of the chunks holding rows of the window, in time order.
    static func windowChunkNames(plan: Plan, session: DatabaseSession) async throws -> [String] {
        var overlap = ""
        let (start, end) = plan.integerTime ? ("c.range_start_integer", "c.range_end_integer") : ("c.range_start", "c.range_end")
        if let since = plan.sinceLiteral { overlap += " AND \(end) > \(since)" }
        if let until = plan.untilLiteral { overlap += " AND \(start) < \(until)" }
        return try await session.values(
            PostgresQuery(unsafeSQL: """
            SELECT format('%s.%s', c.chunk_schema, c.chunk_name)
            FROM timescaledb_information.chunks c
            WHERE c.hypertable_schema = \(SQLLiteral.quote(plan.schema))
              AND c.hypertable_name = \(SQLLiteral.quote(plan.name))\(overlap)
            ORDER BY c.range_start, c.range_start_integer, c.chunk_name
            """), as: String.self, purpose: "listing the chunks of \(plan.schema).\(plan.name)")
    }

    /// `pg_dump --schema-only --table` on the snapshot, without TimescaleDB's insert blocker.
    static func dumpDefinition(_ request: Request, plan: Plan, snapshot: String, staging: String,
                               into manifest: inout HypertableManifest) async throws {
        let environment = request.settings.childProcessEnvironment()
        let result = try await ProcessRunner.run(plan.pgDump.path, [
            "--schema-only", "--table=\(plan.qualified)", "--snapshot=\(snapshot)", "--no-password", request.settings.database,
        ], environment: environment)
        guard result.succeeded else {
            throw TSBackupError(.failed, "pg_dump could not dump the definition of \(plan.schema).\(plan.name) (\(result.statusDescription)): \(result.standardError.singleLine(limit: 500)).")
        }
        let (text, removed) = TableDefinition.removing(from: result.standardOutput, where: TableDefinition.isInsertBlocker)
        let definition = TableDefinition(pgDumpOutput: text)
        guard definition.objects.contains(where: { $0.type == "TABLE" }) else {
            throw TSBackupError(.failed, "pg_dump's schema dump of \(plan.schema).\(plan.name) holds no CREATE TABLE; the export was not kept. Check pg_dump's version (\(plan.pgDump.version)).")
        }
        manifest.definitionObjects = definition.objects.map { .init(type: $0.type, name: $0.name) }
        manifest.definitionRemoved = removed.map { "\($0.type) \($0.name)" }
        do {
            try text.write(toFile: staging + "/" + manifest.definitionFile, atomically: false, encoding: .utf8)
        } catch {
            throw FileSystem.ioError("write \(manifest.definitionFile)", underlying: error)
        }
    }

    /// Consecutive chunks grouped into files of about `limit` bytes (table size on disk): a psql
    /// per chunk would spend more time connecting than copying when chunks are small, while a
    /// few files per job keep the jobs busy.
    static func batches(_ chunks: [Chunk], jobs: Int, chunksPerFile: Int? = nil) -> [[Chunk]] {
        let total = chunks.reduce(0) { $0 + $1.bytes }
        let limit = min(256 << 20, max(8 << 20, total / Int64(max(1, jobs) * 2)))
        var batches: [[Chunk]] = []
        var current: [Chunk] = []
        var size: Int64 = 0
        for chunk in chunks {
            if !current.isEmpty, size + chunk.bytes > limit || current.count >= (chunksPerFile ?? Int.max) {
                batches.append(current)
                current = []
                size = 0
            }
            current.append(chunk)
            size += chunk.bytes
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// What one chunk's copy gave, beside what the hypertable root holds in the chunk's range.
    struct ChunkCopy: Sendable {
        var chunk: Chunk
        var file: String
        /// Rows psql sent for this chunk's COPY.
        var copied: Int64
        /// Count and hash through the hypertable root restricted to the chunk's range (and the
        /// window); nil when the range cannot be written as a condition (see
        /// ``ChunkCatalog/rangeCondition(of:dimensions:)``).
        var root: ContentParts?
    }

    /// One psql per batch of chunks, `jobs` at a time, each on the exported snapshot. Each chunk
    /// is read by a planned `SELECT` on the chunk without `ONLY`, which TimescaleDB decompresses;
    /// beside each psql a session of ours counts and hashes the same chunk's rows through the
    /// hypertable root in the same snapshot: the independent figures the copies are checked against.
    static func copyChunks(_ chunks: [Chunk], layout: Layout, request: Request, plan: Plan, snapshot: String, staging: String,
                           columns: [HypertableManifest.Column]) async throws -> [(HypertableManifest.DataFile, [ChunkCopy])] {
        let environment = request.settings.childProcessEnvironment()
        let copyList = columns.filter { !$0.generated }.map { quoteIdentifier($0.name) }.joined(separator: ", ")
        let rowList = columns.map { quoteIdentifier($0.name) }.joined(separator: ", ")
        let suffix = plan.compressorName == "zstd" ? "zst" : "gz"
        let settings = request.settings
        let shortened = TestSeams.shortCopyChunk()
        let jobs = batches(chunks, jobs: request.jobs, chunksPerFile: request.chunksPerFile).enumerated().map { index, batch in
            (batch, String(format: "data/%05d.copy.%@", index + 1, suffix))
        }
        return try await Concurrently.map(jobs, limit: max(1, request.jobs)) { batch, path in
            let statements = batch.map { chunk in
                "COPY (\(ChunkCatalog.chunkRowsQuery(chunk, columns: copyList, window: plan.condition, shortenForTest: chunk.display == shortened))) TO STDOUT;\n\(CopyPipeline.markerCommand)"
            }
            let script = """
                BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
                SET TRANSACTION SNAPSHOT '\(snapshot)';
                \(TableContent.settings.map { "SET LOCAL " + $0 + ";" }.joined(separator: "\n"))
                \(statements.joined(separator: "\n"))
                COMMIT;

                """
            let what = batch.count == 1 ? "chunk \(batch[0].display)" : "\(batch.count) chunks (\(batch[0].display) ...)"
            async let roots = DatabaseSession.with(settings) { session -> [ContentParts?] in
                try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                try await session.execute("SET TRANSACTION SNAPSHOT '\(snapshot)'")
                try await TableContent.prepare(session)
                var parts: [ContentParts?] = []
                for chunk in batch {
                    guard let range = ChunkCatalog.rangeCondition(of: chunk, dimensions: layout.dimensions) else {
                        parts.append(nil)
                        continue
                    }
                    let rows = ChunkCatalog.rootRowsQuery(root: plan.qualified, columns: rowList, conditions: [range, plan.condition])
                    parts.append(try await ContentParts.measure(session, rowsQuery: rows, purpose: "counting the rows of \(chunk.display)'s range through \(plan.schema).\(plan.name)"))
                }
                try await session.execute("COMMIT")
                return parts
            }
            let exported: CopyPipeline.Exported
            do {
                exported = try await CopyPipeline.export(
                    psql: plan.psql.path, environment: environment, script: script, compressor: plan.compressor,
                    outputPath: staging + "/" + path, what: "\(what) of \(plan.schema).\(plan.name)")
            } catch {
                _ = try? await roots
                throw error
            }
            let measured = try await roots
            guard exported.rowsPerPart.count == batch.count, exported.rowsPerPart.reduce(0, +) == exported.rows else {
                throw TSBackupError(.failed, "psql's output for \(what) did not separate into one part per chunk (\(exported.rowsPerPart.count) parts for \(batch.count) chunks, \(exported.rows) rows); the export is inconsistent and was not kept. Report it with the psql version (\(plan.psql.version)).")
            }
            let copies = batch.indices.map { i in
                ChunkCopy(chunk: batch[i], file: path, copied: exported.rowsPerPart[i], root: measured[i])
            }
            return (HypertableManifest.DataFile(path: path, chunks: batch.map(\.display), rows: exported.rows, rawBytes: exported.rawBytes), copies)
        }
    }

    /// The export's own figures, all through the hypertable root on the export's snapshot, and
    /// every way the copies disagree with them. Pure, so each failure can be tested.
    struct RootCheck: Equatable {
        /// Chunks whose copy gave another count than the root holds in their range:
        /// (chunk, state, copied, root).
        var chunkDifferences: [(String, String, Int64, Int64)]
        /// Rows the root holds in the window, and rows the per-chunk root counts add up to (nil
        /// when some chunk's range could not be expressed).
        var rootRows: Int64
        var rootRowsInChunkRanges: Int64?
        var copiedRows: Int64

        static func == (a: RootCheck, b: RootCheck) -> Bool {
            a.chunkDifferences.elementsEqual(b.chunkDifferences, by: { $0 == $1 }) && a.rootRows == b.rootRows
                && a.rootRowsInChunkRanges == b.rootRowsInChunkRanges && a.copiedRows == b.copiedRows
        }

        init(copies: [ChunkCopy], rootRows: Int64) {
            chunkDifferences = copies.compactMap { copy in
                guard let root = copy.root, root.count != copy.copied else { return nil }
                return (copy.chunk.display, copy.chunk.state, copy.copied, root.count)
            }
            self.rootRows = rootRows
            rootRowsInChunkRanges = copies.allSatisfy { $0.root != nil } ? copies.reduce(0) { $0 + ($1.root?.count ?? 0) } : nil
            copiedRows = copies.reduce(0) { $0 + $1.copied }
        }

        var passed: Bool {
            chunkDifferences.isEmpty && copiedRows == rootRows && (rootRowsInChunkRanges.map { $0 == rootRows } ?? true)
        }

        /// The failure, naming every chunk that differs.
        func failure(table: String, window: String) -> TSBackupError? {
            guard !passed else { return nil }
            var parts: [String] = []
            if !chunkDifferences.isEmpty {
                parts.append("these chunks' copies differ from what the hypertable root holds in their ranges: "
                    + chunkDifferences.map { "\($0.0) (\($0.1)) copied \($0.2) of \($0.3) rows" }.joined(separator: "; "))
            }
            if let inRanges = rootRowsInChunkRanges, inRanges != rootRows {
                parts.append("the root holds \(rootRows) rows in the window but only \(inRanges) fall in the listed chunks' ranges (rows in chunks the export does not list, such as tiered ones)")
            }
            if copiedRows != rootRows {
                parts.append("\(copiedRows) rows were copied in all, the root holds \(rootRows)")
            }
            return TSBackupError(.failed, "The export of \(table) (\(window)) is incomplete and was not kept (its entry is marked failed): \(parts.joined(separator: "; ")). Reads that skip compressed rows cause this; check that the role may read the chunks and that nothing sets timescaledb.enable_transparent_decompression off, then export again; if it repeats, report it with the TimescaleDB version.")
        }
    }
}

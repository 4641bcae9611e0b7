import Foundation
import PostgresNIO

/// The figures a manifest records about a database, read in one snapshot: the one pg_dump
/// reads, so they describe exactly what the archive holds.
public struct DatabaseSurvey: Sendable {
    public var timescaledb: BackupManifest.TimescaleDB?
    public var extensions: [ServerInspection.Extension]
    public var hypertables: [BackupManifest.Hypertable]
    public var plainTables: [BackupManifest.PlainTable]
    public var jobs: [BackupManifest.Job]
    /// Every chunk table, "schema.name", for checking the archive's table of contents.
    public var chunkTables: [String]
    public var databaseBytes: Int64
    /// The catalog id of each of `chunkTables`, in the same (id) order, so that the batched
    /// path's lists name chunks with these same strings instead of copies.
    var chunkIDs: [Int] = []

    /// Reads everything in the transaction `session` has open. With `checksums`, also an
    /// order-independent hash of every table's rows (one scan per table).
    /// Hypertables in `countedElsewhere` ("schema.name") are not counted here: their chunks are
    /// counted batch by batch (BatchedDump), since a count through the root would lock them all.
    public static func take(_ session: DatabaseSession, checksums: Bool, excludedTables: Set<String> = [],
                            countedElsewhere: Set<String> = []) async throws -> DatabaseSurvey {
        try await TableContent.prepare(session)
        let inspector = ServerInspector(session: session)
        let timescale = try await inspector.timescaleDB()
        var survey = DatabaseSurvey(
            timescaledb: timescale.version.map {
                .init(version: $0, catalogVersion: timescale.catalogVersion, license: timescale.license, schema: timescale.schema ?? "public")
            },
            extensions: try await inspector.otherExtensions(),
            hypertables: [], plainTables: [], jobs: [], chunkTables: [],
            databaseBytes: try await session.value("SELECT pg_database_size(current_database())", as: Int64.self))

        if timescale.installed {
            for table in try await inspector.hypertables() {
                let qualified = "\(quoteIdentifier(table.schema)).\(quoteIdentifier(table.name))"
                let (rows, hash) = countedElsewhere.contains("\(table.schema).\(table.name)")
                    ? (0, nil) : try await TableContent.measure(session, table: qualified, hash: checksums)
                let (indexes, constraints, foreignKeys) = try await TableContent.structure(session, table: qualified)
                survey.hypertables.append(.init(
                    schema: table.schema, name: table.name, owner: table.owner, dimensions: table.dimensions,
                    chunkCount: table.chunkCount, rowCount: rows, totalBytes: table.totalBytes,
                    indexCount: Int(indexes), constraintCount: Int(constraints), foreignKeyCount: Int(foreignKeys),
                    contentHash: hash))
            }
            (survey.chunkIDs, survey.chunkTables) = try await chunkTables(session)
            survey.jobs = try await session.rows(
                """
                SELECT j.id::int8, j.application_name::text, format('%s.%s', j.proc_schema, j.proc_name), j.owner::text,
                       (SELECT format('%s.%s', h.schema_name, h.table_name) FROM _timescaledb_catalog.hypertable h WHERE h.id = j.hypertable_id)
                FROM _timescaledb_config.bgw_job j WHERE j.id >= 1000 ORDER BY j.id
                """, as: (Int64, String, String, String, String?).self, purpose: "listing background jobs"
            ).map { .init(id: Int($0.0), application: $0.1, procedure: $0.2, owner: $0.3, hypertable: $0.4) }
        }

        for (schema, name, bytes) in try await plainTables(session, timescaleInstalled: timescale.installed) {
            guard !excludedTables.contains("\(schema).\(name)") else { continue }
            let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(name))"
            let (rows, hash) = try await TableContent.measure(session, table: qualified, hash: checksums)
            survey.plainTables.append(.init(schema: schema, name: name, rowCount: rows, totalBytes: bytes, contentHash: hash))
        }
        return survey
    }

    /// Every chunk table ("schema.name", not dropped) in id order, read in pages: PostgresNIO
    /// holds a whole result before it is decoded, and 50,000 rows at once were megabytes twice.
    static func chunkTables(_ session: DatabaseSession) async throws -> (ids: [Int], names: [String]) {
        var ids: [Int] = []
        var names: [String] = []
        var after: Int64 = -1
        while true {
            let page = try await session.rows(
                """
                SELECT id::int8, format('%s.%s', schema_name, table_name) FROM _timescaledb_catalog.chunk
                WHERE NOT dropped AND id > \(after) ORDER BY id LIMIT \(ChunkPathDetector.listingPage)
                """, as: (Int64, String).self, purpose: "listing chunks")
            ids.append(contentsOf: page.lazy.map { Int($0.0) })
            names.append(contentsOf: page.lazy.map(\.1))
            guard Int64(page.count) == ChunkPathDetector.listingPage, let last = page.last else { return (ids, names) }
            after = last.0
        }
    }

    /// User tables that are neither hypertables, chunks nor extension members: (schema, name, bytes).
    static func plainTables(_ session: DatabaseSession, timescaleInstalled: Bool) async throws -> [(String, String, Int64)] {
        try await session.rows(
            PostgresQuery(unsafeSQL: """
            SELECT n.nspname::text, c.relname::text, pg_total_relation_size(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE \(ServerInspector.plainTableCondition(timescaleInstalled: timescaleInstalled))
            ORDER BY 1, 2
            """), as: (String, String, Int64).self, purpose: "listing plain tables")
    }
}

/// Row counts and content hashes of tables, computed the same way at backup and after restore.
public enum TableContent {
    /// Makes every value's text form independent of the session's settings.
    public static func prepare(_ session: DatabaseSession) async throws {
        for setting in settings {
            try await session.execute("SET " + setting)
        }
    }

    /// The settings ``prepare(_:)`` makes, as `name = value`; also used by psql children that
    /// must print values the same way.
    ///
    /// The two TimescaleDB settings make every read see the rows of compressed chunks: with
    /// either one off (a role or database default can do that), TimescaleDB's planner does not
    /// decompress, and a hypertable read silently returns only the uncompressed rows. Where
    /// TimescaleDB is not loaded they are inert placeholders.
    public static let settings = ["TimeZone = 'UTC'", "DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'",
                                  "extra_float_digits = 3", "bytea_output = 'hex'",
                                  "timescaledb.enable_optimizations = on", "timescaledb.enable_transparent_decompression = on"]

    /// Index, constraint and foreign-key counts of a table: a restore without pre_restore loses
    /// foreign keys silently, so they are recorded at backup and compared after restore.
    public static func structure(_ session: DatabaseSession, table qualifiedName: String) async throws -> (indexes: Int64, constraints: Int64, foreignKeys: Int64) {
        try await session.row(
            PostgresQuery(unsafeSQL: """
            SELECT (SELECT count(*) FROM pg_index WHERE indrelid = c.oid),
                   (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid),
                   (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'f')
            FROM pg_class c WHERE c.oid = \(SQLLiteral.quote(qualifiedName))::regclass
            """), as: (Int64, Int64, Int64).self, purpose: "counting indexes and constraints of \(qualifiedName)")
    }

    /// The exact row count and, when asked, an order-independent hash of the rows: the sums of
    /// the two halves of each row's md5 (sums, not XOR, so duplicate rows count), with the count,
    /// hashed once more. Identical for the same rows in any physical order or chunk layout.
    ///
    /// The rows are read through a subquery (`SELECT *`), the form whose decompression of
    /// compressed chunks was measured on a full TimescaleDB build, so `t` is a row built from the
    /// columns rather than a whole-row reference into TimescaleDB's decompression node; the text
    /// of each row, and so the hash, is the same either way.
    public static func measure(_ session: DatabaseSession, table qualifiedName: String, hash: Bool) async throws -> (Int64, String?) {
        guard hash else {
            return (try await session.value(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(qualifiedName)"), as: Int64.self,
                                            purpose: "counting the rows of \(qualifiedName)"), nil)
        }
        // The whole table as one part: the same SQL and figures batches of chunks are hashed by.
        let whole = try await ContentParts.measure(session, rowsQuery: "SELECT * FROM \(qualifiedName)", purpose: "hashing the rows of \(qualifiedName)")
        return (whole.count, whole.hash)
    }
}

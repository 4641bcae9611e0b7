import Foundation
import PostgresNIO

/// Reads of a big hypertable through its root, a window of chunks at a time.
///
/// A query on the root locks every chunk it plans over until its transaction ends; with tens of
/// thousands of chunks that is more than the lock table holds (the same "out of shared memory" as
/// pg_dump). TimescaleDB excludes chunks at planning time when the predicate on the primary
/// dimension is a constant, so a query with `time >= 'a' AND time < 'b'` locks only the chunks of
/// that range. Windows follow the primary dimension's slices in the restored catalog, so the
/// count still goes through the root (proving the catalog links every chunk) without locking more
/// than a window's chunks at once.
enum RootWindows {
    /// SQL predicates on the root covering all its rows, each over at most `limit` chunks; nil
    /// when the hypertable is small enough for one query or its time type is not handled.
    static func predicates(_ session: DatabaseSession, schema: String, name: String, limit: Int) async throws -> [String]? {
        let dimension = try await session.rows(
            """
            SELECT d.id::int8, d.column_name::text, format_type(d.column_type, NULL),
                   (SELECT count(*) FROM _timescaledb_catalog.chunk c WHERE c.hypertable_id = h.id AND NOT c.dropped)
            FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.dimension d ON d.hypertable_id = h.id
            WHERE h.schema_name = \(schema) AND h.table_name = \(name) AND d.interval_length IS NOT NULL
            ORDER BY d.id LIMIT 1
            """, as: (Int64, String, String, Int64).self, purpose: "reading the time dimension of \(schema).\(name)").first
        guard let (dimensionID, column, type, chunks) = dimension, chunks > Int64(limit) else { return nil }
        let literal: (String) -> String
        switch type {
        case "timestamp with time zone":
            literal = { "_timescaledb_functions.to_timestamp(\($0))::text" }
        case "timestamp without time zone":
            literal = { "_timescaledb_functions.to_timestamp_without_timezone(\($0))::text" }
        case "date":
            literal = { "_timescaledb_functions.to_date(\($0))::text" }
        case "smallint", "integer", "bigint":
            literal = { "\($0)::text" }
        default:
            return nil
        }
        // Each time slice with the number of chunks using it (several with space partitions).
        let slices = try await session.rows(
            PostgresQuery(unsafeSQL: """
            SELECT s.range_start, s.range_end, \(literal("s.range_start")), \(literal("s.range_end")), count(cc.chunk_id)
            FROM _timescaledb_catalog.dimension_slice s
            JOIN _timescaledb_catalog.chunk_constraint cc ON cc.dimension_slice_id = s.id
            WHERE s.dimension_id = \(dimensionID)
            GROUP BY s.id, s.range_start, s.range_end ORDER BY s.range_start
            """), as: (Int64, Int64, String, String, Int64).self, purpose: "reading the time slices of \(schema).\(name)")
        guard !slices.isEmpty else { return nil }
        let quotedColumn = quoteIdentifier(column)
        let cast = type == "smallint" || type == "integer" || type == "bigint" ? "" : "::\(type)"
        func bound(_ text: String) -> String { SQLLiteral.quote(text) + cast }
        var predicates: [String] = []
        var start = 0
        var count: Int64 = 0
        for (index, slice) in slices.enumerated() {
            count += slice.4
            let last = index == slices.count - 1
            guard count >= Int64(limit) || last else { continue }
            // The first window is open below and the last open above, so no row falls outside.
            var parts: [String] = []
            if start > 0 { parts.append("\(quotedColumn) >= \(bound(slices[start].2))") }
            if !last { parts.append("\(quotedColumn) < \(bound(slice.3))") }
            predicates.append(parts.isEmpty ? "true" : parts.joined(separator: " AND "))
            start = index + 1
            count = 0
        }
        return predicates
    }

    /// Chunks per window on this server: the same share of its lock table a backup batch takes.
    static func limit(_ session: DatabaseSession) async throws -> Int {
        let budget = try await ServerInspector(session: session).lockBudget()
        return ChunkBatchPlan.chunksPerBatch(lockBudget: budget.budget, jobs: 1)
    }

    /// ``TableContent/measure`` of a hypertable through its root, window by window (each query
    /// its own transaction), with the same count and hash as one query would give.
    /// Each window's query runs on `sessions`, which moves to a new server session every few
    /// thousand chunks planned (``RotatingSessions``).
    static func measure(_ sessions: inout RotatingSessions, schema: String, name: String, hash: Bool, limit: Int) async throws -> (Int64, String?) {
        let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(name))"
        var session = try await sessions.session(planning: 0)
        guard let windows = try await predicates(session, schema: schema, name: name, limit: limit) else {
            session = try await sessions.session(planning: limit)
            return try await TableContent.measure(session, table: qualified, hash: hash)
        }
        var count: Int64 = 0
        var highs: [String] = []
        var lows: [String] = []
        for predicate in windows {
            session = try await sessions.session(planning: limit)
            let (rows, high, low) = try await session.row(
                PostgresQuery(unsafeSQL: hash ? """
                SELECT count(*),
                       coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8::numeric), 0)::text,
                       coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::int8::numeric), 0)::text
                FROM (SELECT md5(t::text) AS h FROM (SELECT * FROM \(qualified) WHERE \(predicate)) t) rows
                """ : "SELECT count(*), '0', '0' FROM \(qualified) t WHERE \(predicate)"), as: (Int64, String, String).self, purpose: "counting the rows of \(qualified) in windows of chunks")
            count += rows
            highs.append(high)
            lows.append(low)
        }
        guard hash else { return (count, nil) }
        let (high, low) = try await session.row(
            "SELECT coalesce(sum(x::numeric), 0)::text, coalesce((SELECT sum(y::numeric) FROM unnest(\(lows)::text[]) y), 0)::text FROM unnest(\(highs)::text[]) x",
            as: (String, String).self, purpose: "adding up the content hash of \(qualified)")
        return (count, "v1:" + FileSystem.sha256(of: Data("\(count):\(high):\(low)".utf8)))
    }
}

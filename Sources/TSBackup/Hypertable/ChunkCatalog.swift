import Foundation
import PostgresNIO

/// What TimescaleDB's catalog says about a hypertable's chunks, and the SQL that reads their rows.
///
/// A compressed chunk keeps its rows in a separate table (`_timescaledb_catalog.chunk.compressed_chunk_id`
/// points to it); the chunk's own table holds only rows written after compression. TimescaleDB's
/// planner decompresses when a query reaches the chunk through the hypertable or names the chunk
/// *without* `ONLY` (tsl `use_decompress_chunk_node`: "decompress unless it is SELECT * FROM ONLY
/// <chunk>"), and only while `timescaledb.enable_optimizations` and
/// `timescaledb.enable_transparent_decompression` are on. `COPY chunk TO` and `FROM ONLY chunk`
/// read the chunk's own table alone, so every per-chunk read here is a planned `SELECT` without
/// `ONLY`, and every session sets both settings (``TableContent/settings``).
enum ChunkCatalog {
    /// `_timescaledb_catalog.chunk.status` bits (TimescaleDB `src/chunk.h`).
    struct Status: OptionSet, Sendable, Equatable {
        let rawValue: Int32
        /// CHUNK_STATUS_COMPRESSED: the chunk's rows (or most of them) are in its compressed table.
        static let compressed = Status(rawValue: 1)
        /// CHUNK_STATUS_COMPRESSED_UNORDERED: rows inserted into a compressed chunk, order not kept.
        static let unordered = Status(rawValue: 2)
        /// CHUNK_STATUS_FROZEN: no inserts, updates or deletes allowed.
        static let frozen = Status(rawValue: 4)
        /// CHUNK_STATUS_COMPRESSED_PARTIAL: compressed, with uncompressed rows in the chunk's own table.
        static let partial = Status(rawValue: 8)
    }

    /// One dimension of the hypertable, as the catalog defines it.
    struct Dimension: Sendable, Equatable {
        var id: Int32
        var column: String
        /// `format_type` of the column.
        var columnType: String
        /// Open (time-like, interval partitioned) or closed (hash partitioned).
        var open: Bool
        /// `schema.function`, already quoted; nil when the column's own value is partitioned.
        var partitioningFunction: String?
    }

    /// One row of `_timescaledb_catalog.chunk` with its dimension slices.
    struct Chunk: Sendable, Equatable {
        var id: Int32
        var schema: String
        var table: String
        var status: Int32
        var compressedChunkID: Int32?
        /// A tiered (OSM) chunk: its rows live outside PostgreSQL.
        var osm: Bool
        /// Bytes to read: the chunk's table plus its compressed table.
        var bytes: Int64
        /// (dimension id, range start, range end) in TimescaleDB's internal unit, [start, end).
        var slices: [Slice]

        struct Slice: Sendable, Equatable {
            var dimensionID: Int32
            var start: Int64
            var end: Int64
        }

        var qualified: String { "\(quoteIdentifier(schema)).\(quoteIdentifier(table))" }
        var display: String { "\(schema).\(table)" }
        var flags: Status { Status(rawValue: status) }
        /// Compressed by either sign the catalog gives: the status bit or a compressed table.
        var isCompressed: Bool { flags.contains(.compressed) || compressedChunkID != nil }
        /// Compressed, with rows written afterwards still in the chunk's own table.
        var isPartiallyCompressed: Bool { isCompressed && flags.contains(.partial) }
        /// "compressed", "partially compressed" or "uncompressed", for messages and the manifest.
        var state: String { isPartiallyCompressed ? "partially compressed" : (isCompressed ? "compressed" : "uncompressed") }
    }

    /// The smallest and largest slice bounds: TimescaleDB's "no limit" (DIMENSION_SLICE_MINVALUE/MAXVALUE).
    static let unbounded: (Int64, Int64) = (Int64.min, Int64.max)

    /// The hypertable's dimensions, in creation order.
    static func dimensions(hypertableID: Int32, session: DatabaseSession) async throws -> [Dimension] {
        try await session.rows(
            """
            SELECT d.id, d.column_name::text, format_type(d.column_type, NULL), d.interval_length IS NOT NULL,
                   CASE WHEN d.partitioning_func IS NOT NULL THEN format('%I.%I', d.partitioning_func_schema, d.partitioning_func) END
            FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = \(hypertableID) ORDER BY d.id
            """, as: (Int32, String, String, Bool, String?).self, purpose: "reading the dimensions of hypertable \(hypertableID)"
        ).map { Dimension(id: $0.0, column: $0.1, columnType: $0.2, open: $0.3, partitioningFunction: $0.4) }
    }

    /// The catalog query listing a hypertable's chunks (not dropped ones), in id order.
    static func chunksQuery(hypertableID: Int32) -> String {
        """
        SELECT ch.id, ch.schema_name::text, ch.table_name::text, ch.status, ch.compressed_chunk_id, ch.osm_chunk,
               coalesce(pg_relation_size(to_regclass(format('%I.%I', ch.schema_name, ch.table_name))), 0)
                 + coalesce((SELECT pg_relation_size(to_regclass(format('%I.%I', cc.schema_name, cc.table_name)))
                             FROM _timescaledb_catalog.chunk cc WHERE cc.id = ch.compressed_chunk_id), 0),
               array_agg(ds.dimension_id ORDER BY ds.dimension_id), array_agg(ds.range_start ORDER BY ds.dimension_id),
               array_agg(ds.range_end ORDER BY ds.dimension_id)
        FROM _timescaledb_catalog.chunk ch
        JOIN _timescaledb_catalog.chunk_constraint con ON con.chunk_id = ch.id AND con.dimension_slice_id IS NOT NULL
        JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = con.dimension_slice_id
        WHERE ch.hypertable_id = \(hypertableID) AND NOT ch.dropped
        GROUP BY ch.id ORDER BY ch.id
        """
    }

    static func chunks(hypertableID: Int32, session: DatabaseSession) async throws -> [Chunk] {
        try await session.rows(
            PostgresQuery(unsafeSQL: chunksQuery(hypertableID: hypertableID)),
            as: (Int32, String, String, Int32, Int32?, Bool, Int64, [Int32], [Int64], [Int64]).self,
            purpose: "listing the chunks of hypertable \(hypertableID) from the catalog"
        ).map { row in
            Chunk(id: row.0, schema: row.1, table: row.2, status: row.3, compressedChunkID: row.4, osm: row.5, bytes: row.6,
                  slices: zip(row.7, zip(row.8, row.9)).map { Chunk.Slice(dimensionID: $0.0, start: $0.1.0, end: $0.1.1) })
        }
    }

    /// The column's value of a bound, as SQL: integer time compares as bigint; date and time
    /// types through TimescaleDB's own conversion (immutable, so chunk exclusion still applies).
    static func boundLiteral(_ value: Int64, columnType: String) -> String? {
        switch columnType {
        case "timestamp with time zone": "_timescaledb_functions.to_timestamp(\(value))"
        case "timestamp without time zone": "_timescaledb_functions.to_timestamp_without_timezone(\(value))"
        case "date": "_timescaledb_functions.to_date(\(value))"
        case "smallint", "integer", "bigint": "\(value)::int8"
        default: nil
        }
    }

    /// The condition on the hypertable's columns that selects exactly the rows TimescaleDB routes
    /// to `chunk`: every dimension's value within the chunk's slice. Nil when a dimension cannot
    /// be expressed (an open dimension with a custom partitioning function or an unknown type).
    static func rangeCondition(of chunk: Chunk, dimensions: [Dimension]) -> String? {
        var parts: [String] = []
        for slice in chunk.slices {
            guard let dimension = dimensions.first(where: { $0.id == slice.dimensionID }) else { return nil }
            let column = quoteIdentifier(dimension.column)
            let value: String
            let lower: String?
            let upper: String?
            if dimension.open {
                guard dimension.partitioningFunction == nil else { return nil }
                value = column
                guard let l = boundLiteral(slice.start, columnType: dimension.columnType),
                      let u = boundLiteral(slice.end, columnType: dimension.columnType) else { return nil }
                (lower, upper) = (slice.start == unbounded.0 ? nil : l, slice.end == unbounded.1 ? nil : u)
            } else {
                guard let function = dimension.partitioningFunction else { return nil }
                value = "\(function)(\(column))"
                (lower, upper) = (slice.start == unbounded.0 ? nil : "\(slice.start)::int8", slice.end == unbounded.1 ? nil : "\(slice.end)::int8")
            }
            if let lower { parts.append("\(value) >= \(lower)") }
            if let upper { parts.append("\(value) < \(upper)") }
        }
        return parts.isEmpty ? "true" : parts.joined(separator: " AND ")
    }

    /// The rows of one chunk, decompressed: a planned `SELECT` naming the chunk without `ONLY`.
    /// `shortenForTest` is the test seam's cut (see ``TestSeams``); false in every real run.
    static func chunkRowsQuery(_ chunk: Chunk, columns: String, window: String?, shortenForTest: Bool = false) -> String {
        "SELECT \(columns) FROM \(chunk.qualified)\(window.map { " WHERE \($0)" } ?? "")\(shortenForTest ? " OFFSET 1" : "")"
    }

    /// The rows the hypertable root holds in `condition` (a chunk's range and the window): the
    /// independent path the copies are checked against.
    static func rootRowsQuery(root: String, columns: String, conditions: [String?]) -> String {
        let all = conditions.compactMap { $0 }
        return "SELECT \(columns) FROM \(root)\(all.isEmpty ? "" : " WHERE " + all.map { "(\($0))" }.joined(separator: " AND "))"
    }

    /// The root's count of the rows in `conditions`.
    static func rootCountQuery(root: String, conditions: [String?]) -> String {
        rootRowsQuery(root: root, columns: "count(*)", conditions: conditions)
    }
}

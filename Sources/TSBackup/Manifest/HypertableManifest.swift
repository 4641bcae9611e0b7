import Foundation

/// What a single-hypertable export is: the table's definition, its TimescaleDB settings and its
/// rows (optionally a time window of them), with the figures an import checks itself against.
///
/// Stored as `manifest.json` with `"kind": "hypertable"`, written last. Documented in
/// `docs/manifest.md`.
public struct HypertableManifest: EntryManifest, Equatable {
    public static let kind = "hypertable"

    public var formatVersion: Int = 1
    public var kind: String = HypertableManifest.kind
    public var id: String
    public var status: BackupManifest.Status
    public var error: String?
    public var startedAt: Date
    public var finishedAt: Date
    public var durationSeconds: Double
    public var tsbackupVersion: String

    public var source: BackupManifest.Source
    public var server: ServerInspection.Server
    public var pgDump: PostgresTool
    public var psql: PostgresTool
    public var timescaledb: BackupManifest.TimescaleDB?

    public var table: Table
    public var columns: [Column]
    public var dimensions: [Dimension]
    public var compression: Compression
    public var jobs: [Job]
    public var window: Window?

    /// `pg_dump --schema-only --table` of the root table, without TimescaleDB's insert blocker.
    public var definitionFile: String
    /// What the definition holds: pg_dump's type and name of each object.
    public var definitionObjects: [DefinitionObject]
    /// Objects taken out of pg_dump's output ("TRIGGER readings ts_insert_blocker").
    public var definitionRemoved: [String]

    /// "text": COPY's text format, one row per line.
    public var dataFormat: String
    /// "zstd" or "gzip": the program that compressed the data files.
    public var compressionProgram: String
    public var parallelJobs: Int
    public var dataFiles: [DataFile]

    /// Rows exported, read in the export's snapshot.
    public var rowCount: Int64
    /// `TableContent` hash of exactly the exported rows.
    public var contentHash: String
    public var files: [BackupManifest.FileEntry]
    public var warnings: [String]
    /// Every exported chunk with its compression state at the source and its row counts: copied,
    /// and through the hypertable root in the chunk's range. Nil in exports made before tsbackup
    /// recorded it.
    public var chunks: [ChunkEntry]? = nil
    /// Continuous aggregates defined on the hypertable ("schema.view"); not exported.
    public var continuousAggregates: [String]? = nil

    public struct Table: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var owner: String
        public var qualifiedName: String { "\(schema).\(name)" }
    }

    public struct Column: Codable, Sendable, Equatable {
        public var name: String
        /// `format_type` of the column, e.g. "timestamp with time zone".
        public var type: String
        public var notNull: Bool
        /// Generated columns are computed again on import, so the data files leave them out.
        public var generated: Bool
    }

    public struct Dimension: Codable, Sendable, Equatable {
        /// 1 for the primary dimension, then in creation order.
        public var number: Int
        public var column: String
        public var columnType: String
        /// "time" (open, interval-partitioned) or "space" (closed, hash-partitioned).
        public var kind: String
        /// The interval in the catalog's unit: microseconds for date/time columns, the column's
        /// own unit for integer time. Nil for space dimensions.
        public var intervalLength: Int64?
        /// The interval as PostgreSQL prints it ("1 day"), for date/time columns.
        public var timeInterval: String?
        public var partitions: Int?
        /// `schema.function` partitioning a space dimension (or a time dimension with a custom
        /// time_partitioning_func).
        public var partitioningFunction: String?
        /// `schema.function` giving "now" for an integer time column.
        public var integerNowFunction: String?
    }

    public struct Compression: Codable, Sendable, Equatable {
        public var enabled: Bool
        public var segmentBy: [String]
        /// "column [DESC] [NULLS FIRST|LAST]" in order.
        public var orderBy: [String]
    }

    public struct Job: Codable, Sendable, Equatable {
        public var id: Int
        /// e.g. "policy_compression", "policy_retention".
        public var procedure: String
        public var scheduleInterval: String
        /// The job's config, as JSON text.
        public var config: String?
    }

    public struct Window: Codable, Sendable, Equatable {
        /// The primary dimension's column the window applies to.
        public var column: String
        /// Inclusive lower bound, as given (a value of the column's type).
        public var since: String?
        /// Exclusive upper bound, as given.
        public var until: String?
    }

    public struct DefinitionObject: Codable, Sendable, Equatable {
        public var type: String
        public var name: String
    }

    public struct ChunkEntry: Codable, Sendable, Equatable {
        /// "schema.name" at the source.
        public var name: String
        /// "uncompressed", "compressed" or "partially compressed", from the catalog
        /// (`_timescaledb_catalog.chunk.status` and `compressed_chunk_id`).
        public var state: String
        /// `_timescaledb_catalog.chunk.status` as stored: 1 compressed, 2 unordered, 4 frozen, 8 partial.
        public var status: Int
        /// Rows psql copied for this chunk (decompressed).
        public var rows: Int64
        /// Rows the hypertable root holds in the chunk's range (and the window); nil where the
        /// range cannot be written as a condition.
        public var rootRows: Int64?
        /// The data file holding the chunk's rows.
        public var file: String
        /// The chunk's slice of the primary dimension, in TimescaleDB's internal unit, [start, end).
        public var rangeStart: Int64?
        public var rangeEnd: Int64?

        public var compressed: Bool { state != "uncompressed" }
    }

    public struct DataFile: Codable, Sendable, Equatable {
        /// Relative to the entry's directory.
        public var path: String
        /// The source chunks whose rows the file holds, one after the other: "schema.name".
        public var chunks: [String]
        public var rows: Int64
        /// Uncompressed bytes of COPY text.
        public var rawBytes: Int64
    }

    public var rawDataBytes: Int64 { dataFiles.saturatingSum(\.rawBytes) }
    public var chunkCount: Int { dataFiles.reduce(0) { $0 + $1.chunks.count } }
    /// The columns the data files hold, in order.
    public var copyColumns: [Column] { columns.filter { !$0.generated } }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case kind, id, status, error
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case durationSeconds = "duration_seconds"
        case tsbackupVersion = "tsbackup_version"
        case source, server
        case pgDump = "pg_dump"
        case psql, timescaledb, table, columns, dimensions, compression, jobs, window
        case definitionFile = "definition_file"
        case definitionObjects = "definition_objects"
        case definitionRemoved = "definition_removed"
        case dataFormat = "data_format"
        case compressionProgram = "compression_program"
        case parallelJobs = "parallel_jobs"
        case dataFiles = "data_files"
        case rowCount = "row_count"
        case contentHash = "content_hash"
        case files, warnings, chunks
        case continuousAggregates = "continuous_aggregates"
    }
}

extension HypertableManifest.ChunkEntry {
    enum CodingKeys: String, CodingKey {
        case name, state, status, rows
        case rootRows = "root_rows"
        case file
        case rangeStart = "range_start"
        case rangeEnd = "range_end"
    }
}

extension HypertableManifest.Column {
    enum CodingKeys: String, CodingKey {
        case name, type
        case notNull = "not_null"
        case generated
    }
}

extension HypertableManifest.Dimension {
    enum CodingKeys: String, CodingKey {
        case number, column
        case columnType = "column_type"
        case kind
        case intervalLength = "interval_length"
        case timeInterval = "time_interval"
        case partitions
        case partitioningFunction = "partitioning_function"
        case integerNowFunction = "integer_now_function"
    }

    /// "time (timestamp with time zone), 1 day" / "sensor_id (integer), 2 hash partitions"
    public var summary: String {
        switch kind {
        case "space": return "\(column) (\(columnType)), \(partitions ?? 0) hash partitions"
        default: return "\(column) (\(columnType)), \(timeInterval ?? intervalLength.map(String.init) ?? "?")"
        }
    }
}

extension HypertableManifest.Compression {
    enum CodingKeys: String, CodingKey {
        case enabled
        case segmentBy = "segment_by"
        case orderBy = "order_by"
    }
}

extension HypertableManifest.Job {
    enum CodingKeys: String, CodingKey {
        case id, procedure
        case scheduleInterval = "schedule_interval"
        case config
    }
}

extension HypertableManifest.DataFile {
    enum CodingKeys: String, CodingKey {
        case path, chunks, rows
        case rawBytes = "raw_bytes"
    }
}

extension HypertableManifest {
    /// The short summary `export-hypertable --json` and `list --json` print, shaped like a
    /// database backup's so list can show both.
    public var summary: BackupManifest.Summary {
        BackupManifest.Summary(
            id: id, kind: kind, status: status.rawValue, label: nil, startedAt: startedAt,
            durationSeconds: (durationSeconds * 1000).rounded() / 1000, database: source.database,
            host: "\(source.host):\(source.port)", postgresVersion: server.version,
            timescaledbVersion: timescaledb?.version, hypertables: 1, chunks: chunkCount, rows: rowCount,
            bytes: totalFileBytes, files: files.count, warnings: warnings, retries: 0, error: error)
    }

    public var windowDescription: String {
        guard let window else { return "all rows" }
        return "\(window.column) in [\(window.since ?? "-infinity"), \(window.until ?? "infinity"))"
    }

    public var completionLine: String {
        "Hypertable export \(id) complete: \(table.qualifiedName) from database \(source.database), \(windowDescription), \(rowCount) rows from \(chunkCount) chunks; \(ByteCount.format(totalFileBytes)) in \(files.count) files (\(ByteCount.format(rawDataBytes)) uncompressed); \(String(format: "%.1f", durationSeconds)) s."
    }

    /// The readable report `tsbackup show` prints.
    public func renderReport() -> String {
        let iso = ISO8601DateFormatter()
        var head = TextTable(indent: "")
        head.add(["Hypertable export", "\(id)  (\(status.rawValue))"])
        if let error { head.add(["Error", error]) }
        head.add(["Taken", "\(iso.string(from: startedAt)) to \(iso.string(from: finishedAt)) (\(String(format: "%.1f", durationSeconds)) s) by tsbackup \(tsbackupVersion)"])
        head.add(["Source", "\(source.user)@\(source.host):\(source.port)/\(source.database)"])
        head.add(["Table", "\(table.qualifiedName) (owner \(table.owner))"])
        head.add(["PostgreSQL", "\(server.version) (\(server.versionNumber))"])
        head.add(["TimescaleDB", timescaledb.map { "\($0.version) (license \($0.license ?? "unknown"))" } ?? "not installed"])
        head.add(["Rows", "\(rowCount), \(windowDescription)"])
        head.add(["Content hash", contentHash])
        head.add(["Data", "\(chunkCount) chunks in \(dataFiles.count) files, \(dataFormat) COPY compressed with \(compressionProgram), \(ByteCount.format(totalFileBytes)) (\(ByteCount.format(rawDataBytes)) uncompressed), \(parallelJobs) job\(parallelJobs == 1 ? "" : "s")"])
        head.add(["Definition", "\(definitionFile): " + definitionObjects.map { "\($0.type) \($0.name)" }.joined(separator: ", ")])
        head.add(["Compression", compression.enabled ? "enabled, segment by [\(compression.segmentBy.joined(separator: ", "))], order by [\(compression.orderBy.joined(separator: ", "))]" : "not enabled"])
        if let chunks {
            let compressed = chunks.filter(\.compressed)
            let partial = compressed.filter { $0.state == "partially compressed" }
            head.add(["Compressed chunks", compressed.isEmpty ? "none (of \(chunks.count))" : "\(compressed.count) of \(chunks.count) (\(partial.count) partially), exported decompressed: " + compressed.map(\.name).joined(separator: ", ")])
        }
        if let continuousAggregates, !continuousAggregates.isEmpty {
            head.add(["Continuous aggregates", "not exported: " + continuousAggregates.joined(separator: ", ")])
        }
        if !jobs.isEmpty {
            head.add(["Jobs", jobs.map { "\($0.procedure) every \($0.scheduleInterval)" }.joined(separator: "; ")])
        }
        var out = head.render()
        var dims = TextTable(header: ["DIMENSION", "COLUMN", "TYPE", "KIND", "INTERVAL / PARTITIONS"])
        for d in dimensions {
            dims.add([String(d.number), d.column, d.columnType, d.kind,
                      d.kind == "space" ? "\(d.partitions ?? 0) partitions" : (d.timeInterval ?? d.intervalLength.map(String.init) ?? "?")])
        }
        out += "\n\nDimensions\n" + dims.render()
        var data = TextTable(header: ["FILE", "CHUNKS", "ROWS", "RAW"])
        for f in dataFiles {
            data.add([f.path, f.chunks.count == 1 ? f.chunks[0] : "\(f.chunks.count): \(f.chunks.first ?? "") ... \(f.chunks.last ?? "")", String(f.rows), ByteCount.format(f.rawBytes)])
        }
        if !dataFiles.isEmpty { out += "\n\nData files\n" + data.render() }
        if !warnings.isEmpty {
            out += "\n\nWarnings\n" + warnings.map { "  ! \($0)" }.joined(separator: "\n")
        }
        return out + "\n"
    }
}

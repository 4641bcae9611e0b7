import Foundation

extension BackupManifest {
    /// The short machine-readable summary `backup --json` and `list --json` print.
    public struct Summary: Codable, Sendable {
        public var id: String
        public var kind: String
        public var status: String
        public var label: String?
        public var startedAt: Date
        public var durationSeconds: Double
        public var database: String
        public var host: String
        public var postgresVersion: String
        public var timescaledbVersion: String?
        public var hypertables: Int
        public var chunks: Int
        public var rows: Int64
        public var bytes: Int64
        public var files: Int
        public var warnings: [String]
        public var retries: Int
        public var error: String?

        enum CodingKeys: String, CodingKey {
            case id, kind, status, label
            case startedAt = "started_at"
            case durationSeconds = "duration_seconds"
            case database, host
            case postgresVersion = "postgres_version"
            case timescaledbVersion = "timescaledb_version"
            case hypertables, chunks, rows, bytes, files, warnings, retries, error
        }
    }

    public var summary: Summary {
        Summary(id: id, kind: kind, status: status.rawValue, label: label, startedAt: startedAt,
                durationSeconds: (durationSeconds * 1000).rounded() / 1000, database: source.database,
                host: "\(source.host):\(source.port)", postgresVersion: server.version,
                timescaledbVersion: timescaledb?.version, hypertables: hypertables.count,
                chunks: hypertables.saturatingSum(\.chunkCount), rows: totalRows, bytes: totalFileBytes,
                files: files.count, warnings: warnings, retries: retries.count, error: error)
    }

    /// One paragraph after a successful backup.
    public var completionLine: String {
        let chunks = hypertables.saturatingSum(\.chunkCount)
        return "Backup \(id) complete: database \(source.database), \(hypertables.count) hypertables (\(chunks) chunks), \(plainTables.count) plain tables, \(totalRows) rows; \(ByteCount.format(totalFileBytes)) in \(files.count) files; \(String(format: "%.1f", durationSeconds)) s."
    }

    /// The readable report `tsbackup show` prints.
    public func renderReport() -> String {
        let iso = ISO8601DateFormatter()
        var head = TextTable(indent: "")
        head.add(["Backup", "\(id)  (\(status.rawValue))\(label.map { "  label \"\($0)\"" } ?? "")"])
        if let error { head.add(["Error", error]) }
        head.add(["Taken", "\(iso.string(from: startedAt)) to \(iso.string(from: finishedAt)) (\(String(format: "%.1f", durationSeconds)) s) by tsbackup \(tsbackupVersion)"])
        head.add(["Source", "\(source.user)@\(source.host):\(source.port)/\(source.database)"])
        head.add(["PostgreSQL", "\(server.version) (\(server.versionNumber))"])
        head.add(["pg_dump", pgDump.version])
        if let ts = timescaledb {
            head.add(["TimescaleDB", "\(ts.version) (catalog \(ts.catalogVersion ?? "unknown"), license \(ts.license ?? "unknown"), schema \(ts.schema))"])
        } else {
            head.add(["TimescaleDB", "not installed"])
        }
        head.add(["Extensions", extensions.isEmpty ? "none besides timescaledb" : extensions.map { "\($0.name) \($0.version)" }.joined(separator: ", ")])
        head.add(["Archive", "\(format.rawValue) format, \(jobsUsed) job\(jobsUsed == 1 ? "" : "s"), \(files.count) files, \(ByteCount.format(totalFileBytes)) (database \(ByteCount.format(databaseBytes)))"])
        if let packed = fileCompression {
            head.add(["Compression", "\(packed.method) level \(packed.level) by tsbackup: \(packed.files) data files, \(ByteCount.format(packed.plainBytes)) as pg_dump wrote them, \(ByteCount.format(packed.bytes)) stored"])
        } else {
            head.add(["Compression", compression.map { $0 == 0 ? "none" : "gzip level \($0) by pg_dump" } ?? "gzip by pg_dump (its default level)"])
        }
        if let choice = formatChoice {
            head.add(["Format choice", "\(choice.chosenBy == "user" ? "by the user" : "automatic"): \(choice.reason)"])
        }
        head.add(["Roles", "\(rolesFile) (from \(rolesSource))"])
        head.add(["Checksums", checksums ? "content hash per table, taken in the dump's snapshot" : "row counts only"])
        var out = head.render()

        if !hypertables.isEmpty {
            var table = TextTable(header: ["HYPERTABLE", "OWNER", "CHUNKS", "ROWS", "SIZE", "IDX", "CON", "FK", "DIMENSIONS"])
            for h in hypertables {
                table.add(["\(h.schema).\(h.name)", h.owner, String(h.chunkCount), String(h.rowCount), ByteCount.format(h.totalBytes),
                           String(h.indexCount), String(h.constraintCount), String(h.foreignKeyCount),
                           h.dimensions.map(\.summary).joined(separator: "; ")])
            }
            out += "\n\nHypertables\n" + table.render()
        }
        if !plainTables.isEmpty {
            var table = TextTable(header: ["TABLE", "ROWS", "SIZE"])
            for t in plainTables { table.add(["\(t.schema).\(t.name)", String(t.rowCount), ByteCount.format(t.totalBytes)]) }
            out += "\n\nPlain tables\n" + table.render()
        }
        if !jobs.isEmpty {
            var table = TextTable(header: ["JOB", "APPLICATION", "PROCEDURE", "OWNER", "HYPERTABLE"])
            for j in jobs { table.add([String(j.id), j.application, j.procedure, j.owner, j.hypertable ?? "-"]) }
            out += "\n\nBackground jobs\n" + table.render()
        }
        if !retries.isEmpty {
            out += "\n\nRetries\n" + retries.map { "  attempt \($0.attempt): \($0.reason)" }.joined(separator: "\n")
        }
        if !warnings.isEmpty {
            out += "\n\nWarnings\n" + warnings.map { "  ! \($0)" }.joined(separator: "\n")
        }
        return out + "\n"
    }
}

import Foundation

extension BaseBackupManifest {
    /// "2.19.3", or "2.18.2,2.19.3" when databases differ; "-" without TimescaleDB.
    public var timescaleVersions: String {
        let versions = Set(databases.compactMap(\.timescaledb)).sorted()
        return versions.isEmpty ? "-" : versions.joined(separator: ",")
    }

    /// The row `list --json` prints for a base backup.
    public var summary: BackupManifest.Summary {
        BackupManifest.Summary(
            id: id, kind: kind, status: status.rawValue, label: label, startedAt: startedAt,
            durationSeconds: (durationSeconds * 1000).rounded() / 1000, database: "(cluster)",
            host: "\(source.host):\(source.port)", postgresVersion: server.version,
            timescaledbVersion: databases.compactMap(\.timescaledb).first,
            hypertables: databases.reduce(0) { $0 + $1.hypertables.count },
            chunks: databases.saturatingSum { $0.hypertables.saturatingSum(\.chunkCount) },
            rows: 0, bytes: totalFileBytes, files: files.count, warnings: warnings, retries: 0, error: error)
    }

    /// What `show` prints.
    public func renderReport() -> String {
        let iso = ISO8601DateFormatter()
        var lines = [
            "Base backup \(id) (\(status.rawValue))\(label.map { " \"\($0)\"" } ?? "")",
            "  server:      PostgreSQL \(server.version), system identifier \(systemIdentifier), timeline \(timeline)",
            "  taken:       \(iso.string(from: startTime)) to \(iso.string(from: stopTime)) (\(String(format: "%.1f", durationSeconds)) s)",
            "  WAL:         \(startLSN) (\(startSegment)) to \(stopLSN) (\(stopSegment))",
            "  stored:      \(ByteCount.format(totalFileBytes)) (\(compression)) of a \(ByteCount.format(clusterBytes)) cluster",
        ]
        if let error { lines.append("  error:       \(error)") }
        var table = TextTable(header: ["DATABASE", "TIMESCALEDB", "HYPERTABLES", "CHUNKS"], indent: "  ")
        for database in databases {
            table.add([database.name, database.timescaledb ?? "-", String(database.hypertables.count),
                       String(database.hypertables.saturatingSum(\.chunkCount))])
        }
        lines.append(table.render())
        for warning in warnings { lines.append("  warning: \(warning)") }
        return lines.joined(separator: "\n") + "\n"
    }
}

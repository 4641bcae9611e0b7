import Foundation

extension ServerInspection {
    /// The readable report `tsbackup inspect` prints.
    public func renderReport() -> String {
        var out: [String] = []
        let ts = timescaledb

        var summary = TextTable(indent: "")
        summary.add(["Server", "\(connection.host):\(connection.port)  database \(connection.database)  as \(connection.user)"])
        summary.add(["PostgreSQL", "\(server.version)  (server_version_num \(server.versionNumber))"])
        if ts.installed, let version = ts.version {
            var parts = ["catalog \(ts.catalogVersion ?? "unknown")"]
            if let license = ts.license { parts.append("license \(license)") }
            if let schema = ts.schema { parts.append("schema \(schema)") }
            summary.add(["TimescaleDB", "\(version)  (\(parts.joined(separator: ", ")))"])
        } else {
            summary.add(["TimescaleDB", "not installed in this database"])
        }
        summary.add(["  installable", ts.installableVersions.isEmpty ? "none (the extension is not installed on this server)" : ts.installableVersions.joined(separator: ", ") + (ts.defaultVersion.map { "  (default \($0))" } ?? "")])
        summary.add(["  preloaded", ts.preloaded ? "yes" : "NO (timescaledb is missing from shared_preload_libraries)"])
        let restoreState: String
        if ts.restoring.databaseSetting || ts.restoring.session == true {
            restoreState = "ON  <-- this database is in restore mode (see warnings)"
        } else if ts.restoring.session == nil && !ts.installed {
            restoreState = "n/a"
        } else {
            restoreState = "off"
        }
        summary.add(["  restore mode", restoreState])
        if !ts.databases.isEmpty {
            summary.add(["  databases", ts.databases.map { "\($0.database) \($0.version)\($0.behindDefault ? " (BEHIND the default)" : "")" }.joined(separator: ", ")])
        }
        if ts.installed {
            summary.add(["  scheduler", ts.schedulerRunning ? "running" : "NOT running"])
            summary.add(["  user jobs", String(ts.userJobCount)])
        }
        summary.add(["Extensions", extensions.isEmpty ? "none besides timescaledb" : extensions.map { "\($0.name) \($0.version)" }.joined(separator: ", ")])
        summary.add(["Database", "\(ByteCount.format(databaseBytes)) in all; \(hypertables.count) hypertable\(hypertables.count == 1 ? "" : "s") (\(ByteCount.format(hypertables.reduce(0) { $0 + $1.totalBytes }))), \(plainTableCount) plain table\(plainTableCount == 1 ? "" : "s") (\(ByteCount.format(plainTableBytes)))"])
        out.append(summary.render())

        if !hypertables.isEmpty {
            var table = TextTable(header: ["HYPERTABLE", "OWNER", "CHUNKS", "SIZE", "DIMENSIONS"])
            for h in hypertables {
                table.add(["\(h.schema).\(h.name)", h.owner, String(h.chunkCount), ByteCount.format(h.totalBytes),
                           h.dimensions.map(\.summary).joined(separator: "; ") + (h.compressionEnabled ? "; compression on" : "")])
            }
            out.append("\nHypertables\n" + table.render())
        }

        var roleLines = TextTable()
        roleLines.add(["superuser \(role.superuser.yesNo), database owner \(role.databaseOwner.yesNo), CREATEDB \(role.createDatabase.yesNo), CREATEROLE \(role.createRole.yesNo), CREATE in database \(role.canCreateInDatabase.yesNo)"])
        var capabilityTable = TextTable()
        for c in role.capabilities {
            capabilityTable.add([c.action, c.allowed ? "yes" : "no", c.reason])
        }
        out.append("\nRole \(role.name)\n" + roleLines.render() + "\n" + capabilityTable.render())

        out.append("""

            Lock budget
              \(lockBudget.budget) lock slots (max_locks_per_transaction \(lockBudget.maxLocksPerTransaction) x (max_connections \(lockBudget.maxConnections) + max_prepared_transactions \(lockBudget.maxPreparedTransactions))) for \(lockBudget.relationsToLock) relations a dump would lock and \(lockBudget.indexesToLock) hypertable indexes its row count locks: \(lockBudget.sufficient ? "enough" : "NOT ENOUGH, set max_locks_per_transaction >= \(lockBudget.recommendedMaxLocksPerTransaction)")
            """)

        if !warnings.isEmpty {
            out.append("\nWarnings\n" + warnings.map { "  ! " + $0 }.joined(separator: "\n"))
        }
        return out.joined(separator: "\n") + "\n"
    }
}

extension ServerInspection.Dimension {
    /// "time (timestamp with time zone, 1 day)", "device_id (hash, 4 partitions)".
    public var summary: String {
        if kind == "space" {
            return "\(column) (hash, \(partitions ?? 0) partitions)"
        }
        if let timeInterval {
            return "\(column) (\(columnType), \(timeInterval))"
        }
        if let integerInterval {
            return "\(column) (\(columnType), every \(integerInterval))"
        }
        return "\(column) (\(columnType))"
    }
}

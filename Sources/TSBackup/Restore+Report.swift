import Foundation

extension Restore.Report {
    /// The readable report: steps with durations, versions, then a verdict per table and check,
    /// once at the backup's TimescaleDB version and (with --update-extension) once after the update.
    public func renderReport() -> String {
        var out = ok
            ? "Restore of backup \(id) verified: database \(database)\(promotedTo != nil ? " (promoted)" : "").\n"
            : "Restore of backup \(id) FAILED.\n"
        var steps = TextTable(header: ["STEP", "SECONDS", "RESULT"])
        for step in self.steps {
            steps.add([step.name, String(format: "%.2f", step.seconds), step.ok ? "ok" : "FAILED: " + (step.detail ?? "")])
        }
        out += "\nSteps\n" + steps.render() + "\n"
        if let versions {
            out += "\nVersions\n" + Self.render(versions) + "\n"
        }
        if !checks.isEmpty {
            let title = versions?.backupTimescaleDB.map { "Verification at TimescaleDB \($0) (the backup's version)" } ?? "Verification"
            out += "\n\(title)\n" + Self.render(checks) + "\n"
        }
        if let update = extensionUpdate, update.status == .notNeeded {
            out += "\nExtension update: not needed, the backup's TimescaleDB \(update.fromVersion) already is the version asked for.\n"
        } else if let update = extensionUpdate {
            out += "\nExtension update \(update.fromVersion) -> \(update.toVersion): \(update.status.rawValue)\n"
            var lines = TextTable()
            if let path = update.path { lines.add(["update path", path]) }
            lines.add(["installed", update.installedVersion ?? "-"])
            lines.add(["default", update.defaultVersion ?? "-"])
            lines.add(["catalog", update.catalogVersion ?? "-"])
            if let error = update.error { lines.add(["error", error]) }
            out += lines.render() + "\n"
            if !update.checks.isEmpty {
                out += "\nVerification after the update, at TimescaleDB \(update.toVersion)\n" + Self.render(update.checks) + "\n"
            }
        }
        if let previous = previousDatabase {
            out += "\nThe previous database is kept as \(previous).\n"
        }
        if let rollback {
            out += "To roll back: \(rollback)\n"
        }
        if !warnings.isEmpty {
            out += "\nWarnings\n" + warnings.map { "  ! \($0)" }.joined(separator: "\n") + "\n"
        }
        return out
    }

    static func render(_ checks: [Check]) -> String {
        var table = TextTable(header: ["SUBJECT", "CHECK", "EXPECTED", "ACTUAL", "VERDICT"])
        for check in checks {
            let expected = check.expected.count > 44 ? String(check.expected.prefix(41)) + "..." : check.expected
            let actual = check.actual.count > 44 ? String(check.actual.prefix(41)) + "..." : check.actual
            table.add([check.subject, check.check, expected, actual, check.ok ? "ok" : "MISMATCH"])
        }
        return table.render()
    }

    static func render(_ versions: Versions) -> String {
        var lines = TextTable()
        lines.add(["PostgreSQL", "backup \(versions.backupPostgresMajor), target \(versions.targetPostgres)"])
        if let backup = versions.backupTimescaleDB {
            lines.add(["TimescaleDB", "backup \(backup); target installable \(versions.targetInstallable.isEmpty ? "none" : versions.targetInstallable.joined(separator: ", ")), default \(versions.targetDefault ?? "none")"])
            if let target = versions.updateTarget, target != backup {
                let path = versions.updatePathExists == true ? "exists (\(versions.updatePath ?? ""))" : "NONE on this server"
                lines.add(["update path", "\(backup) -> \(target): \(path)"])
            }
        } else {
            lines.add(["TimescaleDB", "not in the backup"])
        }
        return lines.render()
    }
}

import Foundation

extension Restore.Report {
    /// The readable report: steps with durations, then a verdict per table and check.
    public func renderReport() -> String {
        var out = ok
            ? "Restore of backup \(id) verified: database \(database)\(promotedTo != nil ? " (promoted)" : "").\n"
            : "Restore of backup \(id) FAILED.\n"
        var steps = TextTable(header: ["STEP", "SECONDS", "RESULT"])
        for step in self.steps {
            steps.add([step.name, String(format: "%.2f", step.seconds), step.ok ? "ok" : "FAILED: " + (step.detail ?? "")])
        }
        out += "\nSteps\n" + steps.render() + "\n"
        if !checks.isEmpty {
            var table = TextTable(header: ["SUBJECT", "CHECK", "EXPECTED", "ACTUAL", "VERDICT"])
            for check in checks {
                let expected = check.expected.count > 44 ? String(check.expected.prefix(41)) + "..." : check.expected
                let actual = check.actual.count > 44 ? String(check.actual.prefix(41)) + "..." : check.actual
                table.add([check.subject, check.check, expected, actual, check.ok ? "ok" : "MISMATCH"])
            }
            out += "\nVerification\n" + table.render() + "\n"
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
}

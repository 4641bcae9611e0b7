import Foundation

/// Sorts pg_dump's stderr lines.
struct StderrCollector: Sendable {
    var warnings: [String] = []
    var errors: [String] = []
    var tablesDumped = 0
    var bytesDumped: Int64 = 0
    var chunkVanished = false
    /// Lines still expected after a "circular foreign-key constraints" warning.
    private var circularTail = 0
    private var lastWasError = false

    static let expectedCircular: Set<String> = ["hypertable", "chunk", "continuous_agg"]

    /// Returns true when the line reported a table being dumped.
    mutating func take(_ raw: String, tableBytes: [String: Int64]) -> Bool {
        let line = raw.trimmingCharacters(in: .whitespaces)
        guard !line.isEmpty else { return false }
        let body = line.hasPrefix("pg_dump: ") ? String(line.dropFirst("pg_dump: ".count)) : line

        if body.hasPrefix("warning: there are circular foreign-key constraints on this table:") {
            circularTail = 3
            lastWasError = false
            return false
        }
        if circularTail > 0 {
            circularTail -= 1
            if body.hasPrefix("detail: ") {
                let table = String(body.dropFirst("detail: ".count))
                if !Self.expectedCircular.contains(table) {
                    warnings.append("circular foreign-key constraints on table \(table)")
                }
                return false
            }
            if body.hasPrefix("hint: ") { return false }
            circularTail = 0
        }
        if body.hasPrefix("error: ") {
            errors.append(String(body.dropFirst("error: ".count)))
            lastWasError = true
            return false
        }
        if body.hasPrefix("warning: ") {
            warnings.append(String(body.dropFirst("warning: ".count)))
            lastWasError = false
            return false
        }
        if body.hasPrefix("detail: ") || body.hasPrefix("hint: ") || !line.hasPrefix("pg_dump: ") {
            // Continuation of the previous message.
            if lastWasError {
                errors[errors.count - 1] += " " + body
                if body.contains("LOCK TABLE"), errors.last?.contains("does not exist") == true { chunkVanished = true }
            } else if !warnings.isEmpty {
                warnings[warnings.count - 1] += " " + body
            }
            return false
        }
        lastWasError = false
        // Verbose progress: `dumping contents of table "schema.name"`.
        if body.hasPrefix("dumping contents of table \"") {
            let name = body.dropFirst("dumping contents of table \"".count).dropLast()
            tablesDumped += 1
            bytesDumped += tableBytes[String(name)] ?? 0
            return true
        }
        return false
    }
}

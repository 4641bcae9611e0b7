import Foundation

/// What psql's stderr says when a statement fails. A file of its own (no library dependencies
/// beyond text formatting) so the fuzz build can compile it (Fuzz/sources.txt).
enum PsqlStderr {
    /// TimescaleDB's (PostgreSQL's) own words from psql's stderr: the ERROR line and any
    /// DETAIL/HINT after it, without psql's "psql:<where>:" prefix.
    static func serverMessage(_ stderr: String) -> String {
        var kept: [String] = []
        var inError = false
        for raw in stderr.split(separator: "\n") {
            var line = String(raw)
            if line.hasPrefix("psql:"), let range = line.range(of: #"^psql:[^:]*:\d+: "#, options: .regularExpression) {
                line.removeSubrange(range)
            }
            if line.hasPrefix("ERROR:") || line.hasPrefix("FATAL:") || line.hasPrefix("psql: error:") {
                inError = true
            } else if !(line.hasPrefix("DETAIL:") || line.hasPrefix("HINT:") || line.hasPrefix("CONTEXT:")) {
                inError = false
            }
            if inError { kept.append(line.replacingOccurrences(of: ":  ", with: ": ")) }
        }
        let text = kept.isEmpty ? stderr : kept.joined(separator: " ")
        return text.singleLine(limit: 600)
    }
}

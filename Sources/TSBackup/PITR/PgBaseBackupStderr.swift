import Foundation

/// What pg_basebackup's stderr says when it fails. A file of its own (no library dependencies
/// beyond connection settings) so the fuzz build can compile it (Fuzz/sources.txt).
enum PgBaseBackupStderr {
    /// pg_basebackup's failure as an error the user can act on (permission problems are exit 3).
    /// It says nothing about the repository: the caller knows what became of the entry and adds it.
    static func failure(_ stderr: String, settings: ConnectionSettings) -> TSBackupError {
        let text = problemLines(stderr).singleLine(limit: 600)
        if stderr.contains("no pg_hba.conf entry for replication") {
            return TSBackupError(.permission, "The server refuses replication connections from this host for \(settings.user): \(sentence(text)) Add a `host replication \(settings.user) <this host>/32 scram-sha-256` line to pg_hba.conf, reload the server, and run base-backup again.")
        }
        if stderr.contains("password authentication failed") || stderr.contains("must be superuser or replication role") || stderr.contains("permission denied") {
            return TSBackupError(.permission, "pg_basebackup was refused by the server: \(sentence(text)) Give the role REPLICATION (or connect as one that has it) and check its password.")
        }
        if stderr.contains("could not connect") || stderr.contains("Connection refused") {
            return TSBackupError(.connection, "pg_basebackup could not reach \(settings.displayName): \(sentence(text)) Check the host and port and that the server accepts connections.")
        }
        return TSBackupError(.failed, "pg_basebackup failed: \(sentence(text)) Fix the cause and run base-backup again.")
    }

    /// The lines of pg_basebackup's stderr that say what went wrong. It runs with `-v`, whose
    /// progress lines ("pg_basebackup: initiating base backup, waiting for checkpoint to
    /// complete", "checkpoint completed", "write-ahead log start point: …") carry no level; its
    /// problems do (`pg_basebackup: error:`, `detail:`, `hint:`, `warning:`), and libpq's
    /// multi-line messages continue on tab-indented lines. Lines from anything else (the server,
    /// the dynamic loader) are kept too. The `pg_basebackup: ` prefix goes, and `error: ` after it.
    /// When nothing is left, the whole text is returned.
    static func problemLines(_ stderr: String) -> String {
        let levels = ["error:", "detail:", "hint:", "warning:", "fatal:", "panic:"]
        var kept: [Substring] = []
        var keeping = false
        for line in stderr.split(whereSeparator: \.isNewline) {
            if line.first == "\t" || line.first == " " {
                if keeping { kept.append(line) }
                continue
            }
            if line.hasPrefix("pg_basebackup: ") {
                // The message already says it is pg_basebackup's, and an error is one: both
                // prefixes go ("pg_basebackup: error: could not read COPY data: …").
                var rest = line.dropFirst("pg_basebackup: ".count)
                keeping = levels.contains { rest.lowercased().hasPrefix($0) }
                if rest.lowercased().hasPrefix("error: ") { rest = rest.dropFirst("error: ".count) }
                if keeping { kept.append(rest) }
            } else {
                keeping = !line.allSatisfy(\.isWhitespace)
                if keeping { kept.append(line) }
            }
        }
        return kept.isEmpty ? stderr : kept.joined(separator: "\n")
    }

    /// `text` ending in exactly one full stop (libpq's messages often end with one already).
    static func sentence(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let last = trimmed.last else { return "(no message)." }
        return ".!?".contains(last) ? trimmed : trimmed + "."
    }
}

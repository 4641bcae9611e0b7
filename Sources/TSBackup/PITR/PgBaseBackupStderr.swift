import Foundation

/// What pg_basebackup's stderr says when it fails. A file of its own (no library dependencies
/// beyond connection settings) so the fuzz build can compile it (Fuzz/sources.txt).
enum PgBaseBackupStderr {
    /// pg_basebackup's failure as an error the user can act on (permission problems are exit 3).
    static func failure(_ stderr: String, settings: ConnectionSettings) -> TSBackupError {
        let text = stderr.singleLine(limit: 600)
        if stderr.contains("no pg_hba.conf entry for replication") {
            return TSBackupError(.permission, "The server refuses replication connections from this host for \(settings.user): \(text). Add a `host replication \(settings.user) <this host>/32 scram-sha-256` line to pg_hba.conf, reload the server, and run base-backup again.")
        }
        if stderr.contains("password authentication failed") || stderr.contains("must be superuser or replication role") || stderr.contains("permission denied") {
            return TSBackupError(.permission, "pg_basebackup was refused by the server: \(text). Give the role REPLICATION (or connect as one that has it) and check its password.")
        }
        if stderr.contains("could not connect") || stderr.contains("Connection refused") {
            return TSBackupError(.connection, "pg_basebackup could not reach \(settings.displayName): \(text). Check the host and port and that the server accepts connections.")
        }
        return TSBackupError(.failed, "pg_basebackup failed: \(text). Nothing was kept; fix the cause and run base-backup again.")
    }
}

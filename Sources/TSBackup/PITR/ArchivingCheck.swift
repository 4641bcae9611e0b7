import Foundation
import PostgresNIO

/// Proves archiving works end to end before a base backup is taken: the server's archive_command
/// is tsbackup's wal-push, a forced segment switch is archived, and the segment is in the
/// repository's WAL archive. A base backup whose WAL never reaches the archive recovers nothing,
/// so this is checked, not assumed.
enum ArchivingCheck {
    static func run(settings: ConnectionSettings, repository: any Repository, wait: Duration) async throws {
        let segment: String = try await DatabaseSession.with(settings) { session in
            let command = try await session.value("SELECT current_setting('archive_command')", as: String.self)
            guard command.contains("wal-push") else {
                throw TSBackupError(.precondition, "The server's archive_command (\"\(command.singleLine(limit: 200))\") is not tsbackup's wal-push, so its WAL does not reach \(repository.location). Set `archive_command = 'tsbackup wal-push %p --repo \(repository.location)'` in postgresql.conf, reload the server, and run base-backup again.")
            }
            // Something must be in the segment for the switch to close it.
            _ = try await session.execute("SELECT pg_logical_emit_message(false, 'tsbackup', 'archiving check')")
            return try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
        }
        try await waitForSegment(segment, settings: settings, repository: repository, wait: wait)
    }

    /// Waits (bounded by `wait`) until `segment` is archived; refuses with the archiver's last
    /// failure when it does not arrive.
    static func waitForSegment(_ segment: String, settings: ConnectionSettings, repository: any Repository, wait: Duration) async throws {
        let deadline = ContinuousClock.now + wait
        var switched = false
        while true {
            let (archived, failed, failedWAL) = try await DatabaseSession.with(settings) { session in
                if !switched {
                    // The segment holding a stop point may still be open: close it.
                    let current = try await session.value("SELECT pg_walfile_name(pg_current_wal_lsn())", as: String.self)
                    if current == segment { _ = try await session.execute("SELECT pg_switch_wal()") }
                    switched = true
                }
                return try await session.row(
                    "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                    as: (String, Int64, String).self)
            }
            if try await WALArchiveLookup.isArchived(segment, archivedUpTo: archived, repository: repository) { return }
            if ContinuousClock.now >= deadline {
                let failure = failed > 0 ? " The archiver has failed \(failed) time\(failed == 1 ? "" : "s") (last on \(failedWAL.isEmpty ? "an unknown file" : failedWAL)); the server log says why." : ""
                throw TSBackupError(.precondition, "WAL segment \(segment) did not reach the archive in \(repository.location) within \(wait.components.seconds) s (the server reports \(archived.isEmpty ? "nothing archived yet" : "\(archived) as the last archived file")).\(failure) Check archive_command and that the server's user can write to the repository, then run base-backup again.")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// Whether a segment is in the repository's WAL archive (not merely reported archived by the
/// server: its archive_command could point elsewhere).
enum WALArchiveLookup {
    static func isArchived(_ segment: String, archivedUpTo lastArchived: String, repository: any Repository) async throws -> Bool {
        guard let file = WALFileName(segment), let marker = try await WALArchiveMarker.read(repository), let system = marker.system else { return false }
        return try await repository.archiveObjectExists(.wal(systemIdentifier: system, file: file))
    }

    /// Refuses a repository whose WAL archive belongs to another cluster.
    static func checkOwner(systemIdentifier: String, repository: any Repository) async throws {
        guard let marker = try await WALArchiveMarker.read(repository) else { return }
        guard marker.systemIdentifier == systemIdentifier else {
            throw TSBackupError(.precondition, "The WAL archive in \(repository.location) belongs to another cluster (system identifier \(marker.systemIdentifier), this server's is \(systemIdentifier)); base backups of this server would have no WAL there. Give this cluster a repository of its own.")
        }
    }
}

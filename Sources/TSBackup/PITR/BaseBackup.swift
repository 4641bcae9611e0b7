import Foundation
import PostgresNIO

/// The `base-backup` use case: a physical copy of the whole cluster for point-in-time recovery.
///
/// The engine is `pg_basebackup` over the replication protocol: it works from another host (no
/// access to the data directory needed), takes the backup through PostgreSQL's own BASE_BACKUP
/// (so start/stop, the backup label and PostgreSQL's `backup_manifest` with per-file checksums
/// are PostgreSQL's, not ours to get wrong), and writes a tar stream to standard output
/// (`-D - -Ft -X none`: WAL comes from the archive, not the backup). pg_basebackup compresses it
/// (client-side zstd, `workers=` from `--jobs`) and this process hands the stream to the
/// repository as it comes (``Repository/writeStreamedFile(_:path:expectedBytes:_:)``), which
/// hashes it on the way: in a local repository it is written to the entry's
/// `backups/<id>.partial/base.tar.zst`, to S3 it goes as a multipart upload while pg_basebackup
/// runs, so the backup is never staged anywhere else (locally not at all, for S3).
/// The copy of the files themselves is what a parallel file copy through the backup API would
/// also be bound by on this kind of machine (disk and one compression stream per core).
public enum BaseBackup {
    public struct Request: Sendable {
        public var settings: ConnectionSettings
        public var repository: RepositoryAccess
        public var jobs: Int = 1
        public var label: String?
        /// How long the archiving preflight waits for the switched segment to reach the repository.
        public var archiveWait: Duration = .seconds(60)

        public init(settings: ConnectionSettings, repository: RepositoryAccess) {
            self.settings = settings
            self.repository = repository
        }
    }

    /// The server-side facts the preflight established.
    struct Cluster {
        var server: ServerInspection.Server
        var systemIdentifier: String
        var databases: [String]
        var clusterBytes: Int64
    }

    public static func run(_ request: Request) async throws -> BaseBackupManifest {
        let cluster = try await preflight(request)
        let tool = try await PostgresTools.locate("pg_basebackup", minimumMajor: cluster.server.majorVersion)
        try await request.repository.checkSpace(forStreaming: cluster.clusterBytes)
        return try await request.repository.with(create: true) { repository in
            // Archiving must reach THIS repository: a base backup without its WAL recovers nothing.
            try await WALArchiveLookup.checkOwner(systemIdentifier: cluster.systemIdentifier, repository: repository)
            try await ArchivingCheck.run(settings: request.settings, repository: repository, wait: request.archiveWait)
            try await WALArchiveLookup.checkOwner(systemIdentifier: cluster.systemIdentifier, repository: repository)
            try await repository.checkSpace(forStreaming: cluster.clusterBytes)
            return try await repository.withLock(command: "base-backup of \(request.settings.displayName)") { staleWarning in
                let id = try await repository.newID()
                let staged = try await repository.beginEntry(id)
                let started = Date()
                var manifest = BaseBackupManifest(
                    id: id, label: request.label, status: .failed, error: nil, startedAt: started, finishedAt: started,
                    durationSeconds: 0, tsbackupVersion: TSBackupVersion.current,
                    source: .init(host: request.settings.host, port: request.settings.port, database: request.settings.database, user: request.settings.user),
                    server: cluster.server, pgBasebackup: tool, systemIdentifier: cluster.systemIdentifier, timeline: 0,
                    startLSN: "", stopLSN: "", startSegment: "", stopSegment: "", startTime: started, stopTime: started,
                    compression: "zstd", archives: ["base.tar.zst"], databases: [], clusterBytes: cluster.clusterBytes,
                    files: [], warnings: staleWarning.map { [$0] } ?? [])
                do {
                    // The survey is read just before the copy: it describes what the backup holds.
                    manifest.databases = try await survey(request.settings, databases: cluster.databases)
                    // The label is unique per run: it finds this backup's history file in the archive.
                    let label = "tsbackup \(id) \(UUID().uuidString.prefix(8))"
                    // Stored as it is produced (an S3 multipart upload, a file in a local
                    // repository's staging directory), hashed on the way.
                    let streamed = try await repository.writeStreamedFile(staged, path: "base.tar.zst", expectedBytes: cluster.clusterBytes) { write in
                        try await stream(tool: tool, settings: request.settings, jobs: request.jobs, label: label, to: write)
                    }
                    // With -X none pg_basebackup does not print its start and stop points; the
                    // backup history file PostgreSQL archived at the stop does, under our label.
                    let history = try await BackupHistoryFile.find(label: label, repository: repository)
                    manifest.timeline = history.timeline
                    manifest.startLSN = history.start.description
                    manifest.stopLSN = history.stop.description
                    manifest.startSegment = history.start.segment(timeline: history.timeline).name
                    manifest.stopSegment = history.stop.segment(timeline: history.stopTimeline).name
                    manifest.startTime = history.startTime ?? started
                    // The history file's STOP TIME has whole seconds: round up, so a target
                    // "after the backup" is never before its consistency point.
                    manifest.stopTime = history.stopTime.map { $0.addingTimeInterval(1) } ?? Date()
                    manifest.files = [.init(path: "base.tar.zst", bytes: streamed.bytes, sha256: streamed.sha256)]
                    // The backup is usable only once the WAL up to its stop point is archived.
                    try await ArchivingCheck.waitForSegment(manifest.stopSegment, settings: request.settings,
                                                            repository: repository, wait: request.archiveWait)
                    manifest.markFinished(.complete)
                    return try await repository.commitEntry(staged, manifest: manifest)
                } catch {
                    manifest.markFinished(.failed, error: (error as? TSBackupError)?.message ?? "\(error)")
                    await repository.failEntry(staged, manifest: manifest)
                    guard let failure = error as? TSBackupError else { throw error }
                    throw await failedEntryNote(failure, id: id, repository: repository)
                }
            }
        }
    }

    /// `failure` with what became of the run's entry, as the repository's rule for failed runs
    /// has it (as for logical backups and exports): its data is removed and its manifest is kept
    /// with `status: failed` and the reason, so `list` shows the attempt until it is deleted. Read
    /// back rather than assumed: when even the failure could not be recorded, the entry is left
    /// incomplete, for `repo gc`.
    static func failedEntryNote(_ failure: TSBackupError, id: String, repository: any Repository) async -> TSBackupError {
        let state = (try? await repository.entry(id))?.state
        let note: String
        switch state {
        case .failed:
            note = "No data was kept: the attempt is recorded as the failed entry \(id) (`tsbackup list` shows it with the reason); remove the record with `tsbackup delete \(id) --repo \(repository.location) --yes`."
        case .complete:
            // Not reached (the manifest is written last); said plainly if it ever is.
            note = "The entry \(id) nevertheless lists as complete; check it with `tsbackup verify \(id) --repo \(repository.location)`."
        case .incomplete, nil:
            note = "The entry \(id) could not be marked failed and is left incomplete; `tsbackup repo gc --repo \(repository.location)` removes it."
        }
        var noted = failure
        noted.message = PgBaseBackupStderr.sentence(failure.message) + " " + note
        return noted
    }

    // MARK: Preflight

    static func preflight(_ request: Request) async throws -> Cluster {
        try await DatabaseSession.with(request.settings) { session in
            let server = try await ServerInspector(session: session).serverVersion()
            let (walLevel, archiveMode) = try await session.row(
                "SELECT current_setting('wal_level'), current_setting('archive_mode')", as: (String, String).self)
            guard walLevel == "replica" || walLevel == "logical" else {
                throw TSBackupError(.precondition, "The server's wal_level is \(walLevel); a base backup needs replica or logical so archived WAL can be replayed. Set `wal_level = replica` in postgresql.conf and restart the server, then run base-backup again.")
            }
            guard archiveMode == "on" || archiveMode == "always" else {
                throw TSBackupError(.precondition, "The server's archive_mode is \(archiveMode): WAL is not archived, so a base backup could not be recovered to any point after it. Set `archive_mode = on` and `archive_command = 'tsbackup wal-push %p --repo \(request.repository.url)'` in postgresql.conf, restart the server, then run base-backup again.")
            }
            let (replication, superuser) = try await session.row(
                "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user", as: (Bool, Bool).self)
            guard replication || superuser else {
                throw TSBackupError(.permission, "The role \(request.settings.user) may not use the replication protocol that base backups are taken over. Run `ALTER ROLE \(SQLIdentifier.quote(request.settings.user)) REPLICATION` as a superuser (and allow it in pg_hba.conf with a `host replication` line), or connect as a role that has it.")
            }
            let system = try await session.value("SELECT system_identifier::text FROM pg_control_system()", as: String.self)
            let databases = try await session.values(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", as: String.self)
            let bytes = try await session.value("SELECT sum(pg_database_size(oid))::int8 FROM pg_database", as: Int64.self)
            let tablespaces = try await session.values(
                "SELECT spcname::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')", as: String.self)
            guard tablespaces.isEmpty else {
                throw TSBackupError(.precondition, "The cluster has tablespaces outside its data directory (\(tablespaces.joined(separator: ", "))); tsbackup's base backups stream one tar of the data directory and do not handle tablespaces yet. Use pg_basebackup -Ft directly for this cluster.")
            }
            return Cluster(server: server, systemIdentifier: system, databases: databases, clusterBytes: bytes)
        }
    }

    /// Every database's TimescaleDB version, hypertables and chunk counts, read over normal
    /// connections: the record `recover` checks the recovered cluster against.
    static func survey(_ settings: ConnectionSettings, databases: [String]) async throws -> [BaseBackupManifest.Database] {
        var result: [BaseBackupManifest.Database] = []
        for name in databases {
            let database: BaseBackupManifest.Database = try await DatabaseSession.with(settings.with(database: name)) { session in
                let version = try await session.rows(
                    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", as: String.self).first
                guard let version else { return .init(name: name, timescaledb: nil, catalogVersion: nil, hypertables: []) }
                let catalog = try await session.rows(
                    "SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version'", as: String.self).first
                let tables = try await session.rows(
                    """
                    SELECT h.schema_name::text, h.table_name::text,
                           (SELECT count(*) FROM _timescaledb_catalog.chunk c WHERE c.hypertable_id = h.id AND NOT c.dropped)::int8
                    FROM _timescaledb_catalog.hypertable h
                    WHERE h.compression_state <> 2
                    ORDER BY 1, 2
                    """, as: (String, String, Int64).self)
                return .init(name: name, timescaledb: version, catalogVersion: catalog,
                             hypertables: tables.map { .init(schema: $0.0, name: $0.1, chunkCount: Int($0.2)) })
            }
            result.append(database)
        }
        return result
    }
}

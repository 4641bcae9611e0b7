import Foundation
import PostgresNIO

/// The `restore` use case: the TimescaleDB restore procedure, run into a new database, proven
/// against the manifest, and only then (if asked) promoted.
public enum Restore {
    public struct Request: Sendable {
        public var id: String
        public var repositoryPath: String
        /// Where to connect on the target server (any existing database, e.g. postgres).
        public var target: ConnectionSettings
        public var into: String?
        public var jobs: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
        public var promoteTo: String?
        public var keepFailed = false
        public var createRoles = false

        public init(id: String, repositoryPath: String, target: ConnectionSettings) {
            self.id = id
            self.repositoryPath = repositoryPath
            self.target = target
        }
    }

    public struct Progress: Sendable {
        public var phase: String
        public var elapsed: Double
    }

    /// What happened, step by step, and the verdict of every check.
    public struct Report: Codable, Sendable {
        public var id: String
        public var database: String
        public var ok: Bool
        public var steps: [Step]
        public var checks: [Check]
        public var warnings: [String]
        public var promotedTo: String?
        public var previousDatabase: String?
        public var rollback: String?
        public var keptFailedDatabase: Bool

        public struct Step: Codable, Sendable {
            public var name: String
            public var seconds: Double
            public var ok: Bool
            public var detail: String?
        }

        /// One verification: a table's row count, a hypertable's chunk count, the scheduler...
        public struct Check: Codable, Sendable {
            public var subject: String
            public var check: String
            public var expected: String
            public var actual: String
            public var ok: Bool
        }

        enum CodingKeys: String, CodingKey {
            case id, database, ok, steps, checks, warnings
            case promotedTo = "promoted_to"
            case previousDatabase = "previous_database"
            case rollback
            case keptFailedDatabase = "kept_failed_database"
        }
    }

    /// Raised with the report when a step or a check failed, so the caller can still show it.
    public struct Failure: Error, Sendable {
        public var error: TSBackupError
        public var report: Report
    }

    public static func run(_ request: Request, onProgress: (@Sendable (Progress) -> Void)? = nil) async throws -> Report {
        let repository = try LocalRepository.open(request.repositoryPath, create: false)
        let (entry, manifest) = try repository.completeManifest(request.id)
        let database = request.into ?? defaultDatabaseName(source: manifest.source.database, id: manifest.id)
        let runner = RestoreRun(request: request, manifest: manifest, directory: entry.directory, database: database, onProgress: onProgress)
        return try await runner.run()
    }

    /// `<source>_restore_<id>`, lower case, within PostgreSQL's 63-byte identifier limit.
    public static func defaultDatabaseName(source: String, id: String) -> String {
        let suffix = "_restore_" + id.lowercased().replacingOccurrences(of: "-", with: "_")
        return String(source.prefix(63 - suffix.utf8.count)) + suffix
    }
}

/// One restore, with its log of steps.
final class RestoreRun: @unchecked Sendable {
    let request: Restore.Request
    let manifest: BackupManifest
    let directory: String
    let database: String
    let onProgress: (@Sendable (Restore.Progress) -> Void)?
    let started = Date()
    var report: Restore.Report
    /// Set once CREATE DATABASE succeeded: from then on a failure must clean up.
    var created = false

    init(request: Restore.Request, manifest: BackupManifest, directory: String, database: String,
         onProgress: (@Sendable (Restore.Progress) -> Void)?) {
        self.request = request
        self.manifest = manifest
        self.directory = directory
        self.database = database
        self.onProgress = onProgress
        self.report = .init(id: manifest.id, database: database, ok: false, steps: [], checks: [], warnings: [],
                            promotedTo: nil, previousDatabase: nil, rollback: nil, keptFailedDatabase: false)
    }

    var targetSettings: ConnectionSettings { request.target.with(database: database) }
    var archivePath: String { directory + "/" + manifest.archive }

    func run() async throws -> Restore.Report {
        do {
            let tools = try await step("preflight") { try await self.preflight() }
            try await step("create database") { try await self.createDatabase() }
            try await step("create extension and enter restore mode") { try await self.prepareDatabase() }
            let procedure = try RestoreProcedure(archive: archivePath, pgRestore: tools.pgRestore, settings: targetSettings, jobs: request.jobs)
            defer { procedure.removeLists() }
            try await step("split the archive's contents") { try procedure.splitLists(tools.contents) }
            try await step("pg_restore pre-data") { try await procedure.restorePreData() }
            try await step("pg_restore TimescaleDB catalog data") { try await procedure.restoreCatalogData() }
            try await step("pg_restore data and post-data, \(request.jobs) jobs") { try await procedure.restoreRest() }
            report.warnings += procedure.warnings
            try await step("checkpoint") {
                try await DatabaseSession.with(self.targetSettings) { try await $0.execute("CHECKPOINT") }
            }
            try await step("timescaledb_post_restore") { try await self.postRestore() }
            try await step("restart background workers") { try await self.restartWorkers() }
            let verification = RestoreVerification(manifest: manifest, settings: targetSettings)
            try await step("verify against the manifest, ANALYZE beside it") {
                // Both read every table; on two connections they share the work between cores.
                async let analyzed: Void = self.analyze()
                self.report.checks = try await verification.run()
                try await analyzed
                let failed = self.report.checks.filter { !$0.ok }
                guard failed.isEmpty else {
                    throw TSBackupError(.failed, "The restored database does not match backup \(self.manifest.id): \(failed.count) check\(failed.count == 1 ? "" : "s") failed (\(failed.prefix(3).map { "\($0.subject) \($0.check): expected \($0.expected), found \($0.actual)" }.joined(separator: "; "))).")
                }
            }
            if let target = request.promoteTo {
                try await step("promote to \(target)") { try await self.promote(to: target) }
            }
            report.ok = true
            return report
        } catch {
            let failure = (error as? TSBackupError) ?? TSBackupError(.failed, "The restore failed: \(error)")
            let failedStep = report.steps.last(where: { !$0.ok })?.name ?? "preflight"
            await cleanUpAfterFailure()
            var message = failure.message
            if created {
                message += report.keptFailedDatabase
                    ? " The database \(database) was kept for inspection (--keep-failed), out of restore mode; drop it when done."
                    : " The temporary database \(database) was dropped; nothing else was changed."
            }
            throw Restore.Failure(error: TSBackupError(failure.kind, "Restore of backup \(manifest.id) failed at step \"\(failedStep)\": \(message)"), report: report)
        }
    }

    /// Runs one named step, timing it and recording the outcome.
    @discardableResult
    func step<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        onProgress?(.init(phase: name, elapsed: Date().timeIntervalSince(started)))
        let begin = Date()
        do {
            let result = try await body()
            report.steps.append(.init(name: name, seconds: Date().timeIntervalSince(begin), ok: true, detail: nil))
            return result
        } catch {
            let detail = (error as? TSBackupError)?.message ?? "\(error)"
            report.steps.append(.init(name: name, seconds: Date().timeIntervalSince(begin), ok: false, detail: detail))
            throw error
        }
    }

    // MARK: Preflight

    struct Tools {
        var pgRestore: PostgresTool
        /// The archive's table of contents, read once.
        var contents: ArchiveContents
    }

    func preflight() async throws -> Tools {
        let (verification, listing) = try await Verify.check(manifest, directory: directory)
        guard verification.ok, let contents = listing else {
            throw TSBackupError(.precondition, "Backup \(manifest.id) does not verify (\(verification.problems.prefix(3).joined(separator: "; "))); tsbackup never restores a damaged backup. Restore another backup, or take a new one.")
        }
        // roles.sql is parsed before the target is touched: a hostile one stops the restore here.
        if request.createRoles { _ = try RoleScript.load(directory: directory, file: manifest.rolesFile) }
        return try await DatabaseSession.with(request.target) { session in
            let inspector = ServerInspector(session: session)
            let server = try await inspector.serverVersion()
            let target = request.target

            let superuser = try await session.value("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", as: Bool.self)
            guard superuser else {
                throw TSBackupError(.permission, "Role \"\(target.user)\" on \(target.host):\(target.port) is not a superuser. A TimescaleDB restore must set timescaledb.restoring for the new database (timescaledb_pre_restore), load the extension's own catalog tables and sequences, and stop and restart background workers; PostgreSQL allows these only to superusers. Ask an administrator or operator to run the restore, or use `tsbackup import-hypertable` to restore single hypertables as a database owner.")
            }
            if server.majorVersion < manifest.server.majorVersion {
                throw TSBackupError(.precondition, "Backup \(manifest.id) comes from PostgreSQL \(manifest.server.majorVersion) but the target runs \(server.majorVersion); a dump never restores into an older major version. Restore to a PostgreSQL \(manifest.server.majorVersion) or newer server.")
            }
            if server.majorVersion > manifest.server.majorVersion {
                report.warnings.append("The target runs PostgreSQL \(server.majorVersion), newer than the backup's \(manifest.server.majorVersion); the restore uses the target's pg_restore.")
            }
            let pgRestore = try await PostgresTools.locate("pg_restore", minimumMajor: max(server.majorVersion, manifest.pgDump.majorVersion))

            if let wanted = manifest.timescaledb?.version {
                let installable = try await inspector.installableTimescaleDBVersions()
                guard installable.contains(wanted) else {
                    let offer = installable.isEmpty ? "no TimescaleDB version at all" : "only \(installable.joined(separator: ", "))"
                    throw TSBackupError(.precondition, "Backup \(manifest.id) needs TimescaleDB \(wanted), but the target server offers \(offer). A TimescaleDB dump restores only into the version that wrote it. Either install TimescaleDB \(wanted) on the target server, or restore on a server that has \(wanted) and then run ALTER EXTENSION timescaledb UPDATE as the first statement of a fresh session there.")
                }
                let preloaded = try await inspector.timescaleDBPreloaded()
                guard preloaded else {
                    throw TSBackupError(.precondition, "TimescaleDB is not loaded on the target server (shared_preload_libraries lacks timescaledb). Add it in postgresql.conf and restart the server before restoring.")
                }
            }

            try await checkRoles(session, contents: contents)

            let exists = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(database))", as: Bool.self)
            if exists {
                throw TSBackupError(.precondition, "The database \"\(database)\" already exists on \(target.host):\(target.port); tsbackup never restores into an existing database. Name a new one with --into, or drop that one first if it is a leftover.")
            }
            if let promote = request.promoteTo, promote == database {
                throw TSBackupError(.usage, "--promote-to names the restore's own database \"\(database)\"; name the database the restore should replace.")
            }

            let (maxWorkers, used) = try await session.row(
                """
                SELECT current_setting('max_worker_processes')::int8,
                       (SELECT count(*) FROM pg_stat_activity WHERE backend_type NOT IN
                          ('client backend', 'autovacuum launcher', 'autovacuum worker', 'checkpointer', 'background writer',
                           'walwriter', 'archiver', 'startup', 'walreceiver', 'walsender', 'logical replication launcher')
                          AND backend_type NOT LIKE 'parallel%')
                """, as: (Int64, Int64).self)
            if used + 1 > maxWorkers {
                report.warnings.append("The target has no free background-worker slot (max_worker_processes \(maxWorkers), \(used) in use): the restored database's TimescaleDB scheduler may not start, so its jobs would not run. Raise max_worker_processes.")
            }
            return Tools(pgRestore: pgRestore, contents: contents)
        }
    }

    /// Owners of objects and jobs must exist on the target, or the restore loses them.
    func checkRoles(_ session: DatabaseSession, contents: ArchiveContents) async throws {
        var needed = Set(manifest.hypertables.map(\.owner) + manifest.jobs.map(\.owner))
        needed.formUnion(contents.owners)
        needed.remove("")
        let existing = Set(try await session.values("SELECT rolname::text FROM pg_roles", as: String.self))
        let missing = needed.subtracting(existing).sorted()
        guard !missing.isEmpty else { return }
        guard request.createRoles else {
            throw TSBackupError(.precondition, "The backup needs role\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) (object or job owners), which do not exist on the target; without them objects lose their owners and TimescaleDB jobs are dropped. Create them first, or add --create-roles to create them from the backup's roles.sql (without passwords).")
        }
        let script = try RoleScript.load(directory: directory, file: manifest.rolesFile)
        for role in missing {
            // The backup's own definition (attributes, no password), else a bare NOLOGIN role.
            let statements = script.statements(for: role)
            for statement in statements.isEmpty ? ["CREATE ROLE \(quoteIdentifier(role)) NOLOGIN"] : statements {
                try await session.execute(statement)
            }
        }
        report.warnings.append("Created role\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) on the target from the backup (no passwords: set them before anyone logs in as them).")
    }

    // MARK: Procedure

    func createDatabase() async throws {
        try await DatabaseSession.with(request.target) { session in
            // template0: the archive recreates everything; a customised template1 would collide.
            try await session.execute("CREATE DATABASE \(quoteIdentifier(database)) TEMPLATE template0")
        }
        created = true
    }

    func prepareDatabase() async throws {
        try await DatabaseSession.with(targetSettings) { session in
            if let version = manifest.timescaledb?.version {
                try await session.execute("CREATE EXTENSION timescaledb VERSION \(SQLLiteral.quote(version))")
                try await session.execute("SELECT timescaledb_pre_restore()")
            }
        }
    }

    func postRestore() async throws {
        guard manifest.timescaledb != nil else { return }
        try await DatabaseSession.with(targetSettings) { session in
            try await session.execute("SELECT timescaledb_post_restore()")
        }
    }

    /// The scheduler restarted by post_restore often reads the database setting before it is
    /// reset and exits; a restart from a new session after post_restore returned brings it back.
    func restartWorkers() async throws {
        guard manifest.timescaledb != nil else { return }
        try await DatabaseSession.with(targetSettings) { session in
            try await session.execute("SELECT _timescaledb_functions.restart_background_workers()")
        }
    }

    func analyze() async throws {
        try await DatabaseSession.with(targetSettings) { try await $0.execute("ANALYZE") }
    }

    func promote(to name: String) async throws {
        let previous = name + "_before_" + manifest.id.lowercased().replacingOccurrences(of: "-", with: "_")
        try await DatabaseSession.with(request.target) { session in
            let exists = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(name))", as: Bool.self)
            if exists {
                let taken = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(previous))", as: Bool.self)
                if taken {
                    throw TSBackupError(.precondition, "Cannot move \(name) aside: \(previous) already exists. Drop or rename it, then restore again.")
                }
                try await Self.terminateSessions(on: name, session: session)
                try await session.execute("ALTER DATABASE \(quoteIdentifier(name)) RENAME TO \(quoteIdentifier(previous))")
                report.previousDatabase = previous
            }
            try await Self.terminateSessions(on: database, session: session)
            try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RENAME TO \(quoteIdentifier(name))")
        }
        // Renaming stops the database's scheduler; start it again under the new name.
        let promoted = request.target.with(database: name)
        if manifest.timescaledb != nil {
            try await DatabaseSession.with(promoted) { try await $0.execute("SELECT _timescaledb_functions.restart_background_workers()") }
            if let previous = report.previousDatabase {
                _ = try? await DatabaseSession.with(request.target.with(database: previous)) {
                    try await $0.execute("SELECT _timescaledb_functions.restart_background_workers()")
                }
            }
        }
        report.promotedTo = name
        report.database = name
        if let previous = report.previousDatabase {
            report.rollback = "ALTER DATABASE \(quoteIdentifier(name)) RENAME TO \(quoteIdentifier(database)); ALTER DATABASE \(quoteIdentifier(previous)) RENAME TO \(quoteIdentifier(name)); then in \(name): SELECT _timescaledb_functions.restart_background_workers();"
        } else {
            report.rollback = "\(name) did not exist before; DROP DATABASE \(quoteIdentifier(name)) undoes the promotion."
        }
    }

    static func terminateSessions(on database: String, session: DatabaseSession) async throws {
        try await session.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(database) AND pid <> pg_backend_pid()")
    }

    // MARK: Failure

    func cleanUpAfterFailure() async {
        guard created else { return }
        if request.keepFailed {
            // Never leave a database in restore mode: inserts would fail and pg_upgrade breaks.
            _ = try? await DatabaseSession.with(request.target) { session in
                try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RESET timescaledb.restoring")
            }
            report.keptFailedDatabase = true
            return
        }
        _ = try? await DatabaseSession.with(request.target) { session in
            try await session.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(database)) WITH (FORCE)")
        }
    }
}

import Foundation
import PostgresNIO
import Synchronization

/// The `backup` use case: a consistent, self-describing, verified logical backup of one database.
public enum Backup {
    public struct Request: Sendable {
        public var settings: ConnectionSettings
        public var repository: RepositoryAccess
        /// The archive format; nil lets the backup choose per database (``BackupManifest/FormatChoice``).
        public var format: BackupManifest.Format? = nil
        /// pg_dump jobs for the directory format, and chunk batches dumped at once.
        public var jobs: Int = 2
        public var label: String?
        public var checksums = false
        /// pg_dump's --compress level (0-9); nil keeps pg_dump's default (gzip level 6). Starts at
        /// ``Backup/defaultCompression`` so that every caller (the CLI, the service) gets the same
        /// measured default.
        public var compression: Int? = Backup.defaultCompression
        public var tables: [String] = []
        public var excludeTables: [String] = []
        public var excludeSchemas: [String] = []
        /// Attempts when a chunk disappears under pg_dump (retention dropping it).
        public var maxAttempts = 3

        public init(settings: ConnectionSettings, repository: RepositoryAccess) {
            self.settings = settings
            self.repository = repository
        }
    }

    /// Where a running backup is, for a progress line.
    public struct Progress: Sendable {
        public var phase: String
        public var tablesDone: Int
        public var tablesTotal: Int
        public var bytesWritten: Int64
        /// Share of the source's table bytes already dumped, 0...1.
        public var fractionDone: Double
        public var elapsed: Double
    }

    /// The `--compress` level a backup uses unless told otherwise. pg_dump 15 compresses with
    /// gzip only, and its default level 6 spends most of a data-heavy backup's time compressing;
    /// level 2 (zlib's fast deflate) measured several times faster for about a fifth more bytes
    /// (docs/performance.md has the figures). `--compress 6` gives pg_dump's size back.
    public static let defaultCompression = 2

    /// pg_dump jobs for the directory format unless told otherwise: one per core (at least 2, at
    /// most 8, since each job is a connection to the source).
    public static var defaultJobs: Int { min(8, max(2, ProcessInfo.processInfo.activeProcessorCount)) }

    public static func run(_ request: Request, onProgress: (@Sendable (Progress) -> Void)? = nil) async throws -> BackupManifest {
        // Nothing is created before the source has been checked: a refused backup leaves no trace.
        let started = Date()
        return try await DatabaseSession.with(request.settings) { session in
            onProgress?(Progress(phase: "preflight", tablesDone: 0, tablesTotal: 0, bytesWritten: 0, fractionDone: 0, elapsed: Date().timeIntervalSince(started)))
            let plan = try await preflight(request, session: session)
            try await request.repository.checkSpace(forWriting: plan.databaseBytes)
            return try await request.repository.with(create: true) { repository in
                try await repository.checkSpace(forWriting: plan.databaseBytes)
                return try await repository.withLock(command: "backup of \(request.settings.displayName)") { staleWarning in
                    var warnings = plan.warnings
                    if let staleWarning { warnings.append(staleWarning) }
                    return try await execute(request, plan: plan, session: session, repository: repository,
                                             warnings: warnings, started: started, onProgress: onProgress)
                }
            }
        }
    }

    /// `body`'s result and its wall-clock seconds (for work that runs beside other work).
    static func timed<T: Sendable>(_ body: () async throws -> T) async rethrows -> (T, Double) {
        let start = Date()
        let result = try await body()
        return (result, Date().timeIntervalSince(start))
    }

    struct Plan {
        var server: ServerInspection.Server
        var pgDump: PostgresTool
        var pgDumpAll: PostgresTool?
        var pgRestore: PostgresTool
        var scope: DumpScope
        var tableBytes: [String: Int64]
        var databaseBytes: Int64
        var warnings: [String]
        var lockBudget: ServerInspection.LockBudget
        /// Set when the chunks are dumped in batches: why.
        var batchReason: String?
        /// The archive format and why (the user's or the automatic choice).
        var formatChoice: BackupManifest.FormatChoice
        var format: BackupManifest.Format { formatChoice.format }
    }

    /// Everything that can be checked before a byte is written.
    static func preflight(_ request: Request, session: DatabaseSession) async throws -> Plan {
        let inspector = ServerInspector(session: session)
        let server = try await inspector.serverVersion()
        let timescale = try await inspector.timescaleDB()
        var warnings: [String] = request.settings.warnings

        if !timescale.installed {
            warnings.append("TimescaleDB is not installed in database \"\(request.settings.database)\"; this is a plain PostgreSQL backup.")
        }
        if let version = timescale.version, let catalog = timescale.catalogVersion, version != catalog {
            throw TSBackupError(.precondition, "The TimescaleDB extension of \(request.settings.displayName) is at \(version) but its catalog says \(catalog): an update or restore did not finish, and a backup of it would not restore. Finish it first (ALTER EXTENSION timescaledb UPDATE in a fresh session, or timescaledb_post_restore()).")
        }
        if timescale.restoring.databaseSetting {
            warnings.append("The source database is in TimescaleDB restore mode (timescaledb.restoring = on); its catalog may be incomplete.")
        }

        // Each lookup runs every candidate's --version: child processes, started side by side
        // and beside the catalog queries below instead of one after another.
        async let pgDumpFound = PostgresTools.locate("pg_dump", minimumMajor: server.majorVersion)
        async let pgRestoreFound = PostgresTools.locate("pg_restore", minimumMajor: server.majorVersion)
        async let pgDumpAllFound = try? PostgresTools.locate("pg_dumpall", minimumMajor: server.majorVersion)

        let scope = try await DumpScope.resolve(session: session, tables: request.tables,
                                                excludeTables: request.excludeTables, excludeSchemas: request.excludeSchemas)

        let unreadable = try await inspector.unreadableRelations().filter { !scope.excludedTables.contains($0) }
        if !unreadable.isEmpty {
            throw TSBackupError(.permission, "Role \"\(request.settings.user)\" cannot read \(unreadable.count) table(s) of \(request.settings.displayName), e.g. \(unreadable.prefix(3).joined(separator: ", ")); pg_dump needs SELECT on every table and chunk. Run the backup as the owner of all tables or a superuser, or GRANT SELECT to this role.")
        }

        let budget = try await inspector.lockBudget()
        // Past the lock limit, chunks go in batches (Timescale/ChunkBatches.swift) or the backup is refused.
        let batchReason = try await ChunkBatchPlan.decide(session: session, budget: budget, jobs: request.jobs)
        if let batchReason {
            warnings.append(batchReason + ".")
        }

        // Checked against the repository's free space once it is open.
        let databaseBytes = try await session.value("SELECT pg_database_size(current_database())", as: Int64.self)

        let tableBytes = Dictionary(try await session.rows(
            """
            SELECT format('%s.%s', n.nspname, c.relname), pg_relation_size(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            """, as: (String, Int64).self, purpose: "reading table sizes"
        ).map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })

        let formatChoice = chooseFormat(request, tableBytes: tableBytes, excluded: scope.excludedTables)
        let pgDump = try await pgDumpFound
        let pgRestore = try await pgRestoreFound
        let pgDumpAll = await pgDumpAllFound
        return Plan(server: server, pgDump: pgDump, pgDumpAll: pgDumpAll, pgRestore: pgRestore, scope: scope,
                    tableBytes: tableBytes, databaseBytes: databaseBytes, warnings: warnings, lockBudget: budget, batchReason: batchReason,
                    formatChoice: formatChoice)
    }

    static func execute(_ request: Request, plan: Plan, session: DatabaseSession, repository: any Repository,
                        warnings initialWarnings: [String], started: Date, onProgress: (@Sendable (Progress) -> Void)?) async throws -> BackupManifest {
        let id = try await repository.newID()
        let staged = try await repository.beginEntry(id)
        let staging = staged.directory
        let archiveName = plan.format == .directory ? "dump" : "dump.pgdump"
        let archivePath = staging + "/" + archiveName
        let source = BackupManifest.Source(host: request.settings.host, port: request.settings.port,
                                           database: request.settings.database, user: request.settings.user)
        var manifest = BackupManifest(
            id: id, label: request.label, status: .failed, error: nil, startedAt: started, finishedAt: started,
            durationSeconds: 0, tsbackupVersion: TSBackupVersion.current, source: source, server: plan.server,
            pgDump: plan.pgDump, timescaledb: nil, extensions: [], hypertables: [], plainTables: [], jobs: [],
            chunkTables: [], databaseBytes: 0, format: plan.format, jobsUsed: plan.format == .directory ? request.jobs : 1,
            checksums: request.checksums, compression: request.compression, archive: archiveName, rolesFile: "roles.sql", rolesSource: "",
            files: [], warnings: initialWarnings, retries: [])
        manifest.formatChoice = plan.formatChoice

        var phases: [String: Double] = ["preflight": Date().timeIntervalSince(started)]
        func phase<T>(_ name: String, _ body: () async throws -> T) async rethrows -> T {
            let start = Date()
            defer { phases[name, default: 0] += Date().timeIntervalSince(start) }
            return try await body()
        }
        do {
            var survey: DatabaseSurvey?
            var batched: ChunkBatchRun.Outcome?
            for attempt in 1...max(1, request.maxAttempts) {
                try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                let snapshot = try await session.value("SELECT pg_export_snapshot()", as: String.self)
                onProgress?(Progress(phase: "dumping", tablesDone: 0, tablesTotal: plan.tableBytes.count, bytesWritten: 0, fractionDone: 0, elapsed: Date().timeIntervalSince(started)))
                // Past the lock limit: decide the chunk path again, in the snapshot itself.
                let batchPlan = plan.batchReason == nil ? nil
                    : try await ChunkBatchPlan.make(session: session, lockBudget: plan.lockBudget.budget, jobs: request.jobs)
                let dump = DumpRun(request: request, plan: plan, archivePath: archivePath, snapshot: snapshot,
                                   started: started, onProgress: onProgress, extraArguments: batchPlan?.mainExclusions ?? [])
                // The survey reads the same snapshot on our session while pg_dump runs.
                async let surveyed = Self.timed {
                    try await DatabaseSurvey.take(session, checksums: request.checksums, excludedTables: plan.scope.excludedTables,
                                                  countedElsewhere: Set(batchPlan?.batched.map(\.qualifiedName) ?? []))
                }
                let outcome = try await phase("dump") { try await dump.run() }
                let result: DatabaseSurvey
                do {
                    let (taken, seconds) = try await surveyed
                    phases["survey", default: 0] += seconds
                    result = taken
                    if outcome.succeeded, let batchPlan {
                        // Still inside the snapshot's transaction: the batches import it.
                        batched = try await ChunkBatchRun.dump(batchPlan, request: request, plan: plan, snapshot: snapshot,
                                                               staging: staging, started: started, onProgress: onProgress)
                    }
                } catch {
                    _ = try? await session.execute("ROLLBACK")
                    throw error
                }
                try await session.execute("COMMIT")

                if outcome.succeeded {
                    survey = result
                    manifest.warnings += outcome.warnings
                    break
                }
                if outcome.chunkVanished, attempt < request.maxAttempts {
                    manifest.retries.append(.init(attempt: attempt, reason: outcome.errorSummary))
                    try? FileManager.default.removeItem(atPath: archivePath)
                    try? FileManager.default.removeItem(atPath: staging + "/chunks")
                    batched = nil
                    continue
                }
                throw TSBackupError(.failed, "pg_dump failed (\(outcome.status)) on attempt \(attempt): \(outcome.errorSummary)")
            }
            guard let survey else { throw TSBackupError(.failed, "pg_dump did not finish.") }
            manifest.timescaledb = survey.timescaledb
            manifest.extensions = survey.extensions
            manifest.hypertables = survey.hypertables
            manifest.plainTables = survey.plainTables
            manifest.jobs = survey.jobs
            manifest.chunkTables = survey.chunkTables
            manifest.databaseBytes = survey.databaseBytes
            if let outcome = batched, let reason = plan.batchReason {
                ChunkBatchRun.record(outcome, reason: reason, chunkIDs: survey.chunkIDs, manifest: &manifest)
                phases["chunk batches"] = outcome.batchSeconds
                phases["root check"] = outcome.checkSeconds
            }
            // The manifest now holds what it needs of the batches: free their chunk rows and
            // figures (megabytes at 50,000 chunks) before the archive check and the manifest's
            // encoding, the backup's largest moments.
            batched = nil

            onProgress?(Progress(phase: "roles and archive check", tablesDone: 0, tablesTotal: 0, bytesWritten: FileSystem.size(of: staging), fractionDone: 1, elapsed: Date().timeIntervalSince(started)))
            // Two independent child processes: run them side by side.
            async let rolesSource = RoleDump.write(to: staging + "/roles.sql", plan: plan, settings: request.settings, session: session)
            let missing = try await phase("archive check") {
                try await Archive.missingTimescaleEntries(ChunkBatchRun.archives(main: archivePath, manifest: manifest, directory: staging),
                                                          pgRestore: plan.pgRestore, chunks: manifest.chunkTables,
                                                          timescaleInstalled: survey.timescaledb != nil)
            }
            let rolesWait = Date()
            manifest.rolesSource = try await rolesSource
            phases["roles wait"] = Date().timeIntervalSince(rolesWait)
            guard missing.isEmpty else {
                throw TSBackupError(.failed, "The archive pg_dump wrote is incomplete: \(missing.count) expected entr\(missing.count == 1 ? "y is" : "ies are") missing (\(missing.prefix(5).joined(separator: ", "))). The backup was not kept; check pg_dump's options and warnings.")
            }

            onProgress?(Progress(phase: "hashing", tablesDone: 0, tablesTotal: 0, bytesWritten: FileSystem.size(of: staging), fractionDone: 1, elapsed: Date().timeIntervalSince(started)))
            manifest.files = try await phase("hashing") { try await FileSystem.hashFiles(under: staging) }
            manifest.phaseSeconds = phases
            manifest.markFinished(.complete)
            return try await repository.commitEntry(staged, manifest: manifest)
        } catch {
            manifest.phaseSeconds = phases
            let failure = (error as? TSBackupError) ?? TSBackupError(.failed, "The backup failed: \(error)")
            manifest.markFinished(.failed, error: failure.message)
            await repository.failEntry(staged, manifest: manifest)
            throw failure
        }
    }
}

/// One pg_dump run on an exported snapshot, with its stderr sorted into progress, expected
/// warnings, other warnings and errors.
struct DumpRun: Sendable {
    let request: Backup.Request
    let plan: Backup.Plan
    let archivePath: String
    let snapshot: String
    let started: Date
    let onProgress: (@Sendable (Backup.Progress) -> Void)?
    /// `--exclude-table` options leaving out the batched hypertables (ChunkBatches.swift).
    var extraArguments: [String] = []

    struct Outcome {
        var succeeded: Bool
        var status: String
        var warnings: [String]
        var errors: [String]
        /// A relation pg_dump meant to lock was gone (a chunk dropped by retention meanwhile).
        var chunkVanished: Bool
        var errorSummary: String { errors.isEmpty ? "no error message" : errors.joined(separator: " ").singleLine(limit: 600) }
    }

    var arguments: [String] {
        var arguments = ["--format=\(plan.format == .directory ? "directory" : "custom")",
                         "--file=\(archivePath)", "--snapshot=\(snapshot)", "--no-password", "--no-sync", "--verbose"]
        if plan.format == .directory { arguments.append("--jobs=\(max(1, request.jobs))") }
        if let level = request.compression { arguments.append("--compress=\(level)") }
        return arguments + plan.scope.pgDumpArguments + extraArguments + [request.settings.database]
    }

    func run() async throws -> Outcome {
        let collector = Mutex(StderrCollector())
        let totalBytes = max(1, plan.tableBytes.values.reduce(0, +))
        let tableCount = plan.tableBytes.count
        let lastReport = Mutex(Date.distantPast)
        let archivePath = archivePath
        let started = started
        let tableBytes = plan.tableBytes
        let onProgress = onProgress
        let environment = request.settings.childProcessEnvironment()
        let result = try await ProcessRunner.runStreamingErrors(plan.pgDump.path, arguments, environment: environment) { line in
            let dumped = collector.withLock { $0.take(line, tableBytes: tableBytes) }
            guard let onProgress, dumped else { return }
            let now = Date()
            let due = lastReport.withLock { last in
                guard now.timeIntervalSince(last) >= 0.25 else { return false }
                last = now
                return true
            }
            guard due else { return }
            let (done, bytesDone) = collector.withLock { ($0.tablesDumped, $0.bytesDumped) }
            onProgress(.init(phase: "dumping", tablesDone: done, tablesTotal: tableCount,
                             bytesWritten: FileSystem.size(of: archivePath),
                             fractionDone: min(1, Double(bytesDone) / Double(totalBytes)), elapsed: now.timeIntervalSince(started)))
        }
        let collected = collector.withLock { $0 }
        return Outcome(succeeded: result.succeeded && collected.errors.isEmpty, status: result.statusDescription,
                       warnings: collected.warnings, errors: collected.errors, chunkVanished: collected.chunkVanished)
    }
}

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
        /// The zstd level tsbackup compresses a directory archive's data files with, after
        /// pg_dump wrote them uncompressed (``ArchiveDataCompression``); nil lets pg_dump
        /// compress them at `compression` as before. Custom-format archives and chunk batches
        /// are always compressed by pg_dump at `compression`. Starts at
        /// ``Backup/defaultZstdLevel``.
        public var zstdLevel: Int? = Backup.defaultZstdLevel
        /// The user asked for zstd (`--compress zstd[:N]`): the automatic format choice keeps the
        /// directory format, the only one tsbackup compresses with zstd.
        public var zstdAsked = false
        public var tables: [String] = []
        public var excludeTables: [String] = []
        public var excludeSchemas: [String] = []
        /// Attempts when a chunk disappears under pg_dump (retention dropping it).
        public var maxAttempts = 3

        public init(settings: ConnectionSettings, repository: RepositoryAccess) {
            self.settings = settings
            self.repository = repository
        }

        /// Applies a `--compress` choice: a pg_dump level turns tsbackup's zstd off; zstd keeps
        /// the default pg_dump level for the archives pg_dump still compresses (custom format,
        /// chunk batches).
        public mutating func apply(_ choice: CompressionChoice) {
            switch choice {
            case .pgDump(let level):
                compression = level
                zstdLevel = nil
                zstdAsked = false
            case .zstd(let level):
                compression = Backup.defaultCompression
                zstdLevel = level
                zstdAsked = true
            }
        }

        /// Whether tsbackup compresses the data files of an archive in `format` with zstd.
        func compressesDataFiles(_ format: BackupManifest.Format) -> Bool { format == .directory && zstdLevel != nil }
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

    /// The zstd level of a default directory-format backup: pg_dump writes the data files
    /// uncompressed on `--jobs` connections and tsbackup compresses them with zstd beside the
    /// dump. Level 1 measured at pg_dump -Fc's size (0.98x) and faster than gzip level 2; level
    /// 3 was no smaller on COPY text and cost about 1.5x the time on 2 cores, where zstd competes
    /// with the server's COPY for the CPU (docs/performance.md has the figures).
    public static let defaultZstdLevel = 1

    /// The range `--compress zstd:N` accepts (zstd's levels without its memory-hungry "ultra" ones).
    public static let zstdLevels = 1...19

    /// How `--compress` asks for compression: pg_dump's gzip at a level (0 = none, the
    /// meaning `--compress N` always had), or tsbackup's zstd at a level for directory archives.
    public enum CompressionChoice: Sendable, Equatable {
        case pgDump(level: Int)
        case zstd(level: Int)

        /// `0`-`9` or `gzip:0-9` (pg_dump's gzip), `none` (0), `zstd` or `zstd:1-19`; nil otherwise.
        public init?(argument: String) {
            let text = argument.lowercased()
            if text == "none" { self = .pgDump(level: 0); return }
            if text == "zstd" { self = .zstd(level: Backup.defaultZstdLevel); return }
            if text.hasPrefix("zstd:"), let level = Int(text.dropFirst(5)), Backup.zstdLevels.contains(level) { self = .zstd(level: level); return }
            let gzip = text.hasPrefix("gzip:") ? String(text.dropFirst(5)) : text
            if let level = Int(gzip), (0...9).contains(level), gzip.allSatisfy(\.isASCII) { self = .pgDump(level: level); return }
            return nil
        }
    }

    /// pg_dump jobs for the directory format unless told otherwise: one per core (at least 2, at
    /// most 8, since each job is a connection to the source).
    public static var defaultJobs: Int { min(8, max(2, ProcessInfo.processInfo.activeProcessorCount)) }

    public static func run(_ request: Request, onProgress: (@Sendable (Progress) -> Void)? = nil) async throws -> BackupManifest {
        // Nothing is created before the source has been checked: a refused backup leaves no trace.
        let started = Date()
        // The tools' --version runs (child processes) go on while the connection is made.
        PostgresTools.prefetch(["pg_dump", "pg_restore", "pg_dumpall"])
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
        // One round trip (two with TimescaleDB) for the server, the extension and the lock
        // settings; the `inspect` command's full reading also connects to every other database.
        let facts = try await BackupServerFacts.read(session)
        let server = facts.server
        var warnings: [String] = request.settings.warnings

        if !facts.timescaleInstalled {
            warnings.append("TimescaleDB is not installed in database \"\(request.settings.database)\"; this is a plain PostgreSQL backup.")
        }
        if let version = facts.timescaleVersion, let catalog = facts.catalogVersion, version != catalog {
            throw TSBackupError(.precondition, "The TimescaleDB extension of \(request.settings.displayName) is at \(version) but its catalog says \(catalog): an update or restore did not finish, and a backup of it would not restore. Finish it first (ALTER EXTENSION timescaledb UPDATE in a fresh session, or timescaledb_post_restore()).")
        }
        if facts.restoringDatabaseSetting {
            warnings.append("The source database is in TimescaleDB restore mode (timescaledb.restoring = on); its catalog may be incomplete.")
        }

        // Each lookup runs every candidate's --version: child processes, started before the
        // connection (``run``) and awaited only here, after the catalog queries below. pg_dumpall
        // is optional (roles fall back to a catalog query) and is looked up beside pg_dump.
        async let pgDumpFound = PostgresTools.locate("pg_dump", minimumMajor: server.majorVersion)
        async let pgRestoreFound = PostgresTools.locate("pg_restore", minimumMajor: server.majorVersion)

        let scope = try await DumpScope.resolve(session: session, tables: request.tables,
                                                excludeTables: request.excludeTables, excludeSchemas: request.excludeSchemas)

        // A superuser reads every table; the check reads every relation's privileges (62 ms at
        // 5,000 chunks), so it runs only for other roles.
        let unreadable = facts.superuser ? [] : try await ServerInspector(session: session).unreadableRelations().filter { !scope.excludedTables.contains($0) }
        if !unreadable.isEmpty {
            throw TSBackupError(.permission, "Role \"\(request.settings.user)\" cannot read \(unreadable.count) table(s) of \(request.settings.displayName), e.g. \(unreadable.prefix(3).joined(separator: ", ")); pg_dump needs SELECT on every table and chunk. Run the backup as the owner of all tables or a superuser, or GRANT SELECT to this role.")
        }

        let budget = try await facts.lockBudget(session)
        // Past the lock limit, chunks go in batches (Timescale/ChunkBatches.swift) or the backup is refused.
        let batchReason = try await ChunkBatchPlan.decide(session: session, budget: budget, jobs: request.jobs)
        if let batchReason {
            warnings.append(batchReason + ".")
        }

        // Checked against the repository's free space once it is open.
        let databaseBytes = facts.databaseBytes

        let tableBytes = try await ServerInspector.tableBytes(
            session, relationsPerSession: TestSeams.sizesChunksPerSession() ?? ServerInspector.sizeChunksPerSession)

        let formatChoice = chooseFormat(request, tableBytes: tableBytes, excluded: scope.excludedTables)
        let pgDump = try await pgDumpFound
        let pgRestore = try await pgRestoreFound
        return Plan(server: server, pgDump: pgDump, pgRestore: pgRestore, scope: scope,
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
            checksums: request.checksums, compression: request.compressesDataFiles(plan.format) ? 0 : request.compression, archive: archiveName, rolesFile: "roles.sql", rolesSource: "",
            files: [], warnings: initialWarnings, retries: [])
        manifest.formatChoice = plan.formatChoice

        var phases: [String: Double] = ["preflight": Date().timeIntervalSince(started)]
        func phase<T>(_ name: String, _ body: () async throws -> T) async rethrows -> T {
            let start = Date()
            defer { phases[name, default: 0] += Date().timeIntervalSince(start) }
            return try await body()
        }
        var compressor: DataFileCompressor?
        do {
            // Roles live in the shared catalog, outside any database snapshot: pg_dumpall (its own
            // connection) writes them while pg_dump and the survey run, instead of after them.
            // Leaving this block, by success or error, awaits it (or cancels it) first, so it never
            // writes into an entry being removed.
            let rolesPath = staging + "/roles.sql"
            async let rolesDumped = RoleDump.dumpAll(to: rolesPath, plan: plan, settings: request.settings)
            var survey: DatabaseSurvey?
            var batched: ChunkBatchRun.Outcome?
            for attempt in 1...max(1, request.maxAttempts) {
                // zstd of the data files, each as soon as pg_dump reports it done (DataFileCompressor).
                compressor = request.zstdLevel.flatMap { level in
                    request.compressesDataFiles(plan.format) ? DataFileCompressor(staging: staging, archive: archiveName, level: level) : nil
                }
                try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                let snapshot = try await session.value("SELECT pg_export_snapshot()", as: String.self)
                onProgress?(Progress(phase: "dumping", tablesDone: 0, tablesTotal: plan.tableBytes.count, bytesWritten: 0, fractionDone: 0, elapsed: Date().timeIntervalSince(started)))
                // Past the lock limit: decide the chunk path again, in the snapshot itself.
                let batchPlan = plan.batchReason == nil ? nil
                    : try await ChunkBatchPlan.make(session: session, lockBudget: plan.lockBudget.budget, jobs: request.jobs)
                var dump = DumpRun(request: request, plan: plan, archivePath: archivePath, snapshot: snapshot,
                                   started: started, onProgress: onProgress, extraArguments: batchPlan?.mainExclusions ?? [])
                if let compressor { dump.onDataFinished = { compressor.submit("\($0).dat") } }
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
                await compressor?.idle()
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
            // The table-of-contents check (a pg_restore child reading toc.dat, which is never
            // compressed) runs beside the roles' wait, the compression's rest and the hashing; its
            // verdict is awaited before anything is committed.
            let archives = ChunkBatchRun.archives(main: archivePath, manifest: manifest, directory: staging)
            let chunkTables = manifest.chunkTables
            let timescaleInstalled = survey.timescaledb != nil
            let copied = ChunkBatchRun.chunksInDataFiles(manifest)
            async let checked = Self.timed {
                try await Archive.missingTimescaleEntries(archives, pgRestore: plan.pgRestore, chunks: chunkTables,
                                                          timescaleInstalled: timescaleInstalled, dataCopied: copied)
            }
            let rolesWait = Date()
            if try await rolesDumped {
                manifest.rolesSource = "pg_dumpall"
            } else {
                // pg_dumpall is missing or refused (e.g. no access it needs): rebuild from pg_roles.
                manifest.rolesSource = try await RoleDump.writeFromCatalog(to: rolesPath, session: session)
            }
            phases["roles wait"] = Date().timeIntervalSince(rolesWait)

            var compressed: [BackupManifest.FileEntry] = []
            if let compressor {
                onProgress?(Progress(phase: "compressing", tablesDone: 0, tablesTotal: 0, bytesWritten: FileSystem.size(of: staging), fractionDone: 1, elapsed: Date().timeIntervalSince(started)))
                // What is left after the dump: files pg_dump did not report, and those still in progress.
                let (files, summary) = try await phase("compression") { try await compressor.finish() }
                compressed = files
                manifest.fileCompression = summary
            }
            onProgress?(Progress(phase: "hashing", tablesDone: 0, tablesTotal: 0, bytesWritten: FileSystem.size(of: staging), fractionDone: 1, elapsed: Date().timeIntervalSince(started)))
            // The compressed files were hashed as they were written.
            let skipping = Set(compressed.map(\.path))
            let hashed = try await phase("hashing") { try await FileSystem.hashFiles(under: staging, skipping: skipping) }
            let (missing, checkSeconds) = try await checked
            phases["archive check"] = checkSeconds
            guard missing.isEmpty else {
                throw TSBackupError(.failed, "The archive pg_dump wrote is incomplete: \(missing.count) expected entr\(missing.count == 1 ? "y is" : "ies are") missing (\(missing.prefix(5).joined(separator: ", "))). The backup was not kept; check pg_dump's options and warnings.")
            }
            manifest.files = (hashed + compressed).sorted { $0.path < $1.path }
            manifest.phaseSeconds = phases
            manifest.markFinished(.complete)
            return try await repository.commitEntry(staged, manifest: manifest)
        } catch {
            // No compression thread may still write into the staging directory that goes now.
            await compressor?.idle()
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
    /// Called with the dump id of each table data file pg_dump reports finished (parallel dumps).
    var onDataFinished: (@Sendable (Int) -> Void)? = nil

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
        if request.compressesDataFiles(plan.format) {
            // tsbackup compresses the data files with zstd afterwards (ArchiveDataCompression).
            arguments.append("--compress=0")
        } else if let level = request.compression {
            arguments.append("--compress=\(level)")
        }
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
        let onDataFinished = onDataFinished
        let result = try await ProcessRunner.runStreamingErrors(plan.pgDump.path, arguments, environment: environment) { line in
            if let onDataFinished, let id = ArchiveDataCompression.finishedDataItem(line) { onDataFinished(id) }
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

import Foundation
import PostgresNIO

/// The `restore` use case: the TimescaleDB restore procedure, run into a new database, proven
/// against the manifest, and only then (if asked) promoted.
public enum Restore {
    public struct Request: Sendable {
        public var id: String
        public var repository: RepositoryAccess
        /// Where to connect on the target server (any existing database, e.g. postgres).
        public var target: ConnectionSettings
        public var into: String?
        public var jobs: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
        public var promoteTo: String?
        public var keepFailed = false
        public var createRoles = false
        /// After the restore verified at the backup's TimescaleDB version: update the extension
        /// (to the target's default or a named version) and verify again.
        public var updateExtension: ExtensionUpdate.Requested?
        /// Tests only: run ALTER EXTENSION even when preflight would call the update a no-op or
        /// find no update path, to exercise the real statement with the one version built here.
        public var forceExtensionUpdateForTesting = false
        /// How long clean-up after a failure keeps trying a server that cannot be reached (it
        /// crashed or restarted under the restore) to drop the new database (``WaitSetting/cleanup``).
        public var cleanupPatience: Duration = WaitSetting.cleanup.default

        public init(id: String, repository: RepositoryAccess, target: ConnectionSettings) {
            self.id = id
            self.repository = repository
            self.target = target
        }
    }

    public struct Progress: Sendable {
        public var phase: String
        public var elapsed: Double
        /// Table-of-contents entries pg_restore has restored, of all in the archive.
        public var objectsDone: Int = 0
        public var objectsTotal: Int = 0
        /// Archive data bytes loaded (directory archives only; 0 of 0 for a custom archive).
        public var bytesLoaded: Int64 = 0
        public var bytesTotal: Int64 = 0
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
        /// What preflight found about versions: the backup's, the target's, the update path.
        public var versions: Versions?
        /// The extension update after the first verification (`--update-extension`), with the
        /// second verification; nil when none was asked for. `checks` is the first verification.
        public var extensionUpdate: ExtensionUpdateReport?

        public struct Versions: Codable, Sendable, Equatable {
            public var backupPostgresMajor: Int
            public var targetPostgres: String
            /// The TimescaleDB version the backup was taken at, and that the restore installs.
            public var backupTimescaleDB: String?
            public var targetInstallable: [String]
            public var targetDefault: String?
            /// The version an update would go to: the requested one, else the target's default.
            public var updateTarget: String?
            /// The update path from pg_extension_update_paths, e.g. "2.18.2--2.19.3"; nil if none.
            public var updatePath: String?
            /// nil when no update is needed (backup's version = update target).
            public var updatePathExists: Bool?

            enum CodingKeys: String, CodingKey {
                case backupPostgresMajor = "backup_postgres_major"
                case targetPostgres = "target_postgres"
                case backupTimescaleDB = "backup_timescaledb"
                case targetInstallable = "target_installable"
                case targetDefault = "target_default"
                case updateTarget = "update_target"
                case updatePath = "update_path"
                case updatePathExists = "update_path_exists"
            }
        }

        public struct ExtensionUpdateReport: Codable, Sendable, Equatable {
            public enum Status: String, Codable, Sendable {
                /// Updated, version-checked and verified again.
                case updated
                /// The backup's version already is the one asked for.
                case notNeeded = "not needed"
                /// The update or its second verification failed; `error` says where.
                case failed
            }

            public var fromVersion: String
            public var toVersion: String
            public var path: String?
            public var status: Status
            /// Read from a fresh session after the update (or after it failed).
            public var installedVersion: String?
            public var defaultVersion: String?
            public var catalogVersion: String?
            public var error: String?
            /// The second verification, after the update.
            public var checks: [Check]

            enum CodingKeys: String, CodingKey {
                case fromVersion = "from_version"
                case toVersion = "to_version"
                case path, status
                case installedVersion = "installed_version"
                case defaultVersion = "default_version"
                case catalogVersion = "catalog_version"
                case error, checks
            }
        }

        public struct Step: Codable, Sendable {
            public var name: String
            public var seconds: Double
            public var ok: Bool
            public var detail: String?
        }

        /// One verification: a table's row count, a hypertable's chunk count, the scheduler...
        public struct Check: Codable, Sendable, Equatable {
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
            case versions
            case extensionUpdate = "extension_update"
        }
    }

    /// Raised with the report when a step or a check failed, so the caller can still show it.
    public struct Failure: Error, Sendable {
        public var error: TSBackupError
        public var report: Report
    }

    public static func run(_ request: Request, onProgress: (@Sendable (Progress) -> Void)? = nil) async throws -> Report {
        try await request.repository.with(create: false) { repository in
            let (entry, manifest) = try await repository.completeManifest(request.id)
            let database = request.into ?? defaultDatabaseName(source: manifest.source.database, id: manifest.id)
            // pg_restore reads local files: the entry's own directory, or a scratch copy removed afterwards.
            let local = try await repository.materialize(entry, files: manifest.files)
            defer { local.remove() }
            let runner = RestoreRun(request: request, manifest: manifest, directory: local.directory, database: database, onProgress: onProgress)
            return try await runner.run()
        }
    }

    /// Ends the restore's claim on its new database once its report is out: removes the marker
    /// (InterruptedRuns) that makes the next restore on the server drop the database. Call it
    /// after printing or recording the report of a successful ``run(_:onProgress:)``; until then
    /// a run killed after its verification still counts as interrupted, and its database is
    /// dropped and named by the next restore, so no restored database is left that no report
    /// names. A promoted database carries no marker (it was removed before the promotion).
    /// Does nothing when the marker is not this process's for this backup any more.
    public static func acknowledge(_ report: Report, request: Request) async throws {
        guard report.ok, report.promotedTo == nil else { return }
        try await InterruptedRuns.release(database: report.database, backup: report.id, settings: request.target)
    }

    /// `<source>_restore_<id>`, lower case, within PostgreSQL's 63-byte identifier limit.
    public static func defaultDatabaseName(source: String, id: String) -> String {
        let suffix = "_restore_" + id.lowercased().replacingOccurrences(of: "-", with: "_")
        return String(source.prefix(63 - suffix.utf8.count)) + suffix
    }
}

/// One restore, with its log of steps. An actor: the report is written by the steps while
/// ANALYZE and verification run concurrently beside them.
actor RestoreRun {
    let request: Restore.Request
    let manifest: BackupManifest
    let directory: String
    let database: String
    let started: Date
    let progress: RestoreProgressReporter
    var report: Restore.Report
    /// Set once CREATE DATABASE succeeded: from then on a failure must clean up.
    var created = false
    /// Set when the extension update failed and the database was found back at the backup's
    /// version, verified: it is kept, not dropped.
    var keptAtBackupVersion = false
    var updateDecision: ExtensionUpdate.Decision = .none
    /// The comment that marks the new database as this run's while it is restored.
    let marker: InterruptedRuns.Owner

    init(request: Restore.Request, manifest: BackupManifest, directory: String, database: String,
         onProgress: (@Sendable (Restore.Progress) -> Void)?) {
        self.request = request
        self.manifest = manifest
        self.directory = directory
        self.database = database
        self.report = .init(id: manifest.id, database: database, ok: false, steps: [], checks: [], warnings: [],
                            promotedTo: nil, previousDatabase: nil, rollback: nil, keptFailedDatabase: false)
        let now = Date()
        self.started = now
        self.progress = RestoreProgressReporter(started: now, onProgress: onProgress)
        self.marker = InterruptedRuns.Owner(kind: .restore, backup: manifest.id)
    }

    /// Sessions on the restore target commit without waiting for WAL flushes until the final
    /// WAL flush (``makeDurable()``): the database is a throwaway until verified, and a crash costs a rerun, not
    /// data. One fsync per table (ANALYZE, catalog updates) otherwise dominates large restores.
    nonisolated var targetSettings: ConnectionSettings {
        request.target.with(database: database).with(setting: "synchronous_commit", "off")
    }
    /// The server's maintenance connection (CREATE DATABASE), under the same rule.
    nonisolated var serverSettings: ConnectionSettings { request.target.with(setting: "synchronous_commit", "off") }
    nonisolated var archivePath: String { directory + "/" + manifest.archive }

    /// The step name of the first verification, matched by the benchmark.
    static let verifyStepName = "verify against the manifest, ANALYZE beside it"

    func run() async throws -> Restore.Report {
        // Data files tsbackup compressed with zstd (checked against the manifest by the
        // preflight): pg_restore reads them decompressed from scratch space. The table of
        // contents is copied there first; the data files are decompressed beside the steps that
        // need none of them (database, extension, pre-data) and waited for before the first data.
        var expansion: ArchiveDataCompression.Expansion?
        var decompression: Task<Void, any Error>?
        // Batched: each data lane's first batch, decompressed beside pre-data.
        var firstBatches: RestoreProcedure.FirstBatches?
        defer { expansion?.scratch.remove() }
        do {
            let tools = try await step("preflight") { try await self.preflight() }
            var archive = archivePath
            if manifest.fileCompression != nil {
                expansion = try await step("copy the table of contents to scratch space") {
                    try ArchiveDataCompression.prepare(self.manifest, directory: self.directory, lanes: self.request.jobs)
                }
                if let expansion {
                    archive = expansion.archivePath
                    // Batched: the data steps decompress as they go (ArchiveDataBatches).
                    if expansion.batches == nil { decompression = Task { try await expansion.decompress() } }
                }
            }
            try await step("create database") { try await self.createDatabase(psql: tools.creator) }
            try await step("create extension and enter restore mode") { try await self.prepareDatabase() }
            let reporter = progress
            reporter.attach(RestoreProgressCounter(contents: tools.contents, dataBytes: Self.dataFileBytes(manifest)))
            let procedure = try RestoreProcedure(archive: archive, pgRestore: tools.pgRestore, settings: targetSettings, jobs: request.jobs,
                                                 progress: reporter.counter, onItem: { reporter.tick() }, batches: expansion?.batches)
            defer { procedure.removeLists() }
            let chunkKeys = try await step("split the archive's contents") { try procedure.splitLists(tools.contents, chunkTables: self.manifest.chunkTables) }
            firstBatches = try procedure.startFirstBatches()
            // Chunks dumped in batches past the lock limit: phases around the usual ones (ChunkBatchRestore).
            let batches = try manifest.chunkPath.map {
                try ChunkBatchRestore(path: $0, directory: directory, pgRestore: tools.pgRestore, settings: targetSettings, jobs: request.jobs)
            }
            var restoreWarnings: [String] = []
            if let batches {
                restoreWarnings += try await step("pg_restore pre-data, hypertable roots and \(batches.path.batches.count) chunk batches") {
                    try await batches.restorePreData(tools.contents, procedure: procedure)
                }
            } else if RestoreProcedure.parallelPreDataRequested(),
                      let split = RestoreProcedure.splitPreData(tools.contents, chunkTables: manifest.chunkTables, jobs: request.jobs) {
                // pg_restore runs pre-data on one connection even with -j; thousands of chunk
                // tables make it the longest phase. Roots and everything else first, then the
                // chunk tables on `--jobs` connections (docs/performance.md).
                restoreWarnings += try await step("pg_restore pre-data except chunk tables") {
                    try await procedure.restorePreData(others: split.others)
                }
                restoreWarnings += try await step("pg_restore pre-data of \(split.chunkCount) chunk tables, \(split.chunkLists.count) lists at once") {
                    try await procedure.restoreChunkPreData(split.chunkLists)
                }
            } else {
                restoreWarnings += try await step("pg_restore pre-data") { try await procedure.restorePreData() }
            }
            if let decompression, let packed = manifest.fileCompression {
                try await step("decompress \(packed.files) data files (\(packed.method), \(ByteCount.format(packed.plainBytes))), begun after preflight") {
                    try await decompression.value
                }
            }
            restoreWarnings += try await step("pg_restore TimescaleDB catalog data") { try await procedure.restoreCatalogData(first: firstBatches) }
            if let batches, !batches.path.droppedChunks.isEmpty {
                try await step("remove \(batches.path.droppedChunks.count) chunks dropped during the backup from the catalog") {
                    try await batches.removeDroppedChunks()
                }
            }
            // The step's name starts the same either way (tests pause at it by prefix).
            let rest = "pg_restore data and post-data, \(request.jobs) jobs" + (chunkKeys > 0 ? ", the chunks' \(chunkKeys) foreign keys beside their indexes" : "")
                + (expansion?.batches != nil ? ", data decompressed batch by batch in \(request.jobs) serial lanes" : "")
            restoreWarnings += try await step(rest) { try await procedure.restoreRest(chunkKeys: chunkKeys, first: firstBatches) }
            if let batches {
                try await step("hypertable roots' indexes and constraints") { try await batches.finishRoots() }
                restoreWarnings += try await step("pg_restore chunk batches' data and post-data, \(request.jobs) jobs") { try await batches.restoreData() }
            }
            report.warnings += restoreWarnings
            try await step("timescaledb_post_restore") { try await self.postRestore() }
            try await step("restart background workers") { try await self.restartWorkers() }
            report.checks = try await step(Self.verifyStepName) { try await self.verifyAndAnalyze() }
            if case .update(let from, let to, let path) = updateDecision, let psql = tools.psql {
                try await updateExtension(from: from, to: to, path: path, psql: psql)
            }
            // Everything committed asynchronously so far becomes durable here, before promotion.
            try await step(Self.durableStepName) { try await self.makeDurable() }
            if let target = request.promoteTo {
                try await step("promote to \(target)") { try await self.promote(to: target) }
            }
            report.ok = true
            return report
        } catch {
            // The scratch directory goes only once nothing writes into it any more.
            _ = try? await decompression?.value
            await firstBatches?.settle()
            let failure = (error as? TSBackupError) ?? TSBackupError(.failed, "The restore failed: \(error)")
            let failedStep = report.steps.last(where: { !$0.ok })?.name ?? "preflight"
            var message = failure.message
            if keptAtBackupVersion, let from = manifest.timescaledb?.version {
                let database = self.database
                _ = try? await DatabaseSession.with(request.target) { session in
                    try await session.execute("COMMENT ON DATABASE \(quoteIdentifier(database)) IS NULL")
                }
                message += " The database \(database) is kept: restored and verified at TimescaleDB \(from) (the first verification), untouched by the update, which rolled back\(request.promoteTo.map { "; nothing was promoted to \($0)" } ?? ""). Fix the cause, then update it yourself: in a fresh session (psql -X), run ALTER EXTENSION timescaledb UPDATE as its first statement; or drop it."
            } else {
                let cleanupProblem = await cleanUpAfterFailure()
                if created {
                    if let cleanupProblem {
                        // Never claim a drop that did not happen: name what is left and how to remove it.
                        message += " The new database \(database) could NOT be \(request.keepFailed ? "taken out of restore mode" : "dropped") (\(cleanupProblem)); it may be left half-restored and in TimescaleDB's restore mode. When the server accepts connections again, run DROP DATABASE \(quoteIdentifier(database)) WITH (FORCE)."
                    } else {
                        message += report.keptFailedDatabase
                            ? " The database \(database) was kept for inspection (--keep-failed), out of restore mode; drop it when done."
                            : " The temporary database \(database) was dropped; nothing else was changed."
                    }
                }
            }
            throw Restore.Failure(error: TSBackupError(failure.kind, "Restore of backup \(manifest.id) failed at step \"\(failedStep)\": \(message)"), report: report)
        }
    }

    /// Runs one named step, timing it and recording the outcome.
    @discardableResult
    func step<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        await TestSeams.pauseIfAsked(atStep: name)
        progress.begin(name)
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

    /// For a directory archive, each table's data file size by dump id, from the manifest (which
    /// the preflight verified against the files); a custom archive has no per-table files.
    nonisolated static func dataFileBytes(_ manifest: BackupManifest) -> [Int: Int64] {
        guard manifest.format == .directory else { return [:] }
        return RestoreProgressCounter.dataBytes(files: manifest.files.filter { $0.path.hasPrefix(manifest.archive + "/") }.map { ($0.path, $0.bytes) })
    }

    // MARK: Preflight

    struct Tools: Sendable {
        var pgRestore: PostgresTool
        /// psql runs the extension update: one simple-protocol query is one transaction.
        var psql: PostgresTool?
        /// psql runs CREATE DATABASE and its marker as a process of its own (``createDatabase(psql:)``).
        var creator: PostgresTool
        /// The archive's table of contents, read once.
        var contents: ArchiveContents
    }

    /// What preflight found, applied to the report by the actor.
    struct PreflightOutcome: Sendable {
        var tools: Tools
        var warnings: [String] = []
        var versions: Restore.Report.Versions?
        var decision: ExtensionUpdate.Decision = .none
        var extensionUpdate: Restore.Report.ExtensionUpdateReport?
    }

    func preflight() async throws -> Tools {
        let outcome = try await Self.preflightChecks(request: request, manifest: manifest, directory: directory, database: database)
        report.warnings += outcome.warnings
        report.versions = outcome.versions
        report.extensionUpdate = outcome.extensionUpdate
        updateDecision = outcome.decision
        return outcome.tools
    }

    nonisolated static func preflightChecks(request: Restore.Request, manifest: BackupManifest, directory: String, database: String) async throws -> PreflightOutcome {
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
            var warnings: [String] = []
            var decision: ExtensionUpdate.Decision = .none
            var extensionUpdate: Restore.Report.ExtensionUpdateReport?

            let superuser = try await session.value("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", as: Bool.self)
            guard superuser else {
                throw TSBackupError(.permission, "Role \"\(target.user)\" on \(target.host):\(target.port) is not a superuser. A TimescaleDB restore must set timescaledb.restoring for the new database (timescaledb_pre_restore), load the extension's own catalog tables and sequences, and stop and restart background workers; PostgreSQL allows these only to superusers. Ask an administrator or operator to run the restore, or use `tsbackup import-hypertable` to restore single hypertables as a database owner.")
            }
            // Databases of restores killed outright (no cleanup code ran) are dropped here, and said so;
            // so are their scratch directories in $TMPDIR.
            warnings += try await InterruptedRuns.sweepDatabases(session, server: "\(target.host):\(target.port)")
            warnings += OwnedScratchDirectory.sweep(prefix: RestoreProcedure.scratchPrefix, what: "restore",
                                                    legacyAfter: RestoreProcedure.legacyScratchAge)
            warnings += ArchiveDataCompression.sweep()
            if server.majorVersion < manifest.server.majorVersion {
                throw TSBackupError(.precondition, "Backup \(manifest.id) comes from PostgreSQL \(manifest.server.majorVersion) but the target runs \(server.majorVersion); a dump never restores into an older major version. Restore to a PostgreSQL \(manifest.server.majorVersion) or newer server.")
            }
            if server.majorVersion > manifest.server.majorVersion {
                warnings.append("The target runs PostgreSQL \(server.majorVersion), newer than the backup's \(manifest.server.majorVersion); the restore uses the target's pg_restore.")
            }
            let pgRestore = try await PostgresTools.locate("pg_restore", minimumMajor: max(server.majorVersion, manifest.pgDump.majorVersion))
            var versions = Restore.Report.Versions(backupPostgresMajor: manifest.server.majorVersion, targetPostgres: server.version,
                                                   backupTimescaleDB: manifest.timescaledb?.version, targetInstallable: [], targetDefault: nil)
            var psql: PostgresTool?

            if let wanted = manifest.timescaledb?.version {
                let installable = try await inspector.installableTimescaleDBVersions()
                let defaultVersion = try await session.rows(
                    "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
                    as: (String?).self, purpose: "reading the default TimescaleDB version").first ?? nil
                let paths = installable.isEmpty ? [] : try await Self.updatePaths(session, from: wanted)
                versions.targetInstallable = installable
                versions.targetDefault = defaultVersion
                let updateTarget: String? = {
                    if case .version(let v) = request.updateExtension { return v }
                    return defaultVersion
                }()
                versions.updateTarget = updateTarget
                if let updateTarget, updateTarget != wanted {
                    let row = ExtensionUpdate.path(from: wanted, to: updateTarget, in: paths)
                    versions.updatePath = row?.path
                    versions.updatePathExists = row != nil
                }

                guard installable.contains(wanted) else {
                    throw TSBackupError(.precondition, Self.notInstallableMessage(id: manifest.id, wanted: wanted, installable: installable,
                                                                                defaultVersion: defaultVersion, pathToDefault: versions.updatePathExists == true ? versions.updatePath : nil,
                                                                                postgresMajor: server.majorVersion))
                }
                let preloaded = try await inspector.timescaleDBPreloaded()
                guard preloaded else {
                    throw TSBackupError(.precondition, "TimescaleDB is not loaded on the target server (shared_preload_libraries lacks timescaledb). Add it in postgresql.conf and restart the server before restoring.")
                }

                decision = ExtensionUpdate.decide(backupVersion: wanted, requested: request.updateExtension, installable: installable,
                                                        defaultVersion: defaultVersion, paths: paths, forced: request.forceExtensionUpdateForTesting)
                switch decision {
                case .none:
                    if let defaultVersion, VersionNumber.isOrderedBefore(wanted, defaultVersion) {
                        warnings.append("The restored database will stay at TimescaleDB \(wanted), behind the server's default \(defaultVersion)\(versions.updatePathExists == true ? " (an update path exists)" : ""). Add --update-extension to update it after the restore verifies, then verify again; or later run ALTER EXTENSION timescaledb UPDATE as the first statement of a fresh session in it.")
                    }
                case .noOp(let version):
                    extensionUpdate = .init(fromVersion: wanted, toVersion: version, path: nil, status: .notNeeded,
                                                   installedVersion: nil, defaultVersion: defaultVersion, catalogVersion: nil, error: nil, checks: [])
                case .update:
                    psql = try await PostgresTools.locate("psql", minimumMajor: server.majorVersion)
                case .refused(let reason):
                    throw TSBackupError(.precondition, "--update-extension cannot be done: \(reason). Nothing was restored.")
                }
            } else {
                if request.updateExtension != nil {
                    throw TSBackupError(.precondition, "Backup \(manifest.id) has no TimescaleDB, so --update-extension has nothing to update. Restore without it.")
                }
            }

            // The restored database's scheduler needs a slot of TimescaleDB's pool and one of
            // max_worker_processes; without one it never starts and the restore fails its last
            // check after all the work. Counted after the sweep (its drops free slots) and
            // before --create-roles changes anything, so a refusal leaves the server as it was.
            // Refused only on slots that stay taken in either pool (launcher, schedulers, other
            // long-running workers); job and parallel workers end on their own and only warn
            // (WorkerSlots.assess).
            if manifest.timescaledb != nil {
                let (refusal, slotWarnings) = try await WorkerSlots.read(session).assess(server: "\(target.host):\(target.port)")
                if let refusal { throw TSBackupError(.precondition, refusal) }
                warnings += slotWarnings
            }

            warnings += try await checkRoles(session, contents: contents, request: request, manifest: manifest, directory: directory)

            let exists = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(database))", as: Bool.self)
            if exists {
                throw TSBackupError(.precondition, "The database \"\(database)\" already exists on \(target.host):\(target.port); tsbackup never restores into an existing database. Name a new one with --into, or drop that one first if it is a leftover.")
            }
            if let promote = request.promoteTo, promote == database {
                throw TSBackupError(.usage, "--promote-to names the restore's own database \"\(database)\"; name the database the restore should replace.")
            }

            let creator: PostgresTool
            if let psql { creator = psql } else { creator = try await PostgresTools.locate("psql", minimumMajor: server.majorVersion) }
            return PreflightOutcome(tools: Tools(pgRestore: pgRestore, psql: psql, creator: creator, contents: contents), warnings: warnings,
                                    versions: versions, decision: decision, extensionUpdate: extensionUpdate)
        }
    }

    /// The rows of pg_extension_update_paths('timescaledb') that start at `source`.
    nonisolated static func updatePaths(_ session: DatabaseSession, from source: String) async throws -> [ExtensionUpdate.PathRow] {
        try await session.rows(
            "SELECT source, target, path FROM pg_extension_update_paths('timescaledb') WHERE source = \(source)",
            as: (String, String, String?).self, purpose: "reading TimescaleDB's update paths"
        ).map { ExtensionUpdate.PathRow(source: $0.0, target: $0.1, path: $0.2) }
    }

    /// The refusal when the backup's TimescaleDB version cannot be installed: the closest
    /// versions the server has, and the exact steps.
    nonisolated static func notInstallableMessage(id: String, wanted: String, installable: [String], defaultVersion: String?,
                                                  pathToDefault: String?, postgresMajor: Int) -> String {
        guard !installable.isEmpty else {
            return "Backup \(id) needs TimescaleDB \(wanted), but the target server offers no TimescaleDB version at all. Install TimescaleDB \(wanted) for PostgreSQL \(postgresMajor) there (and add timescaledb to shared_preload_libraries, then restart), and run the restore again; later, ALTER EXTENSION timescaledb UPDATE as the first statement of a fresh session moves it to a newer version."
        }
        let closest = ExtensionUpdate.closest(to: wanted, among: installable)
        let after = defaultVersion ?? installable.last ?? wanted
        let updateNote = pathToDefault.map { " (the server already ships the update path \($0))" }
            ?? " (this also needs the update script timescaledb--\(wanted)--\(after).sql, which TimescaleDB \(after) packages ship)"
        return "Backup \(id) needs TimescaleDB \(wanted), but the target server offers only \(installable.joined(separator: ", ")) (closest: \(closest.joined(separator: " and "))). A TimescaleDB dump restores only into the version that wrote it. Steps: 1. install TimescaleDB \(wanted) for PostgreSQL \(postgresMajor) on the target server beside the versions it has (its files timescaledb--\(wanted).sql and timescaledb-\(wanted).so; the preloaded loader picks the version per database, so no restart is needed); 2. run this restore again with --update-extension, which restores at \(wanted), verifies, updates to \(after)\(updateNote) and verifies again. Or restore on a server that has \(wanted) and run ALTER EXTENSION timescaledb UPDATE as the first statement of a fresh session there."
    }

    /// Owners of objects and jobs must exist on the target, or the restore loses them.
    nonisolated static func checkRoles(_ session: DatabaseSession, contents: ArchiveContents, request: Restore.Request,
                                       manifest: BackupManifest, directory: String) async throws -> [String] {
        var needed = Set(manifest.hypertables.map(\.owner) + manifest.jobs.map(\.owner))
        needed.formUnion(contents.owners)
        needed.remove("")
        let existing = Set(try await session.values("SELECT rolname::text FROM pg_roles", as: String.self))
        let missing = needed.subtracting(existing).sorted()
        guard !missing.isEmpty else { return [] }
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
        return ["Created role\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) on the target from the backup (no passwords: set them before anyone logs in as them)."]
    }

    // MARK: Procedure

    /// Creates the database marked as this run's (InterruptedRuns): if this process is killed,
    /// the next restore on this server (or the service's next start) finds it and drops it.
    ///
    /// CREATE DATABASE cannot share a transaction with COMMENT ON DATABASE, so a kill between the
    /// two would leave an empty database no one names. psql runs both as a process of its own
    /// that is not ended with this one (`outlivesParent`): once it started, the pair completes
    /// (or the CREATE fails) whether or not tsbackup is still there to wait for it.
    func createDatabase(psql: PostgresTool) async throws {
        let database = self.database
        // template0: the archive recreates everything; a customised template1 would collide.
        let create = "CREATE DATABASE \(quoteIdentifier(database)) TEMPLATE template0"
        let mark = "COMMENT ON DATABASE \(quoteIdentifier(database)) IS \(SQLLiteral.quote(marker.comment))"
        var environment = serverSettings.childProcessEnvironment(options: "-c synchronous_commit=off")
        // The name every sweep waits for (InterruptedRuns.waitForDatabaseCreators): while this
        // session is open, the database may exist without its marker yet.
        environment["PGAPPNAME"] = .some(InterruptedRuns.creatorApplicationName)
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-c", create] + TestSeams.psqlPause(atStep: "create database: before the marker") + ["-c", mark]
        let path = psql.path
        // An unstructured task: a cancelled run (the service shutting down) lets the pair finish
        // too, instead of killing psql between the statements; the cancellation ends the run at
        // its next step, whose failure path drops the database.
        let result = try await Task { try await ProcessRunner.run(path, arguments, environment: environment, outlivesParent: true) }.value
        if result.succeeded {
            created = true
        } else {
            // A CREATE that failed left nothing; one that succeeded before the marker failed left
            // a database this run made: the failure path drops it (when in doubt, it tries).
            let settings = serverSettings
            created = (try? await DatabaseSession.with(settings) { session in
                try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(database))", as: Bool.self)
            }) ?? true
            throw TSBackupError(.failed, "Creating the database \(database) on \(request.target.host):\(request.target.port) failed (\(result.statusDescription)): \(result.standardError.singleLine(limit: 500)).")
        }
        // Also for the sessions tsbackup does not open: autovacuum analysing the new tables and
        // TimescaleDB's scheduler each commit synchronously otherwise, one flush per table.
        // Reset by the final WAL flush (and on every failure path that keeps the database).
        try await DatabaseSession.with(serverSettings) { session in
            try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) SET synchronous_commit = off")
        }
    }

    func prepareDatabase() async throws {
        guard let version = manifest.timescaledb?.version else { return }
        try await DatabaseSession.with(targetSettings) { session in
            try await session.execute("CREATE EXTENSION timescaledb VERSION \(SQLLiteral.quote(version))")
            try await session.execute("SELECT timescaledb_pre_restore()")
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

    /// The step that makes the restore durable, matched by tests.
    static let durableStepName = "make durable (flush WAL)"

    /// Makes everything the restore committed durable before it reports success or promotes.
    ///
    /// Every change the restore made is in the WAL: the new database was created with
    /// PostgreSQL 15's default WAL_LOG strategy, tables, data, catalog rows and settings are
    /// WAL-logged, index builds fsync their own files, and under `wal_level = minimal` a
    /// relation whose WAL was skipped is synced or WAL-logged by its committing transaction
    /// (and the FILE_COPY strategy checkpoints inside CREATE DATABASE). Crash recovery replays
    /// WAL up to the last flushed record, so a flush of the WAL up to the point where all of
    /// the restore's sessions had finished is what "durable" needs. That is one WAL fsync, not
    /// a CHECKPOINT, which writes and fsyncs every file of thousands of new tables (minutes at
    /// a few thousand chunks) and which the documented procedure does not wait for either.
    ///
    /// The flush is the synchronous commit (`local`: this server's disk, as a CHECKPOINT gives)
    /// of the database-level setting's removal, which writes WAL; the flushed position is then
    /// read back and compared with the insert position read before. Only if it falls short
    /// (nothing was written) does a CHECKPOINT make sure.
    func makeDurable() async throws {
        let database = self.database
        let promoting = request.promoteTo != nil
        try await DatabaseSession.with(request.target) { session in
            // Every restore session has finished: every record the restore wrote is before this.
            let restored = try await session.value("SELECT pg_current_wal_insert_lsn()::text", as: String.self,
                                                   purpose: "reading the WAL position the restore reached")
            try await session.execute("SET synchronous_commit = local")
            try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RESET synchronous_commit")
            // A promotion renames live databases: from here on nothing may drop this one, so its
            // marker goes now (this commit waits for its WAL flush too: synchronous_commit = local).
            // Without a promotion the marker stays until the caller has printed or recorded the
            // report (Restore.acknowledge): a run killed before that has its database dropped by
            // the next one, and said so, instead of leaving a database no report names.
            if promoting {
                try await session.execute("COMMENT ON DATABASE \(quoteIdentifier(database)) IS NULL")
            }
            let flushed = try await session.value("SELECT pg_current_wal_flush_lsn() >= \(restored)::pg_lsn", as: Bool.self,
                                                  purpose: "checking the WAL is flushed past the restore")
            if !flushed {
                try await session.execute("CHECKPOINT")
            }
        }
    }

    /// The first verification, with ANALYZE on other connections beside it: both read every
    /// table, so they share the work between cores.
    func verifyAndAnalyze() async throws -> [Restore.Report.Check] {
        let verification = RestoreVerification(manifest: manifest, settings: targetSettings)
        // Past the lock limit, ANALYZE of a batched root would sample and lock all its chunks at once.
        let roots = Set(manifest.chunkPath?.batches.map(\.hypertable) ?? [])
        async let analyzed: Void = Self.analyze(targetSettings, sessions: max(1, request.jobs - 1), skipping: roots)
        let checks: [Restore.Report.Check]
        do {
            checks = try await verification.run()
        } catch {
            try? await analyzed
            throw error
        }
        try await analyzed
        report.checks = checks
        try Self.requireAllOK(checks, manifestID: manifest.id, when: nil)
        return checks
    }

    nonisolated static func requireAllOK(_ checks: [Restore.Report.Check], manifestID: String, when: String?) throws {
        let failed = checks.filter { !$0.ok }
        guard failed.isEmpty else {
            throw TSBackupError(.failed, "The restored database does not match backup \(manifestID)\(when.map { " \($0)" } ?? ""): \(failed.count) check\(failed.count == 1 ? "" : "s") failed (\(failed.prefix(3).map { "\($0.subject) \($0.check): expected \($0.expected), found \($0.actual)" }.joined(separator: "; "))).")
        }
    }

    /// ANALYZE of every table, spread largest-first over `sessions` connections. A list of
    /// tables outside a transaction block is analysed one table per transaction (no lock table
    /// exhaustion at thousands of chunks); with synchronous_commit off those commits cost no
    /// WAL flush each. `roots` ("schema.name") are left out: autovacuum never analyzes
    /// inheritance parents either, so they stay as they would on the source. "Largest" is the
    /// catalog's `relpages`, which the restore's index builds have set: `pg_relation_size` would
    /// open every table, and the listing's session grew to 224 MB on the server at 50,000
    /// chunks (measured) for an order that only balances the sessions.
    nonisolated static func analyze(_ settings: ConnectionSettings, sessions: Int, skipping roots: Set<String> = []) async throws {
        let tables = try await DatabaseSession.with(settings) { session in
            try await session.values(
                """
                SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
                  AND format('%s.%s', n.nspname, c.relname) <> ALL (\(Array(roots))::text[])
                ORDER BY c.relpages DESC, 1
                """, as: String.self, purpose: "listing tables to ANALYZE")
        }
        guard !tables.isEmpty else { return }
        let count = max(1, min(sessions, tables.count))
        var groups = Array(repeating: [String](), count: count)
        for (index, table) in tables.enumerated() { groups[index % count].append(table) }
        let perSession = TestSeams.analyzeTablesPerSession() ?? analyzeTablesPerSession
        try await withThrowingTaskGroup(of: Void.self) { group in
            for tables in groups {
                group.addTask {
                    // A new session every `analyzeTablesPerSession` tables: a session keeps a
                    // cache entry for every table and index it analyzed until it ends (one that
                    // analyzed 5,000 chunks held about 148 MB on the server).
                    var sessionStart = 0
                    while sessionStart < tables.count {
                        let share = tables[sessionStart..<min(tables.count, sessionStart + perSession)]
                        try await DatabaseSession.with(settings) { session in
                            var start = share.startIndex
                            while start < share.endIndex {
                                let batch = share[start..<min(share.endIndex, start + 200)]
                                try await session.execute("ANALYZE " + batch.joined(separator: ", "), purpose: "ANALYZE of \(batch.count) tables")
                                start += batch.count
                            }
                        }
                        sessionStart += share.count
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Tables one ANALYZE session analyzes before the next session takes over (see ``analyze(_:sessions:skipping:)``).
    nonisolated static let analyzeTablesPerSession = 2_000

    // MARK: Extension update

    /// ALTER EXTENSION timescaledb UPDATE in a fresh session, as its first statement, in one
    /// transaction with the version check; then workers restarted and everything verified again.
    /// A failed update leaves the database at the backup's version, as verified.
    func updateExtension(from: String, to: String, path: String?, psql: PostgresTool) async throws {
        report.extensionUpdate = .init(fromVersion: from, toVersion: to, path: path, status: .failed, installedVersion: nil,
                                       defaultVersion: report.versions?.targetDefault, catalogVersion: nil, error: nil, checks: [])
        // The manifest does not list continuous aggregates (the Apache build cannot create
        // them); the update must keep the ones the first verification's database had.
        let aggregatesBefore = try await countContinuousAggregates()
        do {
            try await step("update TimescaleDB \(from) to \(to) (ALTER EXTENSION, first statement of a fresh session)") {
                try await self.runUpdate(to: to, psql: psql)
            }
        } catch {
            let message = (error as? TSBackupError)?.message ?? "\(error)"
            report.extensionUpdate?.error = message
            // Rolled back? Read the versions from yet another session; keep the database only if
            // it is exactly where the first verification left it.
            if let found = try? await readVersions() {
                let (installed, _, catalog) = found
                report.extensionUpdate?.installedVersion = installed
                report.extensionUpdate?.catalogVersion = catalog
                if installed == from && catalog == from {
                    keptAtBackupVersion = true
                    _ = try? await restartWorkers()
                    _ = try? await step(Self.durableStepName) { try await self.makeDurable() }
                }
            }
            throw error
        }
        let (installed, defaultVersion, catalog) = try await readVersions()
        report.extensionUpdate?.installedVersion = installed
        report.extensionUpdate?.defaultVersion = defaultVersion
        report.extensionUpdate?.catalogVersion = catalog
        try await step("restart background workers at TimescaleDB \(to)") { try await self.restartWorkers() }
        let checks = try await step("verify again at TimescaleDB \(to)") {
            var checks: [Restore.Report.Check] = [
                .init(subject: "database", check: "TimescaleDB installed version", expected: to, actual: installed ?? "none", ok: installed == to),
                .init(subject: "database", check: "TimescaleDB catalog version", expected: to, actual: catalog ?? "none", ok: catalog == to),
            ]
            if case .defaultVersion = self.request.updateExtension {
                checks.append(.init(subject: "database", check: "TimescaleDB default version", expected: to, actual: defaultVersion ?? "none", ok: defaultVersion == to))
            }
            let aggregatesAfter = try await self.countContinuousAggregates()
            checks.append(.init(subject: "database", check: "continuous aggregates", expected: String(aggregatesBefore),
                                actual: String(aggregatesAfter), ok: aggregatesBefore == aggregatesAfter))
            checks += try await RestoreVerification(manifest: self.manifest, settings: self.targetSettings).run()
            self.report.extensionUpdate?.checks = checks
            try Self.requireAllOK(checks, manifestID: self.manifest.id, when: "after the update to TimescaleDB \(to)")
            return checks
        }
        report.extensionUpdate?.checks = checks
        report.extensionUpdate?.status = .updated
    }

    /// psql sends the update and the version check as one query string, which PostgreSQL runs
    /// as one transaction; the startup options (PGOPTIONS) are not statements, so the ALTER is
    /// still the first statement the session runs.
    func runUpdate(to target: String, psql: PostgresTool) async throws {
        var environment = targetSettings.childProcessEnvironment(options: "-c synchronous_commit=off")
        environment["LC_MESSAGES"] = "C"
        let result = try await ProcessRunner.run(
            psql.path, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", database, "-c", ExtensionUpdate.updateSQL(to: target)],
            environment: environment)
        guard result.succeeded else {
            throw TSBackupError(.failed, "ALTER EXTENSION timescaledb UPDATE TO '\(target)' failed and was rolled back (\(result.statusDescription)); TimescaleDB said: \(ExtensionUpdate.serverMessage(fromPsqlError: result.standardError)).")
        }
    }

    func countContinuousAggregates() async throws -> Int64 {
        try await DatabaseSession.with(targetSettings) { session in
            try await session.value("SELECT count(*) FROM _timescaledb_catalog.continuous_agg", as: Int64.self,
                                    purpose: "counting continuous aggregates")
        }
    }

    /// Installed (pg_extension), default (pg_available_extensions) and catalog
    /// (_timescaledb_catalog.metadata) versions, read from a fresh session.
    func readVersions() async throws -> (String?, String?, String?) {
        try await DatabaseSession.with(targetSettings) { session in
            try await session.row(
                """
                SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                       (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
                       (SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version')
                """, as: (String?, String?, String?).self, purpose: "reading the TimescaleDB versions")
        }
    }

    func promote(to name: String) async throws {
        let previous = name + "_before_" + manifest.id.lowercased().replacingOccurrences(of: "-", with: "_")
        let database = self.database
        let movedAside: String? = try await DatabaseSession.with(request.target) { session in
            var movedAside: String?
            let exists = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(name))", as: Bool.self)
            if exists {
                let taken = try await session.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(previous))", as: Bool.self)
                if taken {
                    throw TSBackupError(.precondition, "Cannot move \(name) aside: \(previous) already exists. Drop or rename it, then restore again.")
                }
                try await Self.terminateSessions(on: name, session: session)
                try await session.execute("ALTER DATABASE \(quoteIdentifier(name)) RENAME TO \(quoteIdentifier(previous))")
                movedAside = previous
            }
            try await Self.terminateSessions(on: database, session: session)
            try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RENAME TO \(quoteIdentifier(name))")
            return movedAside
        }
        report.previousDatabase = movedAside
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

    /// Drops the new database (or, with --keep-failed, takes it out of restore mode). Returns why
    /// that could not be done, or nil. A server that crashed or restarted under the restore is
    /// waited for (up to ``Request/cleanupPatience``) so its database is not left behind.
    func cleanUpAfterFailure() async -> String? {
        guard created else { return nil }
        let database = self.database
        let target = request.target
        if request.keepFailed {
            // Never leave a database in restore mode: inserts would fail and pg_upgrade breaks.
            let problem = await ServerRecovery.retryingWhileUnreachable(patience: request.cleanupPatience) {
                try await DatabaseSession.with(target) { session in
                    try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RESET timescaledb.restoring")
                    try await session.execute("ALTER DATABASE \(quoteIdentifier(database)) RESET synchronous_commit")
                    // Kept on purpose and named in the error: not a leftover for the next run to drop.
                    try await session.execute("COMMENT ON DATABASE \(quoteIdentifier(database)) IS NULL")
                    try await session.execute("CHECKPOINT")
                }
            }
            report.keptFailedDatabase = problem == nil
            return problem
        }
        return await ServerRecovery.retryingWhileUnreachable(patience: request.cleanupPatience) {
            try await DatabaseSession.with(target) { session in
                _ = try await session.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(database)) WITH (FORCE)")
            }
        }
    }
}

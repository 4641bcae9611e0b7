import Foundation
import TSBackup

/// The built-in job kinds, each a call of a library use case in-process (typed progress, typed
/// errors and Codable reports, and cancellation that ends the use case's child processes).
public enum JobKinds {
    public static let backup = "backup"
    public static let exportHypertable = "export-hypertable"
    public static let restore = "restore"
    public static let delete = "delete"
    public static let gc = "gc"

    /// Handlers for the built-in kinds.
    public static func handlers() -> [String: JobHandler] {
        [
            backup: JobHandler(writesRepository: true, run: runBackup),
            exportHypertable: JobHandler(writesRepository: true, run: runExport),
            restore: JobHandler(writesRepository: false, run: runRestore),
            delete: JobHandler(writesRepository: true, run: runDelete),
            gc: JobHandler(writesRepository: true, run: runGC),
        ]
    }

    static func parameters(_ job: JobRecord) -> [String: String] {
        (try? JSONOutput.decode([String: String].self, from: Data(job.parameters.utf8))) ?? [:]
    }

    static func database(_ job: JobRecord, _ context: JobContext) throws -> ServiceConfig.Database {
        guard let db = context.config.databases[job.database] else {
            throw TSBackupError(.notFound, "The database \(job.database) is no longer in the service's config.")
        }
        return db
    }

    struct BackupProgress: Encodable {
        var phase: String
        var tables_done: Int
        var tables_total: Int
        var bytes_written: Int64
        var fraction_done: Double
        var elapsed_seconds: Double
    }

    @Sendable static func runBackup(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        let db = try database(job, context)
        var request = Backup.Request(settings: try db.connection.settings(), repository: try context.config.repositoryAccess())
        request.jobs = db.backupJobs
        request.label = parameters(job)["label"]
        let manifest = try await Backup.run(request) { p in
            context.progress(BackupProgress(phase: p.phase, tables_done: p.tablesDone, tables_total: p.tablesTotal, bytes_written: p.bytesWritten,
                                            fraction_done: p.fractionDone, elapsed_seconds: p.elapsed))
        }
        return JobResult(report: try JSONOutput.encode(manifest.summary), entryID: manifest.id)
    }

    @Sendable static func runExport(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        let db = try database(job, context)
        let p = parameters(job)
        guard let table = p["table"] else { throw TSBackupError(.usage, "An export job needs a table.") }
        var request = HypertableExport.Request(settings: try db.connection.settings(), repository: try context.config.repositoryAccess(), table: table)
        request.since = p["since"]
        request.until = p["until"]
        context.progress(["phase": "exporting"])
        let manifest = try await HypertableExport.run(request)
        return JobResult(report: try JSONOutput.encode(manifest.summary), entryID: manifest.id)
    }

    struct RestoreProgress: Encodable {
        var phase: String
        var elapsed_seconds: Double
        var objects_done: Int
        var objects_total: Int
        var bytes_loaded: Int64
        var bytes_total: Int64
    }

    @Sendable static func runRestore(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        let db = try database(job, context)
        let p = parameters(job)
        guard let id = p["backup_id"] else { throw TSBackupError(.usage, "A restore job needs a backup_id.") }
        var request = Restore.Request(id: id, repository: try context.config.repositoryAccess(), target: try db.restoreConnection.settings())
        request.into = p["into"]
        request.promoteTo = p["promote_to"]
        request.jobs = 2
        request.cleanupPatience = try WaitSetting.seconds(WaitSetting.cleanup)
        do {
            let report = try await Restore.run(request) { progress in
                context.progress(RestoreProgress(phase: progress.phase, elapsed_seconds: progress.elapsed, objects_done: progress.objectsDone,
                                                 objects_total: progress.objectsTotal, bytes_loaded: progress.bytesLoaded, bytes_total: progress.bytesTotal))
            }
            let text = try JSONOutput.encode(report)
            guard report.ok else {
                throw JobFailure(message: "The restore of \(id) into \(report.database) did not verify.", report: text, entryID: id)
            }
            await TestSeams.pauseIfAsked(atStep: "record the restore report")
            // The report is stored before the database's in-progress marker goes: a service
            // killed in between has its restore dropped (and named) when it starts again, one
            // killed after has the report in the job's record. Never a database no report names.
            try context.state.recordJobReport(job.id, report: text)
            do {
                try await Restore.acknowledge(report, request: request)
            } catch {
                throw JobFailure(message: "The restore of \(id) into \(report.database) verified, but its in-progress marker could not be removed (\(JobQueue.message(error))); until it is, the next restore on that server drops \(report.database) as an interrupted run's. Remove it: COMMENT ON DATABASE \(quoteIdentifier(report.database)) IS NULL.",
                                 report: text, entryID: id)
            }
            return JobResult(report: text, entryID: id)
        } catch let failure as Restore.Failure {
            throw JobFailure(message: failure.error.message, report: try? JSONOutput.encode(failure.report), entryID: id)
        }
    }

    @Sendable static func runDelete(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        guard let id = parameters(job)["backup_id"] else { throw TSBackupError(.usage, "A delete job needs a backup_id.") }
        // As retention does: not while a download streams the entry (DELETE refuses then too, but
        // a download may have started while this job was queued), and no download starts on it
        // until the deletion has ended.
        guard context.holds.claimForDeletion(id) else { throw deleteRefused(id) }
        defer { context.holds.endDeletion(id) }
        try await context.config.repositoryAccess().with(create: false) { repo in
            try await repo.withLock(command: "tsbackup serve: delete \(id)") { _ in
                let entry = try await repo.entry(id)
                try await repo.deleteEntry(entry)
            }
        }
        return JobResult(report: try JSONOutput.encode(["deleted": id]), entryID: id)
    }

    /// Why an entry a download is streaming is not deleted, and what to do.
    static func deleteRefused(_ id: String) -> TSBackupError {
        TSBackupError(.precondition, "Backup \(id) is being downloaded; it was not deleted, so that the download stays whole. Delete it again after the download has ended.")
    }

    @Sendable static func runGC(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        let removed = try await context.config.repositoryAccess().with(create: false) { repo in
            try await repo.withLock(command: "tsbackup serve: repo gc") { _ in try await repo.removeInterruptedEntries() }
        }
        return JobResult(report: try JSONOutput.encode(["removed": removed]))
    }
}

extension ServiceConfig {
    /// The config's name of the database an entry was taken from (matched on the source's host,
    /// port and database name), or nil when no configured database matches.
    public func databaseName(of entry: RepositoryEntry) -> String? {
        guard let source = entry.manifest?.source ?? entry.hypertable?.source else { return nil }
        return databases.values.sorted { $0.name < $1.name }.first { db in
            db.connection.database == source.database && db.connection.port == source.port && db.connection.host == source.host
        }?.name
    }
}

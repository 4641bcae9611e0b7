import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import TSBackup

/// The job kinds serve-ops adds to the queue.
public enum OperationsJobKinds {
    public static let rehearsal = "rehearsal"
    public static let retention = "retention"
}

/// Schedules, retention, restore rehearsals, alerts with webhooks, metrics and the dashboard,
/// wired into the service core: job kinds and an observer on its queue, the scheduler as a
/// lifecycle service, and routes beside the API.
public struct ServiceOperations: Sendable {
    public let core: ServiceCore
    public let metrics: ServiceMetrics
    public let notifier: WebhookNotifier
    public let alerts: AlertTracker
    public let scheduler: Scheduler
    let dashboard: DashboardRenderer
    let logger: Logger

    /// Builds the pieces from the config; refuses a schedule that does not parse, naming it.
    public static func make(core: ServiceCore, environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "tsbackup.ops")) throws -> ServiceOperations {
        let config = core.config
        var tasks: [ScheduledTask] = []
        for db in config.databases.values.sorted(by: { $0.name < $1.name }) {
            let kinds: [(ScheduledTask.Kind, ServiceConfig.Schedule?)] = [(.backup, db.schedule), (.rehearsal, db.rehearsal?.schedule)]
            for (kind, schedule) in kinds {
                guard let schedule else { continue }
                do {
                    tasks.append(ScheduledTask(database: db.name, kind: kind, schedule: try CronSchedule.parse(schedule.cron, zone: schedule.timeZone)))
                } catch {
                    throw TSBackupError(.usage, "\(config.path): database \(db.name): the \(kind.rawValue) schedule \"\(schedule.cron)\" is not usable: \(error.message) Fix it in the config and start the service again.")
                }
            }
        }
        let targets = config.webhooks.map(\.target)
        let store = StateScheduleStore(state: core.state)
        let isoFormat = Date.ISO8601FormatStyle()
        let scheduler = Scheduler(tasks: tasks, store: store, logger: Logger(label: "tsbackup.scheduler")) { task, firing in
            let kind = task.kind == .backup ? JobKinds.backup : OperationsJobKinds.rehearsal
            let job = try await core.jobs.enqueue(kind: kind, database: task.database,
                                                  parameters: ["label": "scheduled", "scheduled_for": firing.due.formatted(isoFormat)],
                                                  requestedBy: "scheduler")
            try core.state.recordScheduleRun(database: task.database, kind: task.kind.rawValue, at: firing.lastDue, jobID: job.id)
            _ = try? core.state.audit(actor: "scheduler", role: nil, action: "schedule.fire", target: task.database, outcome: "queued",
                                      detail: "\(task.kind.rawValue) job \(job.id), due \(firing.due.formatted(isoFormat))"
                                          + (firing.missedSlots > 0 ? ", \(firing.missedSlots + 1) slots passed while the service was down: run once" : ""))
        }
        return ServiceOperations(core: core, metrics: ServiceMetrics(databases: config.databases.keys.sorted()),
                                 notifier: WebhookNotifier(targets: targets, logger: Logger(label: "tsbackup.webhooks")),
                                 alerts: AlertTracker(state: try Self.alertState(core: core)),
                                 scheduler: scheduler, dashboard: try DashboardRenderer(), logger: logger)
    }

    /// Registers the job kinds and the queue observer, and adds the scheduler and the routes to `server`.
    public func install(into server: inout ServiceServer) async {
        await core.jobs.register(kind: OperationsJobKinds.rehearsal, handler: JobHandler(writesRepository: false) { job, context in
            try await self.runRehearsal(job, context)
        })
        await core.jobs.register(kind: OperationsJobKinds.retention, handler: JobHandler(writesRepository: true) { job, context in
            try await self.runRetention(job, context)
        })
        await core.jobs.addObserver { record in await self.jobEnded(record) }
        server.extraServices.append(SchedulerService(scheduler: scheduler, notifier: notifier))
        server.extraRoutes.append { router, _ in self.addRoutes(to: router) }
        await loadMetrics()
    }

    // MARK: Which backups are a database's

    /// Whether a manifest was taken from the configured database (the service core's rule).
    func belongs(_ database: String) -> @Sendable (BackupManifest) -> Bool {
        let config = core.config
        return { manifest in
            config.databaseName(of: RepositoryEntry(id: manifest.id, state: .complete, manifest: manifest, location: "")) == database
        }
    }

    /// Backups a queued or running job reads (restores name them; rehearsals record theirs),
    /// and backups a download is streaming.
    func backupsInUse() -> Set<String> {
        jobBackupsInUse().union(core.holds.held)
    }

    func jobBackupsInUse() -> Set<String> {
        let active = (try? core.state.activeJobs()) ?? []
        return Set(active.flatMap { job in [JobKinds.parameters(job)["backup_id"], job.entryID].compactMap { $0 } })
    }

    /// A database's retention policy, read in its backup schedule's time zone.
    func retentionPolicy(_ db: ServiceConfig.Database) -> RetentionPolicy? {
        guard let r = db.retention else { return nil }
        return RetentionPolicy(last: r.keepLast ?? 0, daily: r.keepDaily ?? 0, weekly: r.keepWeekly ?? 0, monthly: r.keepMonthly ?? 0,
                               timeZone: db.schedule?.timeZone ?? "UTC")
    }

    // MARK: Job kinds

    func runRehearsal(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        guard let db = context.config.databases[job.database] else {
            throw TSBackupError(.notFound, "The database \(job.database) is no longer in the service's config.")
        }
        guard let rehearsal = db.rehearsal, let target = context.config.rehearsalTargets[rehearsal.target] else {
            throw TSBackupError(.precondition, "The database \(db.name) has no rehearsal target in the config (databases.\(db.name).rehearsal.target).")
        }
        var request = Rehearsal.Request(database: db.name, repository: try context.config.repositoryAccess(), server: try target.settings(),
                                        belongs: belongs(db.name), backupID: JobKinds.parameters(job)["backup_id"])
        request.jobs = 2
        context.progress(["phase": "restoring the newest complete backup into a scratch database on \(rehearsal.target), verifying, dropping it"])
        let result = await Rehearsal.run(request)
        let report = try JSONOutput.encode(result)
        // A schedule that fires before the database's first backup has nothing to rehearse yet:
        // the job ends as skipped, not failed, so a new installation does not start with a
        // failure alert (the backups' own failures and freshness metric speak for missing backups).
        // Asked for by a person, it still fails and says why.
        if result.nothingToRehearse == true, job.requestedBy == "scheduler" {
            return JobResult(report: report)
        }
        guard result.ok else {
            throw JobFailure(message: result.error ?? "The rehearsal failed.", report: report, entryID: result.backupID)
        }
        return JobResult(report: report, entryID: result.backupID)
    }

    func runRetention(_ job: JobRecord, _ context: JobContext) async throws -> JobResult {
        guard let db = context.config.databases[job.database] else {
            throw TSBackupError(.notFound, "The database \(job.database) is no longer in the service's config.")
        }
        guard let policy = retentionPolicy(db) else {
            return JobResult(report: try JSONOutput.encode(["skipped": "the database \(db.name) has no retention policy"]))
        }
        let state = context.state
        let name = db.name
        let outcome = try await Retention.apply(
            policy: policy, repository: try context.config.repositoryAccess(), dryRun: JobKinds.parameters(job)["dry_run"] == "true",
            belongs: belongs(name), inUse: { self.backupsInUse() },
            claim: { id in !self.jobBackupsInUse().contains(id) && self.core.holds.claimForDeletion(id) },
            release: { id in self.core.holds.endDeletion(id) },
            onDelete: { decision in
                _ = try? state.audit(actor: "retention", role: nil, action: "backup.delete", target: decision.id, outcome: "deleted",
                                     detail: "database \(name), job \(job.id): " + decision.reasons.joined(separator: "; "))
            })
        let report = try JSONOutput.encode(outcome)
        guard outcome.failures.isEmpty else {
            throw JobFailure(message: "Retention could not delete \(outcome.failures.count) backup(s): "
                             + outcome.failures.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "), report: report)
        }
        return JobResult(report: report)
    }

    // MARK: When a job ends

    func jobEnded(_ record: JobRecord) async {
        // A scheduled job: how late it started after its slot (the gauge the metrics promise).
        if let due = JobKinds.parameters(record)["scheduled_for"].flatMap({ try? Date($0, strategy: .iso8601) }), let started = record.startedAt {
            metrics.scheduleStarted(lateness: started.timeIntervalSince(due))
        }
        let ok = record.state == .finished
        // An interrupted job (the service stopped) is neither a failure nor a success of the database.
        guard record.state == .finished || record.state == .failed else { return }
        switch record.kind {
        case JobKinds.backup:
            if ok {
                await refreshBackupMetrics(database: record.database, countRun: true)
            } else {
                metrics.backupFailed(database: record.database)
            }
            await alert(database: record.database, check: .backup, ok: ok, record: record)
            if ok, let db = core.config.databases[record.database], db.retention != nil {
                do {
                    _ = try await core.jobs.enqueue(kind: OperationsJobKinds.retention, database: db.name, parameters: ["after_job": String(record.id)],
                                                    requestedBy: "retention")
                } catch {
                    logger.notice("retention not queued after the backup; the next backup queues it", metadata: ["database": "\(db.name)", "error": "\(error)"])
                }
            }
        case OperationsJobKinds.rehearsal:
            let result = Self.rehearsalResult(record)
            // A skipped scheduled rehearsal (no backup yet) is neither a success nor a failure.
            if Self.skippedRehearsal(result, state: record.state) { return }
            metrics.rehearsal(database: record.database, ok: ok, finishedAt: record.finishedAt ?? Date(),
                              duration: result?.durationSeconds ?? record.finishedAt.map { $0.timeIntervalSince(record.startedAt ?? $0) } ?? 0)
            await alert(database: record.database, check: .rehearsal, ok: ok, record: record)
        default:
            break
        }
    }

    func alert(database: String, check: AlertState.Check, ok: Bool, record: JobRecord) async {
        let now = record.finishedAt ?? Date()
        guard let (transition, since) = await alerts.record(database: database, check: check, ok: ok, at: now) else { return }
        let what = check == .backup ? "Backups" : "Restore rehearsals"
        let message = transition == .failure
            ? "\(what) of \(database) are failing: job \(record.id) failed: \(record.error ?? "no detail")"
            : "\(what) of \(database) work again (job \(record.id)); they had failed since \(since.formatted(Date.ISO8601FormatStyle()))."
        let event = WebhookEvent(event: transition, database: database, check: check, since: since, at: now, message: message,
                                 jobID: String(record.id), backupID: record.entryID)
        logger.log(level: transition == .failure ? .error : .notice, "alert", metadata: ["event": "\(transition.rawValue)", "database": "\(database)",
                                                                                           "check": "\(check.rawValue)", "job": "\(record.id)"])
        _ = try? core.state.audit(actor: "service", role: nil, action: "alert.\(transition.rawValue)", target: database, outcome: "notified",
                                  detail: message)
        await notifier.post(event)
    }

    /// A rehearsal job's result, read from its report (nil when it has none).
    static func rehearsalResult(_ record: JobRecord) -> Rehearsal.Result? {
        record.report.flatMap { try? JSONOutput.decode(Rehearsal.Result.self, from: Data($0.utf8)) }
    }

    /// A scheduled rehearsal that found no backup to rehearse and finished as skipped (see
    /// ``runRehearsal(_:_:)``); one asked for by a person fails instead.
    static func skippedRehearsal(_ result: Rehearsal.Result?, state: JobState) -> Bool {
        state == .finished && result?.nothingToRehearse == true
    }

    // MARK: Metrics

    /// Sets the per-database gauges from the repository and the job history (at start).
    func loadMetrics() async {
        for name in core.config.databases.keys.sorted() {
            // Each job's report decoded once: the newest ended rehearsal that was not skipped.
            if let (last, result) = try? core.state.jobs(databases: [name], kind: OperationsJobKinds.rehearsal, limit: 20).lazy
                .filter({ $0.state == .finished || $0.state == .failed }).map({ ($0, Self.rehearsalResult($0)) })
                .first(where: { !Self.skippedRehearsal($0.1, state: $0.0.state) }) {
                metrics.rehearsal(database: name, ok: last.state == .finished, finishedAt: last.finishedAt ?? last.createdAt,
                                  duration: result?.durationSeconds ?? 0, countFailure: false)
            }
        }
        guard let entries = try? await core.entries() else { return }
        for name in core.config.databases.keys {
            setLastBackup(name, entries: entries, countRun: false)
        }
    }

    func refreshBackupMetrics(database: String, countRun: Bool) async {
        guard let entries = try? await core.entries() else { return }
        setLastBackup(database, entries: entries, countRun: countRun)
    }

    private func setLastBackup(_ database: String, entries: [RepositoryEntry], countRun: Bool) {
        let newest = entries.filter { $0.state == .complete && $0.manifest != nil && core.config.databaseName(of: $0) == database }
            .max { ($0.manifest!.startedAt, $0.id) < ($1.manifest!.startedAt, $1.id) }
        guard let manifest = newest?.manifest else { return }
        metrics.backupSucceeded(database: database, takenAt: manifest.startedAt, duration: manifest.durationSeconds, bytes: manifest.totalFileBytes,
                                countRun: countRun)
    }

    /// The alert state at start: a check whose latest ended job failed is failing since the
    /// first failure of that streak, so a restart neither repeats nor loses an alert.
    static func alertState(core: ServiceCore) throws -> AlertState {
        var failing: [AlertState.Key: Date] = [:]
        for name in core.config.databases.keys {
            for (check, kind) in [(AlertState.Check.backup, JobKinds.backup), (.rehearsal, OperationsJobKinds.rehearsal)] {
                let ended = try core.state.jobs(databases: [name], kind: kind, limit: 50).filter { $0.state == .finished || $0.state == .failed }
                let streak = ended.prefix { $0.state == .failed }
                if let first = streak.last {
                    failing[AlertState.Key(database: name, check: check)] = first.finishedAt ?? first.createdAt
                }
            }
        }
        return AlertState(failing: failing)
    }
}

/// The alert state behind an actor, shared by the queue's observer calls.
public actor AlertTracker {
    var state: AlertState
    init(state: AlertState) { self.state = state }

    func record(database: String, check: AlertState.Check, ok: Bool, at: Date) -> (AlertState.Transition, Date)? {
        state.record(database: database, check: check, ok: ok, at: at).map { ($0.0, $0.since) }
    }

    public func isFailing(database: String, check: AlertState.Check) -> Bool {
        state.isFailing(database: database, check: check)
    }
}

/// The scheduler's handled moments and pauses in the service's state file (table `schedules`):
/// `last_run_at` is the moment up to which the schedule's slots were handled.
struct StateScheduleStore: ScheduleStore {
    let state: StateStore

    static func split(_ key: String) -> (kind: String, database: String) {
        let parts = key.split(separator: ":", maxSplits: 1).map(String.init)
        return (parts[0], parts.count > 1 ? parts[1] : "")
    }

    func lastHandled(_ key: String) async throws -> Date? {
        let (kind, database) = Self.split(key)
        return try state.scheduleState(database: database, kind: kind).lastRunAt
    }

    func setLastHandled(_ key: String, _ date: Date) async throws {
        let (kind, database) = Self.split(key)
        let current = try state.scheduleState(database: database, kind: kind)
        try state.recordScheduleRun(database: database, kind: kind, at: date, jobID: current.lastJobID)
    }

    func isPaused(_ key: String) async throws -> Bool {
        let (kind, database) = Self.split(key)
        return try state.scheduleState(database: database, kind: kind).paused
    }
}

/// Runs the scheduler until the service shuts down, then lets webhooks in flight finish.
struct SchedulerService: Service {
    let scheduler: Scheduler
    let notifier: WebhookNotifier

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await scheduler.run()
        }
        await notifier.drain()
    }
}

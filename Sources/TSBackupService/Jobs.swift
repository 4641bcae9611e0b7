import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TSBackup

/// What a job kind does when it runs. Handlers call the library's use cases in-process.
public struct JobHandler: Sendable {
    /// Whether the job takes the repository's lock (backup, export, delete, gc, retention): the
    /// repository takes one writer at a time, so such jobs run one after another.
    public var writesRepository: Bool
    public var run: @Sendable (_ job: JobRecord, _ context: JobContext) async throws -> JobResult

    public init(writesRepository: Bool, run: @escaping @Sendable (_ job: JobRecord, _ context: JobContext) async throws -> JobResult) {
        self.writesRepository = writesRepository
        self.run = run
    }
}

/// How a job ended well: its report (JSON text) and the repository entry it wrote or used.
public struct JobResult: Sendable {
    public var report: String?
    public var entryID: String?
    public init(report: String? = nil, entryID: String? = nil) {
        self.report = report
        self.entryID = entryID
    }
}

/// A job that failed with a report worth keeping (e.g. a restore's step-by-step report).
public struct JobFailure: Error, Sendable {
    public var message: String
    public var report: String?
    public var entryID: String?
    public init(message: String, report: String? = nil, entryID: String? = nil) {
        self.message = message
        self.report = report
        self.entryID = entryID
    }
}

/// What a running job may use.
public struct JobContext: Sendable {
    public var config: ServiceConfig
    public var state: StateStore
    public var logger: Logger
    /// Entries downloads are streaming and entries being deleted (``EntryHolds``): a job that
    /// deletes an entry claims it here first.
    public var holds: EntryHolds
    let progressSink: ProgressSink

    /// Records the job's progress (throttled: at most about twice a second reaches the state file).
    public func progress<P: Encodable>(_ value: P) {
        progressSink.offer(value)
    }
}

/// Writes a job's latest progress to the state file, dropping updates that come too fast.
final class ProgressSink: Sendable {
    let jobID: Int64
    let state: StateStore
    private let lastWrite = Mutex<Date?>(nil)

    init(jobID: Int64, state: StateStore) {
        self.jobID = jobID
        self.state = state
    }

    func offer<P: Encodable>(_ value: P) {
        let now = Date()
        let due = lastWrite.withLock { last -> Bool in
            if let last, now.timeIntervalSince(last) < 0.5 { return false }
            last = now
            return true
        }
        guard due, let text = try? JSONOutput.encode(value) else { return }
        try? state.updateJobProgress(jobID, progress: text)
    }
}

/// Why a job could not be queued.
public enum EnqueueError: Error, Sendable {
    /// The database already has a queued or running job (answered with 409 and that job).
    case busy(JobRecord)
    /// The service is shutting down.
    case stopping
    /// No handler is registered for the kind.
    case unknownKind(String)
}

/// The job queue: jobs are stored in the state file first (so they survive a restart), then run
/// with bounded concurrency: at most `limit` at once, one per database, and one repository writer
/// at a time.
///
/// A ServiceLifecycle `Service`: on start, jobs a previous process left `running` are marked
/// interrupted and the repository's leftovers of them are collected (`repo gc`); queued jobs run.
/// On graceful shutdown it stops taking jobs, cancels the running ones (the library's use cases
/// end their child processes and record a failed entry, never a complete-looking one), marks them
/// interrupted and returns.
public actor JobQueue: Service {
    public let config: ServiceConfig
    public let state: StateStore
    let logger: Logger
    private var handlers: [String: JobHandler]
    private var observers: [@Sendable (JobRecord) async -> Void] = []
    private var running: [Int64: (job: JobRecord, writes: Bool, task: Task<Void, Never>)] = [:]
    private var stopping = false
    private var started = false
    private let wake: AsyncStream<Void>.Continuation
    private let wakeups: AsyncStream<Void>
    /// Ended when the queue has stopped (every running job ended).
    private var stoppedWaiters: [CheckedContinuation<Void, Never>] = []
    /// The repository's entries as the API lists them; dropped whenever a job that writes the
    /// repository (backup, export, delete, gc, retention) ends. `TSBACKUP_SERVE_LISTING_CACHE=off`
    /// turns it off (every request reads every manifest: the benchmark's "before").
    /// Entries downloads are streaming and entries retention or a delete job is deleting; shared
    /// by the routes (``ServiceCore/holds``) and the jobs (``JobContext/holds``).
    public nonisolated let holds = EntryHolds()
    public nonisolated let listing = EntryListingCache(enabled: ProcessInfo.processInfo.environment["TSBACKUP_SERVE_LISTING_CACHE"] != "off")

    public init(config: ServiceConfig, state: StateStore, handlers: [String: JobHandler] = [:], logger: Logger = Logger(label: "tsbackup.jobs")) {
        self.config = config
        self.state = state
        self.handlers = handlers
        self.logger = logger
        (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Adds (or replaces) the handler of a job kind; serve-ops registers "rehearsal" and
    /// "retention" this way before the service starts.
    public func register(kind: String, handler: JobHandler) {
        handlers[kind] = handler
    }

    /// Calls `observer` with the stored record of every job that ends (finished, failed or
    /// interrupted): the hook for notifications and metrics.
    public func addObserver(_ observer: @escaping @Sendable (JobRecord) async -> Void) {
        observers.append(observer)
    }

    /// Whether the queue takes new jobs (false once shutdown began).
    public var isAccepting: Bool { !stopping }

    /// Jobs running now.
    public var runningJobs: [JobRecord] { running.values.map(\.job).sorted { $0.id < $1.id } }

    /// Stores a queued job and wakes the runner.
    ///
    /// - Parameters:
    ///   - kind: a registered kind ("backup", "export-hypertable", "restore", "delete", "gc", ...).
    ///   - database: the config's name of the database; one job per database at a time.
    ///   - parameters: what the handler reads (e.g. "label", "table", "backup_id").
    ///   - requestedBy: the token's name, or "scheduler".
    /// - Throws: ``EnqueueError/busy(_:)`` with the database's queued or running job.
    public func enqueue(kind: String, database: String, parameters: [String: String] = [:], requestedBy: String) throws -> JobRecord {
        guard !stopping else { throw EnqueueError.stopping }
        guard handlers[kind] != nil else { throw EnqueueError.unknownKind(kind) }
        if let busy = try state.activeJobs().first(where: { $0.database == database }) {
            throw EnqueueError.busy(try state.job(busy.id) ?? busy)
        }
        let text = (try? JSONOutput.encode(parameters)) ?? "{}"
        let job = try state.insertJob(kind: kind, database: database, parameters: text, requestedBy: requestedBy)
        logger.info("job queued", metadata: ["job": "\(job.id)", "kind": "\(kind)", "database": "\(database)", "by": "\(requestedBy)"])
        wake.yield()
        return job
    }

    public func run() async throws {
        try await recoverAfterRestart()
        listing.invalidate()
        started = true
        await withGracefulShutdownHandler {
            wake.yield()
            for await _ in wakeups {
                if self.isStopping() { break }
                self.dispatch()
            }
        } onGracefulShutdown: {
            Task { await self.stop() }
        }
        stop()
        await waitUntilIdle()
    }

    private func isStopping() -> Bool { stopping }

    /// Stops taking jobs and cancels the running ones.
    public func stop() {
        guard !stopping else { return }
        stopping = true
        logger.info("job queue stopping", metadata: ["running": "\(running.count)"])
        for entry in running.values { entry.task.cancel() }
        wake.finish()
        if running.isEmpty { resumeStopped() }
    }

    private func waitUntilIdle() async {
        if running.isEmpty { return }
        await withCheckedContinuation { continuation in stoppedWaiters.append(continuation) }
    }

    private func resumeStopped() {
        let waiters = stoppedWaiters
        stoppedWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    /// Jobs a previous process left running are interrupted; the repository's leftovers of them removed.
    private func recoverAfterRestart() async throws {
        let interrupted = try state.interruptRunningJobs(reason: "The service stopped while this job ran; it was not resumed. Its unfinished repository entry, if any, was removed when the service started again.")
        guard !interrupted.isEmpty else { return }
        logger.warning("jobs interrupted by a previous stop", metadata: ["jobs": "\(interrupted.map(\.id))"])
        do {
            let removed = try await config.repositoryAccess().with(create: false) { repo in
                try await repo.withLock(command: "tsbackup serve: clean-up after restart") { _ in try await repo.removeInterruptedEntries() }
            }
            _ = try? state.audit(actor: "service", role: nil, action: "repo.gc", target: config.repository, outcome: "done",
                             detail: removed.isEmpty ? "nothing to remove" : "removed \(removed.joined(separator: ", "))")
        } catch let error as TSBackupError where error.kind == .notFound {
            // No run created the repository yet (the interrupted ones stopped before): nothing to clean.
            _ = try? state.audit(actor: "service", role: nil, action: "repo.gc", target: config.repository, outcome: "done",
                             detail: "no repository yet; nothing to remove")
        } catch {
            // Anything else is reported, not fatal: the next writing run's lock takeover cleans up too.
            logger.warning("clean-up after restart failed", metadata: ["error": "\(Self.message(error))"])
            _ = try? state.audit(actor: "service", role: nil, action: "repo.gc", target: config.repository, outcome: "failed", detail: Self.message(error))
        }
        await sweepInterruptedRestores(interrupted.filter { $0.kind == JobKinds.restore })
        for job in interrupted {
            if let stored = try? state.job(job.id) { await notify(stored) }
        }
    }

    /// A restore job killed with the service leaves its database marked as an interrupted run's
    /// (InterruptedRuns): the sweep drops it now, on each server such a job restored to, and
    /// the audit log (and the log) name every database dropped or left.
    private func sweepInterruptedRestores(_ jobs: [JobRecord]) async {
        var servers: [String: ConnectionSettings] = [:]
        for job in jobs {
            guard let settings = try? config.databases[job.database]?.restoreConnection.settings() else { continue }
            servers["\(settings.host):\(settings.port)"] = settings
        }
        for (server, settings) in servers.sorted(by: { $0.key < $1.key }) {
            do {
                let warnings = try await InterruptedRuns.sweepRestores(on: settings)
                for warning in warnings {
                    logger.warning("interrupted restore cleaned up", metadata: ["detail": "\(warning)"])
                    _ = try? state.audit(actor: "service", role: nil, action: "restore.cleanup", target: server, outcome: "done", detail: warning)
                }
                if warnings.isEmpty {
                    _ = try? state.audit(actor: "service", role: nil, action: "restore.cleanup", target: server, outcome: "done", detail: "no database of an interrupted restore found")
                }
            } catch {
                // Not fatal: the next restore on that server sweeps again.
                logger.warning("clean-up of interrupted restores failed", metadata: ["server": "\(server)", "error": "\(Self.message(error))"])
                _ = try? state.audit(actor: "service", role: nil, action: "restore.cleanup", target: server, outcome: "failed", detail: Self.message(error))
            }
        }
    }

    /// Starts every queued job the limits allow, oldest first.
    private func dispatch() {
        guard !stopping, let active = try? state.activeJobs() else { return }
        for job in active where job.state == .queued && running[job.id] == nil {
            guard running.count < config.maxConcurrentJobs else { return }
            guard let handler = handlers[job.kind] else {
                try? state.finishJob(job.id, state: .failed, report: nil, error: "No handler for job kind \(job.kind) in this version of the service.", entryID: nil)
                continue
            }
            if running.values.contains(where: { $0.job.database == job.database }) { continue }
            if handler.writesRepository && running.values.contains(where: \.writes) { continue }
            start(job, handler: handler)
        }
    }

    private func start(_ queued: JobRecord, handler: JobHandler) {
        try? state.markJobRunning(queued.id)
        let job = (try? state.job(queued.id)) ?? queued
        let context = JobContext(config: config, state: state, logger: logger, holds: holds, progressSink: ProgressSink(jobID: job.id, state: state))
        logger.info("job started", metadata: ["job": "\(job.id)", "kind": "\(job.kind)", "database": "\(job.database)"])
        let task = Task {
            var outcome: (JobState, String?, String?, String?)
            do {
                let result = try await handler.run(job, context)
                outcome = (.finished, result.report, nil, result.entryID)
            } catch let failure as JobFailure {
                outcome = (Task.isCancelled ? .interrupted : .failed, failure.report, failure.message, failure.entryID)
            } catch {
                outcome = (Task.isCancelled ? .interrupted : .failed, nil, Self.message(error), nil)
            }
            if outcome.0 == .interrupted {
                outcome.2 = "Cancelled because the service shut down: " + (outcome.2 ?? "")
            }
            await self.finished(job.id, outcome: outcome)
        }
        running[job.id] = (job, handler.writesRepository, task)
    }

    private func finished(_ id: Int64, outcome: (JobState, String?, String?, String?)) async {
        try? state.finishJob(id, state: outcome.0, report: outcome.1, error: outcome.2, entryID: outcome.3)
        if running[id]?.writes ?? true { listing.invalidate() }
        running[id] = nil
        logger.info("job ended", metadata: ["job": "\(id)", "state": "\(outcome.0.rawValue)"])
        if let record = try? state.job(id) { await notify(record) }
        if stopping {
            if running.isEmpty { resumeStopped() }
        } else {
            wake.yield()
        }
    }

    private func notify(_ record: JobRecord) async {
        for observer in observers { await observer(record) }
    }

    /// A user-facing message for an error (never a password: the library's messages name servers
    /// as user@host:port/db).
    static func message(_ error: any Error) -> String {
        if let error = error as? TSBackupError { return error.message }
        if let error = error as? Restore.Failure { return error.error.message }
        if error is CancellationError { return "cancelled" }
        return String(describing: error)
    }
}

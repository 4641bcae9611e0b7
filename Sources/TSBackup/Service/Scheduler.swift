import Foundation
import Logging

/// One schedule the service runs: a database's backups or its restore rehearsals.
public struct ScheduledTask: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case backup, rehearsal
    }

    public var database: String
    public var kind: Kind
    public var schedule: CronSchedule

    public init(database: String, kind: Kind, schedule: CronSchedule) {
        self.database = database
        self.kind = kind
        self.schedule = schedule
    }

    /// How the task is named in the state store and the API: `backup:metrics`, `rehearsal:metrics`.
    public var key: String { "\(kind.rawValue):\(database)" }
}

/// Where the scheduler keeps what must survive a restart: per task, the moment up to which its
/// slots were handled, and whether it is paused. The service backs it with its SQLite state.
public protocol ScheduleStore: Sendable {
    func lastHandled(_ key: String) async throws -> Date?
    func setLastHandled(_ key: String, _ date: Date) async throws
    func isPaused(_ key: String) async throws -> Bool
}

/// What the scheduler decided for one due task.
public struct ScheduleFiring: Sendable, Equatable {
    public var task: ScheduledTask
    /// The slot that was due (for a run missed while the service was down: the first missed slot).
    public var due: Date
    /// When the scheduler acted on it.
    public var at: Date
    /// Slots that passed while the service was down; they run once, not once each.
    public var missedSlots: Int
    /// The latest slot this firing covers (`due` unless slots were missed): what the store
    /// records as handled, so `last_run_at` is a slot of the schedule, not the moment the
    /// scheduler happened to act on it.
    public var lastDue: Date
    /// Paused: the slot is recorded as handled and nothing runs.
    public var skippedPaused: Bool
}

/// Runs schedules: when a task's next slot is due it hands the task to `enqueue` (the service's
/// job queue) once.
///
/// A task remembers the moment up to which its slots were handled, in the ``ScheduleStore``. At
/// start, a task whose next slot after that moment has passed (the service was down) runs once
/// now, however many slots it missed. A task seen for the first time starts counting from now
/// (it does not run at once). A paused task's slots pass without runs; resuming does not replay
/// them.
public actor Scheduler {
    public typealias Enqueue = @Sendable (ScheduledTask, ScheduleFiring) async throws -> Void

    private var tasks: [ScheduledTask]
    let store: any ScheduleStore
    let enqueue: Enqueue
    let logger: Logger
    /// The longest sleep, so pauses, resumes and clock changes are noticed without a wake-up.
    let maximumSleep: Duration
    /// Seconds before a task whose enqueue failed (database busy, state file locked) is tried again.
    let retryDelay: TimeInterval
    private var wakeUp: CheckedContinuation<Void, Never>?
    /// The last time each task fired, and when its next slot is, for the API and the dashboard.
    private var nextSlots: [String: Date] = [:]

    public init(tasks: [ScheduledTask], store: any ScheduleStore, maximumSleep: Duration = .seconds(30), retryDelay: TimeInterval = 5,
                logger: Logger = Logger(label: "tsbackup.scheduler"), enqueue: @escaping Enqueue) {
        self.retryDelay = retryDelay
        self.tasks = tasks
        self.store = store
        self.enqueue = enqueue
        self.logger = logger
        self.maximumSleep = maximumSleep
    }

    /// The configured tasks.
    public var scheduledTasks: [ScheduledTask] { tasks }

    /// The next slot of each task (by key), as of the last tick.
    public var upcoming: [String: Date] { nextSlots }

    /// Looks at every task once at `now`: enqueues those that are due, records the handled
    /// moments, and returns what fired (paused slots included, flagged).
    @discardableResult
    public func tick(now: Date = Date()) async -> [ScheduleFiring] {
        var fired: [ScheduleFiring] = []
        for task in tasks {
            do {
                guard let last = try await store.lastHandled(task.key) else {
                    // New schedule: count from now.
                    try await store.setLastHandled(task.key, now)
                    nextSlots[task.key] = task.schedule.nextFire(after: now)
                    continue
                }
                guard let due = task.schedule.nextFire(after: last), due <= now else {
                    nextSlots[task.key] = task.schedule.nextFire(after: last)
                    continue
                }
                var missed = 0
                var cursor = due
                while missed < 1000, let next = task.schedule.nextFire(after: cursor), next <= now {
                    missed += 1
                    cursor = next
                }
                let paused = try await store.isPaused(task.key)
                let firing = ScheduleFiring(task: task, due: due, at: now, missedSlots: missed, lastDue: cursor, skippedPaused: paused)
                if paused {
                    logger.info("schedule paused: slot skipped", metadata: ["task": "\(task.key)", "due": "\(due)"])
                } else {
                    if missed > 0 {
                        logger.notice("schedule missed slots while the service was down: running once now",
                                      metadata: ["task": "\(task.key)", "first_due": "\(due)", "missed": "\(missed + 1)"])
                    }
                    try await enqueue(task, firing)
                    logger.info("schedule fired", metadata: ["task": "\(task.key)", "due": "\(due)",
                                                             "lateness_ms": "\(Int(now.timeIntervalSince(due) * 1000))"])
                }
                // Handled up to the latest slot that has passed: the run enqueued covers every
                // slot up to it, and the next slot after it is after `now` (the loop above).
                try await store.setLastHandled(task.key, cursor)
                nextSlots[task.key] = task.schedule.nextFire(after: cursor)
                fired.append(firing)
            } catch {
                // E.g. the database is busy with another job: try again shortly, not in a tight loop.
                nextSlots[task.key] = now.addingTimeInterval(retryDelay)
                logger.notice("schedule could not be handled; will retry", metadata: ["task": "\(task.key)", "error": "\(error)"])
            }
        }
        return fired
    }

    /// Runs until cancelled: a tick, then a sleep until the next slot (at most ``maximumSleep``).
    public func run() async {
        while !Task.isCancelled {
            await tick()
            let now = Date()
            let next = nextSlots.values.min() ?? now.addingTimeInterval(3600)
            let wait = min(max(0, next.timeIntervalSince(now)), Double(maximumSleep.components.seconds))
            await sleep(seconds: wait)
        }
    }

    /// Ends the current sleep (after a pause, a resume or a change of tasks).
    public func wake() {
        wakeUp?.resume()
        wakeUp = nil
    }

    /// Replaces the tasks (e.g. after a reload); their handled moments stay in the store.
    public func replaceTasks(_ newTasks: [ScheduledTask]) {
        tasks = newTasks
        wake()
    }

    private func sleep(seconds: Double) async {
        // A sleeping task that a wake-up or cancellation ends early; the timer always resumes
        // exactly one continuation.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: .milliseconds(Int(seconds * 1000) + 1)) }
            group.addTask { await self.waitForWake() }
            await group.next()
            group.cancelAll()
            self.wake()
        }
    }

    private func waitForWake() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume()
                } else {
                    wakeUp?.resume()
                    wakeUp = continuation
                }
            }
        } onCancel: {
            Task { await self.wake() }
        }
    }
}

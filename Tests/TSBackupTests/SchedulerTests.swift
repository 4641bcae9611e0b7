import Foundation
import Synchronization
import Testing
@testable import TSBackup

/// The scheduler's store in memory; the service's is its SQLite state.
actor MemoryScheduleStore: ScheduleStore {
    var handled: [String: Date] = [:]
    var paused: Set<String> = []
    func lastHandled(_ key: String) -> Date? { handled[key] }
    func setLastHandled(_ key: String, _ date: Date) { handled[key] = date }
    func isPaused(_ key: String) -> Bool { paused.contains(key) }
    func pause(_ key: String) { paused.insert(key) }
    func resume(_ key: String) { paused.remove(key) }
}

/// What the scheduler handed to the queue.
final class Enqueued: Sendable {
    let items = Mutex<[ScheduleFiring]>([])
    var all: [ScheduleFiring] { items.withLock { $0 } }
}

@Suite("scheduler: due tasks run once, missed runs once at start, pauses persist")
struct SchedulerTests {
    static func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    func make(_ store: MemoryScheduleStore, _ tasks: [ScheduledTask]) -> (Scheduler, Enqueued) {
        let enqueued = Enqueued()
        let scheduler = Scheduler(tasks: tasks, store: store) { _, firing in enqueued.items.withLock { $0.append(firing) } }
        return (scheduler, enqueued)
    }

    @Test func firesWhenDueAndOnlyOnce() async throws {
        let store = MemoryScheduleStore()
        let task = ScheduledTask(database: "metrics", kind: .backup, schedule: try CronSchedule.parse("0 * * * *"))
        let (scheduler, enqueued) = make(store, [task])
        // First sight: counts from now, runs nothing.
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:10:00Z")).isEmpty)
        #expect(await scheduler.upcoming["backup:metrics"] == Self.date("2026-05-01T11:00:00Z"))
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:59:59Z")).isEmpty)
        let fired = await scheduler.tick(now: Self.date("2026-05-01T11:00:00Z"))
        #expect(fired.map(\.due) == [Self.date("2026-05-01T11:00:00Z")])
        #expect(fired.first?.missedSlots == 0)
        #expect(await scheduler.tick(now: Self.date("2026-05-01T11:00:30Z")).isEmpty)
        #expect(enqueued.all.count == 1)
        #expect(enqueued.all.first?.task.key == "backup:metrics")
    }

    @Test func aNewScheduleRecordsTheSlotItRanNotTheMomentOfTheTick() async throws {
        let store = MemoryScheduleStore()
        let task = ScheduledTask(database: "metrics", kind: .backup, schedule: try CronSchedule.parse("0 * * * *"))
        let (scheduler, enqueued) = make(store, [task])
        // First sight: nothing runs, counting starts at that moment.
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:10:07Z")).isEmpty)
        #expect(await store.lastHandled("backup:metrics") == Self.date("2026-05-01T10:10:07Z"))
        // The first slot, acted on 2.5 s late: recorded as the slot itself.
        let late = Self.date("2026-05-01T11:00:00Z").addingTimeInterval(2.5)
        let fired = await scheduler.tick(now: late)
        #expect(fired.map(\.due) == [Self.date("2026-05-01T11:00:00Z")])
        #expect(fired.first?.at == late)
        #expect(await store.lastHandled("backup:metrics") == Self.date("2026-05-01T11:00:00Z"))
        #expect(await scheduler.upcoming["backup:metrics"] == Self.date("2026-05-01T12:00:00Z"))
        // Still once per slot.
        #expect(await scheduler.tick(now: late.addingTimeInterval(30)).isEmpty)
        #expect(await scheduler.tick(now: Self.date("2026-05-01T12:00:00Z")).map(\.due) == [Self.date("2026-05-01T12:00:00Z")])
        #expect(enqueued.all.count == 2)
    }

    @Test func runMissedWhileDownRunsOnceAtStart() async throws {
        let store = MemoryScheduleStore()
        await store.setLastHandled("backup:metrics", Self.date("2026-05-01T10:10:00Z"))
        let task = ScheduledTask(database: "metrics", kind: .backup, schedule: try CronSchedule.parse("0 * * * *"))
        // A new scheduler (the service restarted) five hours later: five slots passed.
        let (scheduler, enqueued) = make(store, [task])
        let fired = await scheduler.tick(now: Self.date("2026-05-01T15:20:00Z"))
        #expect(fired.count == 1)
        #expect(fired.first?.due == Self.date("2026-05-01T11:00:00Z"))
        #expect(fired.first?.missedSlots == 4)
        #expect(enqueued.all.count == 1)
        // Handled up to the latest slot that passed (a slot, not the moment of the tick).
        #expect(fired.first?.lastDue == Self.date("2026-05-01T15:00:00Z"))
        #expect(await store.lastHandled("backup:metrics") == Self.date("2026-05-01T15:00:00Z"))
        // The next one is the next slot after now, not a replay of the missed ones.
        #expect(await scheduler.tick(now: Self.date("2026-05-01T15:59:00Z")).isEmpty)
        #expect(await scheduler.tick(now: Self.date("2026-05-01T16:00:01Z")).count == 1)
        #expect(enqueued.all.count == 2)
    }

    @Test func pausedSlotsPassWithoutRuns() async throws {
        let store = MemoryScheduleStore()
        let backup = ScheduledTask(database: "metrics", kind: .backup, schedule: try CronSchedule.parse("@every 1m"))
        let rehearsal = ScheduledTask(database: "metrics", kind: .rehearsal, schedule: try CronSchedule.parse("@every 1m"))
        let (scheduler, enqueued) = make(store, [backup, rehearsal])
        await scheduler.tick(now: Self.date("2026-05-01T10:00:30Z"))
        await store.pause("backup:metrics")
        let fired = await scheduler.tick(now: Self.date("2026-05-01T10:01:00Z"))
        #expect(fired.count == 2)
        #expect(fired.first { $0.task.kind == .backup }?.skippedPaused == true)
        #expect(enqueued.all.map(\.task.key) == ["rehearsal:metrics"])
        // Resumed: the next slot runs, the skipped one is not replayed.
        await store.resume("backup:metrics")
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:01:30Z")).isEmpty)
        await scheduler.tick(now: Self.date("2026-05-01T10:02:00Z"))
        #expect(enqueued.all.map(\.task.key) == ["rehearsal:metrics", "backup:metrics", "rehearsal:metrics"])
    }

    @Test func aFailingQueueIsRetriedAtTheNextTick() async throws {
        let store = MemoryScheduleStore()
        await store.setLastHandled("backup:m", Self.date("2026-05-01T10:00:00Z"))
        let attempts = Mutex(0)
        let scheduler = Scheduler(tasks: [ScheduledTask(database: "m", kind: .backup, schedule: try CronSchedule.parse("@every 1m"))], store: store) { _, _ in
            let n = attempts.withLock { $0 += 1; return $0 }
            if n == 1 { throw TSBackupError(.failed, "queue unavailable") }
        }
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:01:00Z")).isEmpty)
        // Not recorded as handled, so the next tick enqueues it.
        #expect(await store.lastHandled("backup:m") == Self.date("2026-05-01T10:00:00Z"))
        #expect(await scheduler.tick(now: Self.date("2026-05-01T10:01:01Z")).count == 1)
        #expect(attempts.withLock { $0 } == 2)
    }

    @Test func runLoopFiresPerSecondScheduleAndStopsOnCancel() async throws {
        let store = MemoryScheduleStore()
        let (scheduler, enqueued) = make(store, [ScheduledTask(database: "m", kind: .backup, schedule: try CronSchedule.parse("@every 1s"))])
        let loop = Task { await scheduler.run() }
        // Hang guard only (ten minutes: the suite runs hundreds of tests at once): wait until two
        // runs were enqueued.
        let deadline = ContinuousClock.now + .seconds(600)
        while enqueued.all.count < 2 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        loop.cancel()
        await loop.value
        #expect(enqueued.all.count >= 2)
        let dues = enqueued.all.map(\.due)
        #expect(dues == dues.sorted() && Set(dues).count == dues.count, "each slot at most once, in order")
    }
}

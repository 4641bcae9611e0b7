import Foundation
import Testing
@testable import TSBackup

@Suite("dashboard freshness: age of the last good backup against the schedule")
struct BackupFreshnessTests {
    let now = Date(timeIntervalSince1970: 1_000_000)

    @Test func coloursAgainstTheInterval() {
        let hour: TimeInterval = 3600
        func age(_ seconds: TimeInterval) -> Date { now.addingTimeInterval(-seconds) }
        #expect(BackupFreshness.classify(lastGood: age(30 * 60), now: now, interval: hour) == .green)
        #expect(BackupFreshness.classify(lastGood: age(1.5 * hour + 600), now: now, interval: hour) == .green)
        #expect(BackupFreshness.classify(lastGood: age(1.5 * hour + 601), now: now, interval: hour) == .amber)
        #expect(BackupFreshness.classify(lastGood: age(3 * hour + 600), now: now, interval: hour) == .amber)
        #expect(BackupFreshness.classify(lastGood: age(3 * hour + 601), now: now, interval: hour) == .red)
        #expect(BackupFreshness.classify(lastGood: nil, now: now, interval: hour) == .red)
        // No schedule: judged against a day.
        #expect(BackupFreshness.classify(lastGood: age(30 * hour), now: now, interval: nil) == .green)
        #expect(BackupFreshness.classify(lastGood: age(50 * hour), now: now, interval: nil) == .amber)
        #expect(BackupFreshness.classify(lastGood: age(80 * hour), now: now, interval: nil) == .red)
    }

    @Test func labelsAndAges() {
        #expect(BackupFreshness.red.label == "STALE")
        #expect(BackupFreshness.formatAge(42) == "42s")
        #expect(BackupFreshness.formatAge(12 * 60 + 5) == "12m")
        #expect(BackupFreshness.formatAge(3 * 3600 + 5 * 60) == "3h 5m")
        #expect(BackupFreshness.formatAge(2 * 86_400 + 4 * 3600) == "2d 4h")
        #expect(BackupFreshness.formatAge(-5) == "0s")
    }
}

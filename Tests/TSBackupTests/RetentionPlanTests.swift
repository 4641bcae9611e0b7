import Foundation
import Testing
@testable import TSBackup

@Suite("retention: grandfather-father-son planning over generated backup lists")
struct RetentionPlanTests {
    typealias Backup = RetentionPlan.Backup


    static func date(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }

    /// An id in the repository's format for a moment.
    static func id(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.string(from: date)
    }

    /// One complete backup every `hours` from `start`, `count` of them, oldest first.
    static func generated(from start: String, every hours: Double, count: Int) -> [Backup] {
        (0..<count).map { i in
            let taken = date(start).addingTimeInterval(Double(i) * hours * 3600)
            return Backup(id: id(taken), takenAt: taken, state: .complete)
        }
    }

    static func kept(_ plan: RetentionPlan) -> [String] { plan.kept.map(\.id) }

    @Test func keepLastOnly() {
        let backups = Self.generated(from: "2026-01-01T00:00:00Z", every: 1, count: 10)
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(last: 3))
        #expect(Self.kept(plan) == backups.suffix(3).map(\.id))
        #expect(plan.deletions.count == 7)
        #expect(plan.decisions.map(\.id) == backups.map(\.id), "one decision per backup, in the input's order")
        #expect(plan.deletions.allSatisfy { $0.reasons.first?.hasPrefix("not selected by the policy") == true })
    }

    @Test func grandfatherFatherSon() {
        // Every 6 hours (00, 06, 12, 18 UTC) for 100 days from Thursday 1 January 2026.
        let backups = Self.generated(from: "2026-01-01T00:00:00Z", every: 6, count: 400)
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(last: 2, daily: 7, weekly: 4, monthly: 3))
        let lastDay = "2026-04-10"  // day 100
        let expected = Set([
            // last 2
            "20260410T180000Z", "20260410T120000Z",
            // daily 7: the 18:00 backup of 4..10 April
        ] + (4...10).map { String(format: "202604%02dT180000Z", $0) }
          // weekly 4: the newest of ISO weeks 15 (6-10 Apr, partial), 14, 13, 12: their Sundays 18:00
          + ["20260405T180000Z", "20260329T180000Z", "20260322T180000Z"]
          // monthly 3: April (the newest), March 31, February 28
          + ["20260331T180000Z", "20260228T180000Z"])
        #expect(backups.last?.id.hasPrefix(lastDay.replacingOccurrences(of: "-", with: "")) == true)
        #expect(Set(Self.kept(plan)) == expected)
        #expect(plan.deletions.count == 400 - expected.count)
        let newest = plan.decisions.last!
        #expect(newest.reasons.contains("newest complete backup"))
        #expect(newest.reasons.contains("last 2 (#1)"))
        #expect(newest.reasons.contains("daily 2026-04-10"))
        #expect(newest.reasons.contains("weekly 2026-W15"))
        #expect(newest.reasons.contains("monthly 2026-04"))
        #expect(plan.decisions.first { $0.id == "20260228T180000Z" }?.reasons == ["monthly 2026-02"])
    }

    @Test func bucketsAreCountedAmongBucketsThatHaveBackups() {
        // Backups on 1, 5 and 20 March only: daily 2 keeps the newest of the two most recent days
        // that have one (20 and 5 March), not of the last two calendar days.
        let backups = ["2026-03-01T10:00:00Z", "2026-03-05T10:00:00Z", "2026-03-05T22:00:00Z", "2026-03-20T10:00:00Z"].map {
            Backup(id: Self.id(Self.date($0)), takenAt: Self.date($0), state: .complete)
        }
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(daily: 2))
        #expect(Self.kept(plan) == ["20260305T220000Z", "20260320T100000Z"])
    }

    @Test func daysAreReadInThePolicysTimeZone() {
        // 22:30 UTC on 9 January is 23:30 in Berlin; 23:30 UTC is already 10 January there.
        let backups = ["2026-01-09T22:30:00Z", "2026-01-09T23:30:00Z", "2026-01-10T12:00:00Z"].map {
            Backup(id: Self.id(Self.date($0)), takenAt: Self.date($0), state: .complete)
        }
        let utc = RetentionPlan.make(backups, policy: RetentionPolicy(daily: 2, timeZone: "UTC"))
        #expect(Self.kept(utc) == ["20260109T233000Z", "20260110T120000Z"])
        let berlin = RetentionPlan.make(backups, policy: RetentionPolicy(daily: 2, timeZone: "Europe/Berlin"))
        #expect(Self.kept(berlin) == ["20260109T223000Z", "20260110T120000Z"])
        #expect(berlin.decisions[0].reasons == ["daily 2026-01-09"])
    }

    @Test func weeksRunMondayToSunday() {
        // Sunday 11 January 23:00 and Monday 12 January 01:00 (UTC) are in different ISO weeks.
        let backups = ["2026-01-10T12:00:00Z", "2026-01-11T23:00:00Z", "2026-01-12T01:00:00Z"].map {
            Backup(id: Self.id(Self.date($0)), takenAt: Self.date($0), state: .complete)
        }
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(weekly: 2))
        #expect(Self.kept(plan) == ["20260111T230000Z", "20260112T010000Z"])
        #expect(plan.decisions[1].reasons == ["weekly 2026-W02"])
        // Week 53 of 2026 runs into 2027: ISO week-year, not calendar year.
        let yearEnd = [Backup(id: "20270102T120000Z", takenAt: Self.date("2027-01-02T12:00:00Z"), state: .complete)]
        #expect(RetentionPlan.make(yearEnd, policy: RetentionPolicy(weekly: 1)).decisions[0].reasons.contains("weekly 2026-W53"))
    }

    @Test func newestCompleteBackupIsAlwaysKept() {
        let backups = Self.generated(from: "2026-01-01T00:00:00Z", every: 24, count: 5)
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy())
        #expect(Self.kept(plan) == [backups.last!.id])
        #expect(plan.decisions.last!.reasons == ["newest complete backup"])
    }

    @Test func backupsInUseAreKept() {
        let backups = Self.generated(from: "2026-01-01T00:00:00Z", every: 24, count: 5)
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(last: 1), inUse: [backups[1].id])
        #expect(Self.kept(plan) == [backups[1].id, backups[4].id])
        #expect(plan.decisions[1].reasons == ["in use by a running job"])
    }

    @Test func failedAndIncompleteEntries() {
        let t = { (s: String) in Self.date(s) }
        let backups = [
            Backup(id: "20260101T000000Z", takenAt: t("2026-01-01T00:00:00Z"), state: .failed),
            Backup(id: "20260102T000000Z", takenAt: t("2026-01-02T00:00:00Z"), state: .complete),
            Backup(id: "20260103T000000Z", takenAt: nil, state: .incomplete),
            Backup(id: "20260104T000000Z", takenAt: t("2026-01-04T00:00:00Z"), state: .complete),
            Backup(id: "20260105T000000Z", takenAt: t("2026-01-05T00:00:00Z"), state: .failed),
        ]
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(last: 1))
        let action = Dictionary(uniqueKeysWithValues: plan.decisions.map { ($0.id, $0.action) })
        // A failure older than the newest complete backup is superseded.
        #expect(action["20260101T000000Z"] == .delete)
        #expect(plan.decisions[0].reasons == ["failed run, superseded by the newer complete backup 20260104T000000Z"])
        #expect(action["20260102T000000Z"] == .delete)
        // Incomplete: never deleted by retention.
        #expect(action["20260103T000000Z"] == .keep)
        #expect(plan.decisions[2].reasons.first?.hasPrefix("incomplete") == true)
        #expect(action["20260104T000000Z"] == .keep)
        // The newest failure, after the newest complete backup: the record of the current failure.
        #expect(action["20260105T000000Z"] == .keep)
        // Failures never count as "last N" or fill a bucket.
        #expect(!plan.decisions[4].reasons.contains { $0.hasPrefix("last") || $0.hasPrefix("newest") })
    }

    @Test func onlyFailuresAndNothingComplete() {
        let backups = [Backup(id: "20260101T000000Z", takenAt: Self.date("2026-01-01T00:00:00Z"), state: .failed)]
        let plan = RetentionPlan.make(backups, policy: RetentionPolicy(last: 3))
        #expect(plan.deletions.isEmpty)
    }

    /// Planning again over what a plan kept deletes nothing more, for random lists and policies.
    @Test func applyingTwiceChangesNothing() {
        var generator = SplitMix(seed: 42)
        for _ in 0..<200 {
            var time = Self.date("2025-06-01T00:00:00Z")
            var backups: [Backup] = []
            for _ in 0..<Int(generator.next() % 120) {
                time = time.addingTimeInterval(Double(generator.next() % (3 * 86_400)))
                let roll = generator.next() % 10
                let state: RepositoryEntry.State = roll == 0 ? .failed : roll == 1 ? .incomplete : .complete
                backups.append(Backup(id: Self.id(time) + "-\(backups.count)", takenAt: state == .incomplete ? nil : time, state: state))
            }
            let policy = RetentionPolicy(last: Int(generator.next() % 4), daily: Int(generator.next() % 8), weekly: Int(generator.next() % 5),
                                         monthly: Int(generator.next() % 4), timeZone: ["UTC", "Europe/Berlin", "Pacific/Auckland"][Int(generator.next() % 3)])
            let plan = RetentionPlan.make(backups, policy: policy)
            let remaining = backups.filter { b in plan.kept.contains { $0.id == b.id } }
            let again = RetentionPlan.make(remaining, policy: policy)
            #expect(again.deletions.isEmpty, "policy \(policy.summary) over \(backups.count) backups")
            // The newest complete backup survives every policy.
            let newest = backups.filter { $0.state == .complete }.max { ($0.takenAt!, $0.id) < ($1.takenAt!, $1.id) }
            if let newest { #expect(plan.kept.contains { $0.id == newest.id }) }
            // The kept complete backups are never more than the rules allow.
            let keptComplete = plan.kept.filter { $0.state == "complete" }.count
            #expect(keptComplete <= max(1, policy.last + policy.daily + policy.weekly + policy.monthly))
        }
    }

    @Test func policyValidation() {
        #expect(throws: TSBackupError.self) { try RetentionPolicy(last: -1).validate() }
        #expect(throws: TSBackupError.self) { try RetentionPolicy(daily: 1, timeZone: "Nowhere/Town").validate() }
        #expect(throws: Never.self) { try RetentionPolicy(last: 1, daily: 7, timeZone: "Europe/Berlin").validate() }
    }

    @Test func entriesMapToPlannerBackups() {
        let entries = [
            RepositoryEntry(id: "a", state: .incomplete, location: "/x/a"),
        ]
        #expect(RetentionPlan.backups(from: entries) == [Backup(id: "a", takenAt: nil, state: .incomplete)])
    }
}

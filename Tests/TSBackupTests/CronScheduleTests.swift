import Foundation
import Testing
@testable import TSBackup

@Suite("cron schedules: parsing, next fire time, time zones and daylight-saving changes")
struct CronScheduleTests {

    static func date(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }
    static func text(_ date: Date?) -> String { date.map { $0.formatted(.iso8601) } ?? "nil" }

    /// The next `count` fires after `start`, as UTC timestamps.
    static func fires(_ expression: String, zone: String = "UTC", after start: String, count: Int) throws -> [String] {
        let schedule = try CronSchedule.parse(expression, zone: zone)
        var cursor = date(start)
        var out: [String] = []
        for _ in 0..<count {
            guard let next = schedule.nextFire(after: cursor) else { break }
            out.append(text(next))
            cursor = next
        }
        return out
    }

    @Test func dailyAtATime() throws {
        #expect(try Self.fires("30 2 * * *", after: "2026-01-01T00:00:00Z", count: 2) == ["2026-01-01T02:30:00Z", "2026-01-02T02:30:00Z"])
        // Strictly after: a fire at exactly the given moment is not returned again.
        #expect(try Self.fires("30 2 * * *", after: "2026-01-01T02:30:00Z", count: 1) == ["2026-01-02T02:30:00Z"])
    }

    @Test func rangesStepsListsAndNames() throws {
        // 2026-01-03 is a Saturday: business hours resume on Monday the 5th.
        #expect(try Self.fires("*/20 9-10 * * MON-FRI", after: "2026-01-03T12:00:00Z", count: 7) == [
            "2026-01-05T09:00:00Z", "2026-01-05T09:20:00Z", "2026-01-05T09:40:00Z",
            "2026-01-05T10:00:00Z", "2026-01-05T10:20:00Z", "2026-01-05T10:40:00Z", "2026-01-06T09:00:00Z",
        ])
        #expect(try Self.fires("0 0 1 jan,JUL *", after: "2026-01-01T00:00:00Z", count: 2) == ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"])
        #expect(try Self.fires("15,45 3 * * *", after: "2026-05-01T03:20:00Z", count: 2) == ["2026-05-01T03:45:00Z", "2026-05-02T03:15:00Z"])
        // `a/n`: from a to the field's end.
        #expect(try Self.fires("50/5 0 * * *", after: "2026-05-01T00:00:00Z", count: 3) == ["2026-05-01T00:50:00Z", "2026-05-01T00:55:00Z", "2026-05-02T00:50:00Z"])
        // 7 is Sunday too; 2026-03-01 is a Sunday.
        #expect(try Self.fires("0 12 * * 7", after: "2026-02-27T00:00:00Z", count: 1) == ["2026-03-01T12:00:00Z"])
    }

    @Test func dayOfMonthOrDayOfWeek() throws {
        // Both restricted: the 13th OR a Friday (Vixie cron). 2026-02-06 and 2026-02-13 are Fridays.
        #expect(try Self.fires("0 0 13 * FRI", after: "2026-02-01T00:00:00Z", count: 4) == [
            "2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z", "2026-02-27T00:00:00Z",
        ])
        #expect(try Self.fires("0 0 13 * FRI", after: "2026-03-10T00:00:00Z", count: 2) == ["2026-03-13T00:00:00Z", "2026-03-20T00:00:00Z"])
        // Only the day of month restricted: the 31st skips short months.
        #expect(try Self.fires("0 0 31 * *", after: "2026-01-31T00:00:00Z", count: 2) == ["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"])
        // 29 February: the next leap year.
        #expect(try Self.fires("0 0 29 2 *", after: "2026-01-01T00:00:00Z", count: 1) == ["2028-02-29T00:00:00Z"])
    }

    @Test func secondsFieldAndEvery() throws {
        #expect(try Self.fires("*/5 * * * * *", after: "2026-01-01T00:00:03Z", count: 3) == ["2026-01-01T00:00:05Z", "2026-01-01T00:00:10Z", "2026-01-01T00:00:15Z"])
        #expect(try Self.fires("@every 1s", after: "2026-01-01T00:00:03Z", count: 2) == ["2026-01-01T00:00:04Z", "2026-01-01T00:00:05Z"])
        let every = try CronSchedule.parse("@every 1h30m")
        // Slots are multiples of the interval since the epoch, whenever asked.
        #expect(Self.text(every.nextFire(after: Self.date("2026-01-01T00:10:00Z"))) == "2026-01-01T01:30:00Z")
        #expect(every.nextFire(after: Date(timeIntervalSince1970: 10.5)) == Date(timeIntervalSince1970: 5400))
        #expect(try CronSchedule.parse("@every 2d").typicalInterval() == 172_800)
        // A fractional moment: the next whole-second slot after it.
        let second = try CronSchedule.parse("@every 1s")
        #expect(second.nextFire(after: Date(timeIntervalSince1970: 100.25)) == Date(timeIntervalSince1970: 101))
    }

    @Test func macros() throws {
        #expect(try Self.fires("@daily", after: "2026-06-10T05:00:00Z", count: 1) == ["2026-06-11T00:00:00Z"])
        #expect(try Self.fires("@hourly", after: "2026-06-10T05:00:00Z", count: 1) == ["2026-06-10T06:00:00Z"])
        #expect(try Self.fires("@weekly", after: "2026-06-10T05:00:00Z", count: 1) == ["2026-06-14T00:00:00Z"])
        #expect(try Self.fires("@monthly", after: "2026-06-10T05:00:00Z", count: 1) == ["2026-07-01T00:00:00Z"])
        #expect(try Self.fires("@yearly", after: "2026-06-10T05:00:00Z", count: 1) == ["2027-01-01T00:00:00Z"])
    }

    @Test func timeZoneShiftsWallClock() throws {
        // 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
        #expect(try Self.fires("30 2 * * *", zone: "Europe/Berlin", after: "2026-01-10T00:00:00Z", count: 1) == ["2026-01-10T01:30:00Z"])
        #expect(try Self.fires("30 2 * * *", zone: "Europe/Berlin", after: "2026-07-10T00:00:00Z", count: 1) == ["2026-07-10T00:30:00Z"])
        #expect(try Self.fires("0 9 * * *", zone: "America/New_York", after: "2026-01-10T00:00:00Z", count: 1) == ["2026-01-10T14:00:00Z"])
        #expect(try Self.fires("0 9 * * *", zone: "Asia/Kolkata", after: "2026-01-10T00:00:00Z", count: 1) == ["2026-01-10T03:30:00Z"])
    }

    /// Berlin, 29 March 2026: at 02:00 CET (01:00 UTC) the clock jumps to 03:00 CEST.
    @Test func springForwardGapFiresOnceAtTheJump() throws {
        // 02:30 does not exist that day: it fires at the jump, then at 02:30 CEST the next day.
        #expect(try Self.fires("30 2 * * *", zone: "Europe/Berlin", after: "2026-03-28T12:00:00Z", count: 3) == [
            "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z",
        ])
        // Every 30 minutes: 01:30 CET, then 02:00 and 02:30 (skipped) and 03:00 CEST all fall on
        // the jump and fire once, then 03:30 CEST.
        #expect(try Self.fires("*/30 * * * *", zone: "Europe/Berlin", after: "2026-03-29T00:15:00Z", count: 3) == [
            "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z",
        ])
        // A time before the gap is untouched.
        #expect(try Self.fires("30 1 * * *", zone: "Europe/Berlin", after: "2026-03-28T12:00:00Z", count: 2) == [
            "2026-03-29T00:30:00Z", "2026-03-29T23:30:00Z",
        ])
    }

    /// Berlin, 25 October 2026: at 03:00 CEST (01:00 UTC) the clock goes back to 02:00 CET, so
    /// 02:00-02:59 happens twice.
    @Test func fallBackOverlap() throws {
        // A fixed time fires at its first occurrence only.
        #expect(try Self.fires("30 2 * * *", zone: "Europe/Berlin", after: "2026-10-24T12:00:00Z", count: 2) == [
            "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z",
        ])
        // Hour `*`: the repeated hour fires again, keeping the 30-minute rhythm in real time.
        #expect(try Self.fires("*/30 * * * *", zone: "Europe/Berlin", after: "2026-10-24T23:45:00Z", count: 6) == [
            "2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z", "2026-10-25T02:30:00Z",
        ])
        // Asked during the second pass of 02:xx, a fixed 02:45 job waits for the next day.
        #expect(try Self.fires("45 2 * * *", zone: "Europe/Berlin", after: "2026-10-25T01:10:00Z", count: 1) == ["2026-10-26T01:45:00Z"])
    }

    @Test func wallTimeResolution() throws {
        let berlin = try CronSchedule.parse("* * * * *", zone: "Europe/Berlin")
        func wall(_ text: String) -> Int64 { Int64(Self.date(text).timeIntervalSince1970) }
        #expect(berlin.resolve(wall: wall("2026-03-29T02:30:00Z")) == .skipped(wall("2026-03-29T01:00:00Z")))
        #expect(berlin.resolve(wall: wall("2026-10-25T02:30:00Z")) == .repeated(wall("2026-10-25T00:30:00Z"), wall("2026-10-25T01:30:00Z")))
        #expect(berlin.resolve(wall: wall("2026-06-01T12:00:00Z")) == .unique(wall("2026-06-01T10:00:00Z")))
    }

    /// Away from daylight-saving changes, the calculator agrees with a minute-by-minute walk
    /// through Foundation's Calendar for a range of expressions.
    @Test(arguments: ["*/7 * * * *", "0 */5 * * *", "10-20/3 4,16 * * *", "0 0 * * MON-WED", "5 6 1-7 * SUN", "0 12 15 * *", "0 0 1 */2 *"])
    func agreesWithCalendarWalk(expression: String) throws {
        for zone in ["UTC", "Asia/Tokyo", "America/Sao_Paulo"] {
            let schedule = try CronSchedule.parse(expression, zone: zone)
            guard case .fields(let fields) = schedule.form else { Issue.record("not fields"); return }
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: zone)!
            // Sao Paulo has had no DST since 2019; Tokyo none at all.
            let start = Self.date("2026-04-01T00:00:00Z")
            var expected: [Date] = []
            var t = start.addingTimeInterval(60)
            while expected.count < 12 && t < start.addingTimeInterval(120 * 86_400) {
                let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
                if fields.matchesDay(year: c.year!, month: c.month!, day: c.day!, weekday: c.weekday! - 1)
                    && fields.hours.contains(c.hour!) && fields.minutes.contains(c.minute!) {
                    expected.append(t)
                }
                t = t.addingTimeInterval(60)
            }
            var actual: [Date] = []
            var cursor = start
            for _ in 0..<expected.count {
                guard let next = schedule.nextFire(after: cursor) else { break }
                actual.append(next)
                cursor = next
            }
            #expect(actual == expected, "\(expression) in \(zone)")
            #expect(expected.count > 1, "the walk found fires for \(expression)")
        }
    }

    @Test func typicalInterval() throws {
        #expect(try CronSchedule.parse("0 */6 * * *").typicalInterval(from: Self.date("2026-01-01T00:00:00Z")) == 6 * 3600)
        #expect(try CronSchedule.parse("30 2 * * *").typicalInterval(from: Self.date("2026-01-01T00:00:00Z")) == 86_400)
    }

    @Test(arguments: [
        ("", "empty"), ("* * * *", "has 4 fields"), ("61 * * * *", "out of range in the minute field"),
        ("* 24 * * *", "hour field"), ("* * 0 * *", "day-of-month field"), ("* * * 13 *", "month field"),
        ("* * * * 8", "day-of-week field"), ("* * * FOO *", "\"FOO\" is not valid in the month field"),
        ("5-1 * * * *", "runs backwards"), ("*/0 * * * *", "positive whole number"), ("1,,2 * * * *", "empty list item"),
        ("@every 0s", "@every"), ("@every 5x", "@every"), ("@every", "@every"), ("@fortnightly", "Unknown schedule macro"),
        ("0 0 30 2 *", "never fires"), ("0 0 31 4,6 *", "never fires"), ("1/2/3 * * * *", "more than one step"),
    ])
    func refusesBadExpressions(expression: String, fragment: String) {
        do {
            _ = try CronSchedule.parse(expression)
            Issue.record("\"\(expression)\" was accepted")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func refusesUnknownTimeZone() {
        #expect(throws: CronSchedule.ParseError.self) { try CronSchedule.parse("@daily", zone: "Mars/Olympus") }
    }

    @Test func civilDateRoundTrips() {
        for days in stride(from: Int64(-800_000), through: 800_000, by: 997) {
            #expect(CivilDate(days: days).days == days)
        }
        #expect(CivilDate(year: 2026, month: 11, day: 27).days == 20_784)
        #expect(CivilDate.weekday(days: CivilDate(year: 2026, month: 11, day: 27).days) == 5)  // a Friday
    }
}

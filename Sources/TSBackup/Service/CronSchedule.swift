import Foundation

/// A cron schedule: when a backup or a rehearsal is due, in a time zone.
///
/// Accepted forms:
/// - five fields, `minute hour day-of-month month day-of-week` (`30 2 * * *`);
/// - six fields with seconds first, `second minute hour day-of-month month day-of-week`
///   (`*/5 * * * * *`: every five seconds, for tests and demos);
/// - macros `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
/// - `@every DURATION` (`@every 1s`, `@every 90m`, `@every 1h30m`): a fixed interval counted from
///   the Unix epoch, so the slots are the same whenever the service starts and a missed slot
///   is recognised after a restart.
///
/// Each field takes `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a
/// comma-separated list of these. Months take `JAN`..`DEC`, days of the week `SUN`..`SAT`
/// (0 or 7 is Sunday), case-insensitive. As in Vixie cron, when both day-of-month and
/// day-of-week are restricted a day matches if either does.
///
/// Wall-clock times are read in the schedule's time zone. Around daylight-saving changes:
/// - a time that does not exist (the clock jumps from 02:00 to 03:00 in Europe/Berlin in March)
///   fires once at the moment of the jump, so a daily 02:30 job still runs that day;
/// - a time that occurs twice (02:00-03:00 repeats in October) fires at its first occurrence
///   only, unless the hour field is `*`, in which case the repeated hour fires again: "every 15
///   minutes" keeps its rhythm, "daily at 02:30" runs once.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    /// The expression as written (trimmed).
    public let expression: String
    public let timeZone: TimeZone
    let form: Form

    enum Form: Sendable, Equatable {
        case fields(Fields)
        /// A fixed interval in seconds, slots at multiples of it since the epoch.
        case every(Int64)
    }

    /// The matching values of each field.
    struct Fields: Sendable, Equatable {
        var seconds: Set<Int>
        var minutes: Set<Int>
        var hours: Set<Int>
        var daysOfMonth: Set<Int>
        var months: Set<Int>
        /// 0 = Sunday ... 6 = Saturday.
        var daysOfWeek: Set<Int>
        var dayOfMonthRestricted: Bool
        var dayOfWeekRestricted: Bool
        /// The hour field is `*`: a repeated hour (DST overlap) fires again.
        var everyHour: Bool

        func matchesDay(year: Int, month: Int, day: Int, weekday: Int) -> Bool {
            guard months.contains(month), day <= CivilDate.daysIn(month: month, year: year) else { return false }
            switch (dayOfMonthRestricted, dayOfWeekRestricted) {
            case (true, true): return daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
            case (true, false): return daysOfMonth.contains(day)
            case (false, true): return daysOfWeek.contains(weekday)
            case (false, false): return true
            }
        }
    }

    /// Why an expression was refused; the message names the field and says what is allowed.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public var description: String { "\(expression) (\(timeZone.identifier))" }

    /// Parses `expression`, read in `timeZone`.
    public static func parse(_ expression: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!) throws(ParseError) -> CronSchedule {
        let text = expression.trimmingCharacters(in: .whitespacesAndNewlines)
        return CronSchedule(expression: text, timeZone: timeZone, form: try parseForm(text))
    }

    /// Parses `expression` in the time zone named `zone` (an IANA name such as `Europe/Berlin`).
    public static func parse(_ expression: String, zone: String) throws(ParseError) -> CronSchedule {
        guard let timeZone = TimeZone(identifier: zone) else {
            throw ParseError(message: "Unknown time zone \"\(zone)\". Give an IANA name such as UTC, Europe/Berlin or America/New_York.")
        }
        return try parse(expression, timeZone: timeZone)
    }

    /// The first moment strictly after `date` at which the schedule fires; nil if it never does
    /// within the next ten years (e.g. `0 0 30 2 *`, which parsing already refuses).
    public func nextFire(after date: Date) -> Date? {
        switch form {
        case .every(let interval):
            let t = Int64(floor(date.timeIntervalSince1970))
            return Date(timeIntervalSince1970: Double((t.floorDiv(interval) + 1) * interval))
        case .fields(let fields):
            return nextFire(fields, after: date)
        }
    }

    /// A rough period: the shortest gap between the next few fires. The dashboard colours the age
    /// of the last good backup against it.
    public func typicalInterval(from date: Date = Date()) -> TimeInterval? {
        if case .every(let interval) = form { return TimeInterval(interval) }
        var fires: [Date] = []
        var cursor = date
        for _ in 0..<4 {
            guard let next = nextFire(after: cursor) else { break }
            fires.append(next)
            cursor = next
        }
        guard fires.count >= 2 else { return nil }
        return zip(fires.dropFirst(), fires).map { $0.timeIntervalSince($1) }.max()
    }

    // MARK: Next fire for field schedules

    private func nextFire(_ fields: Fields, after date: Date) -> Date? {
        let t = Int64(floor(date.timeIntervalSince1970))
        // A wall time N (seconds since the epoch, read as if UTC) happens at N - offset. Start at
        // the earliest wall time whose instant can follow t, under any offset seen around t.
        let around = offsets(near: t)
        var naive = t + (around.min() ?? 0) + 1
        var best: Int64?
        let horizon = naive + 10 * 366 * 86_400
        while naive <= horizon {
            guard let wall = Self.nextMatch(fields, atOrAfter: naive, limit: horizon) else { break }
            for instant in fires(ofWall: wall, fields: fields) where instant > t {
                if best == nil || instant < best! { best = instant }
            }
            if let best {
                // Later wall times map to later instants, except across an offset change: keep
                // looking while a wall time could still land before `best`.
                let maxOffset = offsets(near: best).max() ?? 0
                if wall + 1 - maxOffset > best { break }
            }
            naive = wall + 1
        }
        return best.map { Date(timeIntervalSince1970: Double($0)) }
    }

    /// The UTC offsets in use a day either side of `t` (one value, or two across a change).
    private func offsets(near t: Int64) -> [Int64] {
        [t - 86_400, t, t + 86_400].map { Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double($0)))) }
    }

    /// The instants at which the wall time `wall` fires: one normally; the end of the gap when the
    /// wall time is skipped; the first (and, for hour `*`, also the second) when it repeats.
    func fires(ofWall wall: Int64, fields: Fields) -> [Int64] {
        switch resolve(wall: wall) {
        case .unique(let instant): return [instant]
        case .skipped(let gapEnd): return [gapEnd]
        case .repeated(let first, let second): return fields.everyHour ? [first, second] : [first]
        }
    }

    enum WallTime: Equatable {
        case unique(Int64)
        /// Inside a forward jump; the instant the jump happens.
        case skipped(Int64)
        case repeated(Int64, Int64)
    }

    /// Which instants show the wall-clock time `wall` in this time zone.
    func resolve(wall: Int64) -> WallTime {
        let candidates = Set(offsets(near: wall)).sorted()
        let valid = candidates.map { wall - $0 }
            .filter { Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double($0)))) == wall - $0 }
        let instants = Set(valid).sorted()
        if instants.count >= 2 { return .repeated(instants[0], instants[instants.count - 1]) }
        if let only = instants.first { return .unique(only) }
        // Skipped: between wall - maxOffset (still the old offset) and wall - minOffset (already the
        // new one) the clock jumps; find the first second of the new offset.
        guard let low = candidates.first, let high = candidates.last else { return .skipped(wall) }
        var before = wall - high
        var after = wall - low
        let newOffset = Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(after))))
        while after - before > 1 {
            let middle = before + (after - before) / 2
            if Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(middle)))) == newOffset {
                after = middle
            } else {
                before = middle
            }
        }
        return .skipped(after)
    }

    /// The first wall time at or after `start` (seconds, read as UTC) that the fields match.
    static func nextMatch(_ fields: Fields, atOrAfter start: Int64, limit: Int64) -> Int64? {
        var t = start
        while t <= limit {
            let days = t.floorDiv(86_400)
            let date = CivilDate(days: days)
            let secondOfDay = Int(t - days * 86_400)
            if !fields.months.contains(date.month) {
                // The first day of the next month.
                let next = date.month == 12 ? CivilDate(year: date.year + 1, month: 1, day: 1) : CivilDate(year: date.year, month: date.month + 1, day: 1)
                t = next.days * 86_400
                continue
            }
            if !fields.matchesDay(year: date.year, month: date.month, day: date.day, weekday: CivilDate.weekday(days: days)) {
                t = (days + 1) * 86_400
                continue
            }
            let hour = secondOfDay / 3600, minute = secondOfDay / 60 % 60, second = secondOfDay % 60
            guard let h = fields.hours.filter({ $0 >= hour }).min() else {
                t = (days + 1) * 86_400
                continue
            }
            if h > hour {
                t = days * 86_400 + Int64(h * 3600)
                continue
            }
            guard let m = fields.minutes.filter({ $0 >= minute }).min() else {
                t = days * 86_400 + Int64((hour + 1) * 3600)
                continue
            }
            if m > minute {
                t = days * 86_400 + Int64(hour * 3600 + m * 60)
                continue
            }
            guard let s = fields.seconds.filter({ $0 >= second }).min() else {
                t = days * 86_400 + Int64(hour * 3600 + (minute + 1) * 60)
                continue
            }
            return days * 86_400 + Int64(hour * 3600 + minute * 60 + s)
        }
        return nil
    }

    // MARK: Parsing

    static func parseForm(_ text: String) throws(ParseError) -> Form {
        guard !text.isEmpty else {
            throw ParseError(message: "The schedule is empty. Give a cron expression such as \"30 2 * * *\" (daily at 02:30), \"@daily\" or \"@every 1h\".")
        }
        if text.hasPrefix("@") {
            let parts = text.split(whereSeparator: \.isWhitespace).map(String.init)
            let macro = parts[0].lowercased()
            if macro == "@every" {
                guard parts.count == 2, let seconds = parseDuration(parts[1]), seconds > 0 else {
                    throw ParseError(message: "\"\(text)\" is not a valid @every schedule. Give a positive duration of whole seconds such as \"@every 30s\", \"@every 15m\" or \"@every 1h30m\" (units d, h, m, s).")
                }
                return .every(seconds)
            }
            let expansions = ["@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                              "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"]
            guard parts.count == 1, let expanded = expansions[macro] else {
                throw ParseError(message: "Unknown schedule macro \"\(text)\". Use @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION, or five cron fields.")
            }
            return try parseForm(expanded)
        }
        var parts = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard parts.count == 5 || parts.count == 6 else {
            throw ParseError(message: "\"\(text)\" has \(parts.count) field\(parts.count == 1 ? "" : "s"); a cron expression has five (minute hour day-of-month month day-of-week) or six with seconds first.")
        }
        if parts.count == 5 { parts.insert("0", at: 0) }
        let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
        let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
        let seconds = try parseField(parts[0], name: "second", range: 0...59)
        let minutes = try parseField(parts[1], name: "minute", range: 0...59)
        let hours = try parseField(parts[2], name: "hour", range: 0...23)
        let daysOfMonth = try parseField(parts[3], name: "day-of-month", range: 1...31)
        let months = try parseField(parts[4], name: "month", range: 1...12, names: monthNames, nameBase: 1)
        var daysOfWeek = try parseField(parts[5], name: "day-of-week", range: 0...7, names: dayNames, nameBase: 0)
        if daysOfWeek.remove(7) != nil { daysOfWeek.insert(0) }
        let fields = Fields(seconds: seconds, minutes: minutes, hours: hours, daysOfMonth: daysOfMonth, months: months, daysOfWeek: daysOfWeek,
                            dayOfMonthRestricted: !isWildcard(parts[3]), dayOfWeekRestricted: !isWildcard(parts[5]),
                            everyHour: parts[2] == "*" || parts[2] == "*/1")
        // A day-of-month that no chosen month has (30 February) would never fire.
        if fields.dayOfMonthRestricted && !fields.dayOfWeekRestricted {
            let possible = months.contains { month in daysOfMonth.contains { $0 <= CivilDate.daysIn(month: month, year: 2024) } }
            guard possible else {
                throw ParseError(message: "\"\(text)\" never fires: none of its months has any of its days of the month. Check the day-of-month and month fields.")
            }
        }
        return .fields(fields)
    }

    private static func isWildcard(_ field: String) -> Bool { field == "*" || field == "?" }

    /// One field: `*`, `?`, numbers, names, ranges, steps and lists.
    static func parseField(_ text: String, name: String, range: ClosedRange<Int>, names: [String] = [], nameBase: Int = 0) throws(ParseError) -> Set<Int> {
        func value(_ token: Substring) throws(ParseError) -> Int {
            if let number = Int(token) {
                guard range.contains(number) else {
                    throw ParseError(message: "\(number) is out of range in the \(name) field (\(range.lowerBound)-\(range.upperBound)).")
                }
                return number
            }
            if let index = names.firstIndex(of: token.uppercased()) { return index + nameBase }
            let allowed = names.isEmpty ? "numbers \(range.lowerBound)-\(range.upperBound)" : "numbers \(range.lowerBound)-\(range.upperBound) or names \(names.first!)-\(names.last!)"
            throw ParseError(message: "\"\(token)\" is not valid in the \(name) field; it takes \(allowed), *, ranges a-b, steps */n and lists.")
        }
        var result = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else {
                throw ParseError(message: "The \(name) field \"\(text)\" has an empty list item.")
            }
            let stepParts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard stepParts.count <= 2 else {
                throw ParseError(message: "\"\(item)\" in the \(name) field has more than one step (/).")
            }
            var step = 1
            if stepParts.count == 2 {
                guard let n = Int(stepParts[1]), n > 0 else {
                    throw ParseError(message: "The step in \"\(item)\" (\(name) field) must be a positive whole number.")
                }
                step = n
            }
            let base = stepParts[0]
            let low: Int, high: Int
            if base == "*" || base == "?" {
                (low, high) = (range.lowerBound, name == "day-of-week" ? 6 : range.upperBound)
            } else if let dash = base.firstIndex(of: "-") {
                low = try value(base[..<dash])
                high = try value(base[base.index(after: dash)...])
                guard low <= high else {
                    throw ParseError(message: "The range \"\(base)\" in the \(name) field runs backwards; write the smaller value first.")
                }
            } else {
                low = try value(base)
                // `a/n` means from a to the field's end in steps of n.
                high = stepParts.count == 2 ? (name == "day-of-week" ? 6 : range.upperBound) : low
            }
            result.formUnion(stride(from: low, through: high, by: step))
        }
        return result
    }

    /// `1s`, `90m`, `1h30m`, `2d`: whole seconds; nil when malformed.
    static func parseDuration(_ text: String) -> Int64? {
        var total: Int64 = 0
        var number: Int64?
        var sawUnit = false
        for character in text.lowercased() {
            if let digit = character.wholeNumberValue, character.isASCII {
                number = (number ?? 0) * 10 + Int64(digit)
                guard number! < 1_000_000_000 else { return nil }
                continue
            }
            let unit: Int64
            switch character {
            case "d": unit = 86_400
            case "h": unit = 3_600
            case "m": unit = 60
            case "s": unit = 1
            default: return nil
            }
            guard let n = number else { return nil }
            total += n * unit
            number = nil
            sawUnit = true
        }
        guard number == nil, sawUnit else { return nil }
        return total
    }
}

/// A proleptic Gregorian date from days since 1970-01-01 and back (H. Hinnant's algorithm),
/// so wall-clock arithmetic needs no Calendar and no time zone.
struct CivilDate: Equatable {
    var year: Int
    var month: Int
    var day: Int

    init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    init(days: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        self.init(year: Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), month: Int(m), day: Int(d))
    }

    var days: Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// 0 = Sunday.
    static func weekday(days: Int64) -> Int { Int((days + 4).floorMod(7)) }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

extension Int64 {
    func floorDiv(_ d: Int64) -> Int64 {
        let q = self / d
        return (self % d != 0 && (self < 0) != (d < 0)) ? q - 1 : q
    }

    func floorMod(_ d: Int64) -> Int64 { self - floorDiv(d) * d }
}

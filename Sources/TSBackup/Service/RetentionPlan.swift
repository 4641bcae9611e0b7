import Foundation

/// How many backups of one database to keep: the newest `last`, and the newest backup of each of
/// the `daily` most recent days, `weekly` weeks and `monthly` months that have one
/// (grandfather-father-son). Days, weeks (ISO: Monday to Sunday) and months are read in `timeZone`.
public struct RetentionPolicy: Sendable, Equatable, Codable {
    public var last: Int
    public var daily: Int
    public var weekly: Int
    public var monthly: Int
    /// An IANA time zone name; buckets are calendar days, weeks and months there.
    public var timeZone: String

    public init(last: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0, timeZone: String = "UTC") {
        self.last = last
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
        self.timeZone = timeZone
    }

    enum CodingKeys: String, CodingKey {
        case last, daily, weekly, monthly
        case timeZone = "time_zone"
    }

    /// A one-line summary, e.g. "last 3, daily 7, weekly 4, monthly 6 (Europe/Berlin)".
    public var summary: String {
        "last \(last), daily \(daily), weekly \(weekly), monthly \(monthly) (\(timeZone))"
    }

    /// Refuses negative counts and unknown time zones, with what to write instead.
    public func validate() throws(TSBackupError) {
        for (name, value) in [("last", last), ("daily", daily), ("weekly", weekly), ("monthly", monthly)] where value < 0 {
            throw TSBackupError(.usage, "Retention \"\(name)\" is \(value); counts must be 0 or more (0 keeps none for that rule).")
        }
        guard TimeZone(identifier: timeZone) != nil else {
            throw TSBackupError(.usage, "Retention time zone \"\(timeZone)\" is unknown. Give an IANA name such as UTC or Europe/Berlin.")
        }
    }
}

/// What a retention policy does to one database's backups: which to delete, and why each other
/// one is kept. Pure: the same list, policy and in-use set always give the same plan.
///
/// Rules, in order:
/// - Only complete backups count for the rules, and only they fill buckets.
/// - The newest complete backup is always kept, whatever the policy says.
/// - A backup a running job uses (a restore, a rehearsal, a download) is kept.
/// - An incomplete entry (no manifest: a run in progress, or one that was interrupted) is never
///   deleted here: the repository's own crash recovery (`repo gc`, or the next writer taking over
///   a stale lock) removes it under the repository's lock, where it can tell the two apart.
/// - A failed entry (its data already removed, its manifest saying why) is kept while no complete
///   backup is newer, as the record of the current failure; once a newer complete backup exists it
///   is deleted (the service's job history keeps the failure).
public struct RetentionPlan: Sendable, Equatable, Codable {
    /// One backup as the planner sees it.
    public struct Backup: Sendable, Equatable {
        public var id: String
        /// When it was taken (the manifest's start, i.e. its snapshot); nil for an incomplete entry.
        public var takenAt: Date?
        public var state: RepositoryEntry.State

        public init(id: String, takenAt: Date?, state: RepositoryEntry.State) {
            self.id = id
            self.takenAt = takenAt
            self.state = state
        }
    }

    public struct Decision: Sendable, Equatable, Codable {
        public enum Action: String, Sendable, Codable { case keep, delete }
        public var id: String
        public var takenAt: Date?
        public var state: String
        public var action: Action
        /// Every rule that keeps it, or why it goes.
        public var reasons: [String]

        enum CodingKeys: String, CodingKey {
            case id
            case takenAt = "taken_at"
            case state, action, reasons
        }
    }

    public var policy: RetentionPolicy
    /// Oldest first, as the repository lists them.
    public var decisions: [Decision]

    public var deletions: [Decision] { decisions.filter { $0.action == .delete } }
    public var kept: [Decision] { decisions.filter { $0.action == .keep } }

    /// Plans `policy` over `backups`; `inUse` are ids a running job reads.
    public static func make(_ backups: [Backup], policy: RetentionPolicy, inUse: Set<String> = []) -> RetentionPlan {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = TimeZone(identifier: policy.timeZone) ?? TimeZone(identifier: "UTC")!
        // Newest first; ids sort by time and break ties between equal timestamps.
        let complete = backups.filter { $0.state == .complete && $0.takenAt != nil }
            .sorted { ($0.takenAt!, $0.id) > ($1.takenAt!, $1.id) }
        var reasons: [String: [String]] = [:]

        if let newest = complete.first {
            reasons[newest.id, default: []].append("newest complete backup")
        }
        for (index, backup) in complete.prefix(policy.last).enumerated() {
            reasons[backup.id, default: []].append("last \(policy.last) (#\(index + 1))")
        }
        // In each bucket the newest backup represents it; the `count` most recent buckets keep theirs.
        func keepBuckets(_ count: Int, rule: String, key: (Date) -> String) {
            guard count > 0 else { return }
            var seen = Set<String>()
            for backup in complete {
                let bucket = key(backup.takenAt!)
                guard !seen.contains(bucket) else { continue }
                seen.insert(bucket)
                reasons[backup.id, default: []].append("\(rule) \(bucket)")
                if seen.count == count { break }
            }
        }
        keepBuckets(policy.daily, rule: "daily") { date in
            let c = calendar.dateComponents([.year, .month, .day], from: date)
            return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
        }
        keepBuckets(policy.weekly, rule: "weekly") { date in
            let c = calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: date)
            return String(format: "%04d-W%02d", c.yearForWeekOfYear!, c.weekOfYear!)
        }
        keepBuckets(policy.monthly, rule: "monthly") { date in
            let c = calendar.dateComponents([.year, .month], from: date)
            return String(format: "%04d-%02d", c.year!, c.month!)
        }

        let newestComplete = complete.first
        let decisions = backups.map { backup -> Decision in
            var why = reasons[backup.id] ?? []
            if inUse.contains(backup.id) { why.append("in use by a running job") }
            var action = Decision.Action.keep
            switch backup.state {
            case .complete:
                if why.isEmpty {
                    action = .delete
                    why = ["not selected by the policy (\(policy.summary))"]
                }
            case .incomplete:
                why.append("incomplete (a run in progress or interrupted): removed by the repository's gc under its lock, not by retention")
            case .failed:
                if let newer = newestComplete, let taken = backup.takenAt, (taken, backup.id) < (newer.takenAt!, newer.id), !inUse.contains(backup.id) {
                    action = .delete
                    why = ["failed run, superseded by the newer complete backup \(newer.id)"]
                } else if !inUse.contains(backup.id) {
                    why.append("failed run with no newer complete backup: kept as the record of the failure")
                }
            }
            return Decision(id: backup.id, takenAt: backup.takenAt, state: backup.state.rawValue, action: action, reasons: why)
        }
        return RetentionPlan(policy: policy, decisions: decisions)
    }

    /// The planner's view of repository entries (database backups only; exports are not subject
    /// to a database's retention).
    public static func backups(from entries: [RepositoryEntry]) -> [Backup] {
        entries.filter { $0.hypertable == nil }.map { entry in
            Backup(id: entry.id, takenAt: entry.manifest?.startedAt, state: entry.problem == nil ? entry.state : .incomplete)
        }
    }
}

/// Applies a retention policy to one database's backups through the repository.
public enum Retention {
    /// What applying a policy did: the plan, and per deletion whether it succeeded.
    public struct Outcome: Sendable, Codable, Equatable {
        public var plan: RetentionPlan
        public var deleted: [String]
        /// Deletions that failed: id and the error (the entry stays; the next run tries again).
        public var failures: [String: String]
        /// Deletions skipped because a reader took the backup after the plan was made (a
        /// download that started meanwhile); the next run decides again.
        public var keptInUse: [String] = []
    }

    /// Plans and, unless `dryRun`, deletes under the repository's lock. The plan is made from the
    /// listing taken inside the lock, so it never acts on a stale list; `inUse` is asked for
    /// inside the lock too. `onDelete` is called after each deletion (the service audits it).
    public static func apply(policy: RetentionPolicy, repository access: RepositoryAccess, dryRun: Bool,
                             belongs: @escaping @Sendable (BackupManifest) -> Bool,
                             inUse: @escaping @Sendable () async -> Set<String>,
                             claim: @escaping @Sendable (String) async -> Bool = { _ in true },
                             release: @escaping @Sendable (String) async -> Void = { _ in },
                             onDelete: @escaping @Sendable (RetentionPlan.Decision) async -> Void = { _ in }) async throws -> Outcome {
        try policy.validate()
        return try await access.with(create: false) { repository in
            func plan() async throws -> RetentionPlan {
                // Only this database's backups; incomplete entries cannot be attributed and are
                // never deleted by retention anyway.
                let mine = try await repository.entries().filter { $0.manifest.map(belongs) == true }
                return RetentionPlan.make(RetentionPlan.backups(from: mine), policy: policy, inUse: await inUse())
            }
            if dryRun {
                return Outcome(plan: try await plan(), deleted: [], failures: [:])
            }
            return try await repository.withLock(command: "retention") { _ in
                let plan = try await plan()
                let entries = Dictionary(try await repository.entries().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
                var deleted: [String] = []
                var failures: [String: String] = [:]
                var keptInUse: [String] = []
                for decision in plan.deletions {
                    guard let entry = entries[decision.id] else { continue }
                    // The plan's view of readers may be old by now: each deletion is claimed
                    // against them, and a reader that came meanwhile keeps the backup.
                    guard await claim(decision.id) else {
                        keptInUse.append(decision.id)
                        continue
                    }
                    do {
                        try await repository.deleteEntry(entry)
                        deleted.append(decision.id)
                        await onDelete(decision)
                    } catch {
                        failures[decision.id] = (error as? TSBackupError)?.message ?? "\(error)"
                    }
                    await release(decision.id)
                }
                return Outcome(plan: plan, deleted: deleted, failures: failures, keptInUse: keptInUse)
            }
        }
    }
}

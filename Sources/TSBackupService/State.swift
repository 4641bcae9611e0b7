import Foundation
import GRDB

/// The service's own state in SQLite (through GRDB): jobs, restore requests, schedules' last runs
/// and paused state, and the audit log. The repository stays the source of truth for backups:
/// nothing here says a backup exists.
///
/// Calls are synchronous and short (SQLite on local disk); GRDB's queue serializes them, so this
/// type holds no mutable state of its own and is safely shared.
public final class StateStore: Sendable {
    let queue: DatabaseQueue

    /// Opens (creating if needed) the state file and brings its schema up to date.
    public init(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        queue = try DatabaseQueue(path: path, configuration: configuration)
        try Self.migrator.migrate(queue)
    }

    /// An in-memory store, for tests.
    public init() throws {
        queue = try DatabaseQueue()
        try Self.migrator.migrate(queue)
    }

    /// Schema versions, applied in order; never edit a shipped migration, add a new one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE jobs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    database TEXT NOT NULL,
                    state TEXT NOT NULL,
                    parameters TEXT NOT NULL DEFAULT '{}',
                    progress TEXT,
                    report TEXT,
                    error TEXT,
                    entry_id TEXT,
                    requested_by TEXT NOT NULL,
                    created_at DOUBLE NOT NULL,
                    started_at DOUBLE,
                    finished_at DOUBLE
                );
                CREATE INDEX jobs_state ON jobs(state);
                CREATE INDEX jobs_database ON jobs(database, id);
                CREATE TABLE restore_requests (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    database TEXT NOT NULL,
                    backup_id TEXT NOT NULL,
                    into_database TEXT,
                    promote_to TEXT,
                    state TEXT NOT NULL,
                    requested_by TEXT NOT NULL,
                    requested_at DOUBLE NOT NULL,
                    decided_by TEXT,
                    decided_at DOUBLE,
                    job_id INTEGER REFERENCES jobs(id)
                );
                CREATE TABLE schedules (
                    database TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    paused INTEGER NOT NULL DEFAULT 0,
                    last_run_at DOUBLE,
                    last_job_id INTEGER,
                    PRIMARY KEY (database, kind)
                );
                CREATE TABLE audit_log (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at DOUBLE NOT NULL,
                    actor TEXT NOT NULL,
                    role TEXT,
                    action TEXT NOT NULL,
                    target TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    status INTEGER,
                    detail TEXT
                );
                """)
        }
        return migrator
    }
}

// MARK: Jobs

/// Where a job is in its life.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, running, finished, failed
    /// It was running when the service stopped (or died); it will not be resumed.
    case interrupted
}

/// One job as stored.
public struct JobRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var kind: String
    public var database: String
    public var state: JobState
    /// What the job was asked to do (JSON object text, e.g. {"label": "x"}).
    public var parameters: String
    /// The latest progress (JSON object text), while running.
    public var progress: String?
    /// The use case's report or manifest summary (JSON text), when it ended.
    public var report: String?
    public var error: String?
    /// The repository entry the job wrote or used.
    public var entryID: String?
    public var requestedBy: String
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?

    init(row: Row) {
        id = row["id"]
        kind = row["kind"]
        database = row["database"]
        state = JobState(rawValue: row["state"]) ?? .failed
        parameters = row["parameters"]
        progress = row["progress"]
        report = row["report"]
        error = row["error"]
        entryID = row["entry_id"]
        requestedBy = row["requested_by"]
        createdAt = Date(timeIntervalSince1970: row["created_at"])
        startedAt = (row["started_at"] as Double?).map(Date.init(timeIntervalSince1970:))
        finishedAt = (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:))
    }
}

extension StateStore {
    /// Inserts a queued job.
    public func insertJob(kind: String, database: String, parameters: String, requestedBy: String, now: Date = Date()) throws -> JobRecord {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO jobs (kind, database, state, parameters, requested_by, created_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                           arguments: [kind, database, parameters, requestedBy, now.timeIntervalSince1970])
            let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [db.lastInsertedRowID])!
            return JobRecord(row: row)
        }
    }

    public func job(_ id: Int64) throws -> JobRecord? {
        try queue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]).map(JobRecord.init(row:)) }
    }

    /// Jobs, newest first, optionally of some databases and in one state.
    public func jobs(databases: [String]? = nil, state: JobState? = nil, kind: String? = nil, limit: Int = 100, offset: Int = 0) throws -> [JobRecord] {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let databases {
            if databases.isEmpty { return [] }
            conditions.append("database IN (\(databases.map { _ in "?" }.joined(separator: ",")))")
            for name in databases { _ = arguments.append(contentsOf: [name]) }
        }
        if let state {
            conditions.append("state = ?")
            _ = arguments.append(contentsOf: [state.rawValue])
        }
        if let kind {
            conditions.append("kind = ?")
            _ = arguments.append(contentsOf: [kind])
        }
        _ = arguments.append(contentsOf: [limit, offset])
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT * FROM jobs \(whereClause) ORDER BY id DESC LIMIT ? OFFSET ?"
        return try queue.read { db in try Row.fetchAll(db, sql: sql, arguments: arguments).map(JobRecord.init(row:)) }
    }

    /// Queued and running jobs, oldest first.
    public func activeJobs() throws -> [JobRecord] {
        try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY id").map(JobRecord.init(row:))
        }
    }

    public func markJobRunning(_ id: Int64, now: Date = Date()) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE jobs SET state = 'running', started_at = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
        }
    }

    public func updateJobProgress(_ id: Int64, progress: String) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'", arguments: [progress, id])
        }
    }

    /// Stores a running job's report before the job ends (a restore's, before its database's
    /// marker is removed): a job interrupted after this still names what it made.
    public func recordJobReport(_ id: Int64, report: String) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE jobs SET report = ? WHERE id = ? AND state = 'running'", arguments: [report, id])
        }
    }

    /// Records how a job ended.
    public func finishJob(_ id: Int64, state: JobState, report: String?, error: String?, entryID: String?, now: Date = Date()) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE jobs SET state = ?, report = COALESCE(?, report), error = ?, entry_id = COALESCE(?, entry_id), finished_at = ? WHERE id = ?",
                           arguments: [state.rawValue, report, error, entryID, now.timeIntervalSince1970, id])
        }
    }

    /// Marks every job left `running` by a previous process as interrupted; returns them.
    public func interruptRunningJobs(reason: String, now: Date = Date()) throws -> [JobRecord] {
        try queue.write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state = 'running'").map(JobRecord.init(row:))
            try db.execute(sql: "UPDATE jobs SET state = 'interrupted', error = ?, finished_at = ? WHERE state = 'running'",
                           arguments: [reason, now.timeIntervalSince1970])
            return rows
        }
    }
}

// MARK: Restore requests

public enum RestoreRequestState: String, Sendable, Codable, CaseIterable {
    /// Waiting for an operator.
    case pending
    /// Approved: its restore job is queued, running or done (see the job).
    case approved
    case rejected
}

/// A request to restore a backup into a new database, which an operator approves.
public struct RestoreRequestRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var database: String
    public var backupID: String
    public var into: String?
    public var promoteTo: String?
    public var state: RestoreRequestState
    public var requestedBy: String
    public var requestedAt: Date
    public var decidedBy: String?
    public var decidedAt: Date?
    public var jobID: Int64?

    init(row: Row) {
        id = row["id"]
        database = row["database"]
        backupID = row["backup_id"]
        into = row["into_database"]
        promoteTo = row["promote_to"]
        state = RestoreRequestState(rawValue: row["state"]) ?? .rejected
        requestedBy = row["requested_by"]
        requestedAt = Date(timeIntervalSince1970: row["requested_at"])
        decidedBy = row["decided_by"]
        decidedAt = (row["decided_at"] as Double?).map(Date.init(timeIntervalSince1970:))
        jobID = row["job_id"]
    }
}

extension StateStore {
    public func insertRestoreRequest(database: String, backupID: String, into: String?, promoteTo: String?, requestedBy: String, now: Date = Date()) throws -> RestoreRequestRecord {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO restore_requests (database, backup_id, into_database, promote_to, state, requested_by, requested_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                           arguments: [database, backupID, into, promoteTo, requestedBy, now.timeIntervalSince1970])
            return RestoreRequestRecord(row: try Row.fetchOne(db, sql: "SELECT * FROM restore_requests WHERE id = ?", arguments: [db.lastInsertedRowID])!)
        }
    }

    public func restoreRequest(_ id: Int64) throws -> RestoreRequestRecord? {
        try queue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM restore_requests WHERE id = ?", arguments: [id]).map(RestoreRequestRecord.init(row:)) }
    }

    public func restoreRequests(databases: [String]? = nil, state: RestoreRequestState? = nil, limit: Int = 100, offset: Int = 0) throws -> [RestoreRequestRecord] {
        let all = try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM restore_requests ORDER BY id DESC").map(RestoreRequestRecord.init(row:))
        }
        let filtered = all.filter { request in
            (databases.map { $0.contains(request.database) } ?? true) && (state.map { $0 == request.state } ?? true)
        }
        return Array(filtered.dropFirst(offset).prefix(limit))
    }

    /// Records an operator's decision; false when the request was no longer pending.
    public func decideRestoreRequest(_ id: Int64, state: RestoreRequestState, by actor: String, jobID: Int64?, now: Date = Date()) throws -> Bool {
        try queue.write { db in
            try db.execute(sql: "UPDATE restore_requests SET state = ?, decided_by = ?, decided_at = ?, job_id = ? WHERE id = ? AND state = 'pending'",
                           arguments: [state.rawValue, actor, now.timeIntervalSince1970, jobID, id])
            return db.changesCount == 1
        }
    }
}

// MARK: Schedules

/// A database's schedule of one kind (e.g. "backup", "rehearsal"): paused or not, and its last run.
public struct ScheduleStateRecord: Sendable, Codable, Equatable {
    public var database: String
    public var kind: String
    public var paused: Bool
    public var lastRunAt: Date?
    public var lastJobID: Int64?
}

extension StateStore {
    public func scheduleState(database: String, kind: String) throws -> ScheduleStateRecord {
        try queue.read { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM schedules WHERE database = ? AND kind = ?", arguments: [database, kind]) {
                return ScheduleStateRecord(database: database, kind: kind, paused: row["paused"],
                                           lastRunAt: (row["last_run_at"] as Double?).map(Date.init(timeIntervalSince1970:)), lastJobID: row["last_job_id"])
            }
            return ScheduleStateRecord(database: database, kind: kind, paused: false)
        }
    }

    public func setSchedulePaused(database: String, kind: String, paused: Bool) throws {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO schedules (database, kind, paused) VALUES (?, ?, ?) ON CONFLICT(database, kind) DO UPDATE SET paused = excluded.paused",
                           arguments: [database, kind, paused])
        }
    }

    /// Records that a schedule fired (for serve-ops' scheduler: missed runs, last run shown in the API).
    public func recordScheduleRun(database: String, kind: String, at: Date, jobID: Int64?) throws {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO schedules (database, kind, last_run_at, last_job_id) VALUES (?, ?, ?, ?) ON CONFLICT(database, kind) DO UPDATE SET last_run_at = excluded.last_run_at, last_job_id = excluded.last_job_id",
                           arguments: [database, kind, at.timeIntervalSince1970, jobID])
        }
    }
}

// MARK: Audit log

/// One audited action: who, what, on what, when, and how it ended.
public struct AuditRecord: Sendable, Codable, Equatable {
    public var id: Int64
    public var at: Date
    /// The token's name (or "anonymous", "scheduler", "service").
    public var actor: String
    public var role: String?
    /// What was attempted, e.g. "POST /api/databases/{name}/backups" or "retention.delete".
    public var action: String
    /// What it was attempted on, e.g. the request path or a backup id.
    public var target: String
    /// allowed, refused, failed, ...
    public var outcome: String
    /// The HTTP status answered, for API actions.
    public var status: Int?
    public var detail: String?
}

extension StateStore {
    @discardableResult
    public func audit(actor: String, role: String?, action: String, target: String, outcome: String, status: Int? = nil, detail: String? = nil, now: Date = Date()) throws -> Int64 {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO audit_log (at, actor, role, action, target, outcome, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           arguments: [now.timeIntervalSince1970, actor, role, action, target, outcome, status, detail])
            return db.lastInsertedRowID
        }
    }

    /// Audit entries, newest first.
    public func auditLog(limit: Int = 100, offset: Int = 0, actor: String? = nil) throws -> [AuditRecord] {
        try queue.read { db in
            let sql = "SELECT * FROM audit_log \(actor == nil ? "" : "WHERE actor = ?") ORDER BY id DESC LIMIT ? OFFSET ?"
            var arguments: StatementArguments = []
            if let actor { _ = arguments.append(contentsOf: [actor]) }
            _ = arguments.append(contentsOf: [limit, offset])
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                AuditRecord(id: row["id"], at: Date(timeIntervalSince1970: row["at"]), actor: row["actor"], role: row["role"], action: row["action"],
                            target: row["target"], outcome: row["outcome"], status: row["status"], detail: row["detail"])
            }
        }
    }
}

import Foundation
import TSBackup

// The JSON shapes the API answers with (snake_case keys, ISO 8601 dates); /openapi.json
// describes each as a schema of the same name.

struct JobView: Encodable {
    var id: Int64
    var kind: String
    var database: String
    var state: String
    var parameters: JSONValue?
    var progress: JSONValue?
    var report: JSONValue?
    var error: String?
    var entry_id: String?
    var requested_by: String
    var created_at: Date
    var started_at: Date?
    var finished_at: Date?

    init(_ job: JobRecord) {
        id = job.id
        kind = job.kind
        database = job.database
        state = job.state.rawValue
        parameters = JSONValue.parse(job.parameters)
        progress = JSONValue.parse(job.progress)
        report = JSONValue.parse(job.report)
        error = job.error
        entry_id = job.entryID
        requested_by = job.requestedBy
        created_at = job.createdAt
        started_at = job.startedAt
        finished_at = job.finishedAt
    }
}

struct BackupView: Encodable {
    var id: String
    /// database, hypertable, or null for an entry without a readable manifest.
    var kind: String?
    /// complete, failed, incomplete.
    var state: String
    /// The configured database it was taken from (null when none matches).
    var database: String?
    var source_database: String?
    var started_at: Date?
    var duration_seconds: Double?
    var bytes: Int64?
    var files: Int?
    var label: String?
    var table: String?
    var error: String?
    var problem: String?

    init(_ entry: RepositoryEntry, config: ServiceConfig) {
        id = entry.id
        kind = entry.kind
        state = entry.state.rawValue
        database = config.databaseName(of: entry)
        let summary = entry.manifest?.summary ?? entry.hypertable?.summary
        source_database = summary?.database
        started_at = summary?.startedAt
        duration_seconds = summary?.durationSeconds
        bytes = summary?.bytes
        files = summary.map { _ in entry.files.count }
        label = summary?.label
        table = entry.hypertable?.table.qualifiedName
        error = entry.error
        problem = entry.problem
    }
}

struct ScheduleView: Encodable {
    var database: String
    var kind: String
    var cron: String
    var time_zone: String
    var paused: Bool
    var last_run_at: Date?
    var last_job_id: Int64?
}

struct DatabaseView: Encodable {
    struct Retention: Encodable {
        var keep_last: Int?
        var keep_daily: Int?
        var keep_weekly: Int?
        var keep_monthly: Int?
    }
    var name: String
    var host: String
    var port: Int
    var dbname: String
    var schedules: [ScheduleView]
    var retention: Retention?
    var rehearsal_target: String?
    /// The queued or running job of this database.
    var active_job: JobView?
    /// The newest complete database backup.
    var last_backup: BackupView?
    var backups: Int
}

struct RestoreRequestView: Encodable {
    var id: Int64
    var database: String
    var backup_id: String
    var into: String?
    var promote_to: String?
    var state: String
    var requested_by: String
    var requested_at: Date
    var decided_by: String?
    var decided_at: Date?
    var job: JobView?
}

struct AuditView: Encodable {
    var id: Int64
    var at: Date
    var actor: String
    var role: String?
    var action: String
    var target: String
    var outcome: String
    var status: Int?
    var detail: String?

    init(_ record: AuditRecord) {
        id = record.id
        at = record.at
        actor = record.actor
        role = record.role
        action = record.action
        target = record.target
        outcome = record.outcome
        status = record.status
        detail = record.detail
    }
}

struct StatusView: Encodable {
    var version: String
    var accepting_jobs: Bool
    var running_jobs: Int
    var queued_jobs: Int
    var repository: String
    var databases: Int
}

extension ServiceCore {
    func scheduleViews(_ db: ServiceConfig.Database) throws -> [ScheduleView] {
        var views: [ScheduleView] = []
        let kinds: [(String, ServiceConfig.Schedule?)] = [("backup", db.schedule), ("rehearsal", db.rehearsal?.schedule)]
        for (kind, schedule) in kinds {
            guard let schedule else { continue }
            let stored = try state.scheduleState(database: db.name, kind: kind)
            views.append(ScheduleView(database: db.name, kind: kind, cron: schedule.cron, time_zone: schedule.timeZone,
                                      paused: stored.paused, last_run_at: stored.lastRunAt, last_job_id: stored.lastJobID))
        }
        return views
    }

    func restoreRequestView(_ record: RestoreRequestRecord) throws -> RestoreRequestView {
        RestoreRequestView(id: record.id, database: record.database, backup_id: record.backupID, into: record.into, promote_to: record.promoteTo,
                           state: record.state.rawValue, requested_by: record.requestedBy, requested_at: record.requestedAt,
                           decided_by: record.decidedBy, decided_at: record.decidedAt,
                           job: try record.jobID.flatMap { try state.job($0) }.map(JobView.init))
    }
}

import Foundation
import Hummingbird
import TSBackup

/// GET /api/status, GET /api/databases, GET /api/databases/{name},
/// POST /api/databases/{name}/backups, POST /api/databases/{name}/exports.
struct DatabaseRoutes {
    let core: ServiceCore

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.get("status") { _, context in
            try context.require(.read)
            let active = try core.state.activeJobs()
            return try APIJSON.response(StatusView(version: TSBackupVersion.current, accepting_jobs: await core.jobs.isAccepting,
                                                   running_jobs: active.filter { $0.state == .running }.count,
                                                   queued_jobs: active.filter { $0.state == .queued }.count,
                                                   repository: core.config.repository, databases: core.config.databases.count))
        }
        api.get("databases") { _, context in
            let identity = try context.require(.read)
            let entries = try await core.entries()
            let views = try identity.visibleDatabases(in: core.config).map { try view(core.database($0), entries: entries) }
            return try APIJSON.response(views)
        }
        api.get("databases/:name") { _, context in
            let db = try core.database(try Query.parameter(context, "name"))
            try context.require(.read, database: db.name)
            return try APIJSON.response(try view(db, entries: try await core.entries()))
        }
        api.post("databases/:name/backups") { request, context in
            let db = try core.database(try Query.parameter(context, "name"))
            let identity = try context.require(.request, database: db.name)
            let body = try await APIJSON.decodeBody(BackupBody.self, from: request, context: context)
            if let label = body.label, label.count > 200 || label.contains(where: \.isNewline) {
                throw APIError.badRequest("The label must be one line of at most 200 characters.")
            }
            var parameters: [String: String] = [:]
            parameters["label"] = body.label
            let job = try await core.enqueue(kind: JobKinds.backup, database: db.name, parameters: parameters, identity: identity, context: context)
            return try APIJSON.response(JobView(job), status: .accepted)
        }
        api.post("databases/:name/exports") { request, context in
            let db = try core.database(try Query.parameter(context, "name"))
            let identity = try context.require(.request, database: db.name)
            let body = try await APIJSON.decodeBody(ExportBody.self, from: request, context: context)
            let parts = body.table.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.count <= 63 }) else {
                throw APIError.badRequest("table must name the hypertable as schema.name, e.g. public.conditions.")
            }
            for (name, value) in [("since", body.since), ("until", body.until)] {
                if let value, value.isEmpty || value.count > 64 || value.contains(where: \.isNewline) {
                    throw APIError.badRequest("\(name) must be a timestamp such as 2026-01-01 or 2026-01-01T00:00:00Z.")
                }
            }
            var parameters = ["table": body.table]
            parameters["since"] = body.since
            parameters["until"] = body.until
            let job = try await core.enqueue(kind: JobKinds.exportHypertable, database: db.name, parameters: parameters, identity: identity, context: context)
            return try APIJSON.response(JobView(job), status: .accepted)
        }
    }

    struct BackupBody: Decodable {
        var label: String?
    }

    struct ExportBody: Decodable {
        var table: String
        var since: String?
        var until: String?
    }

    func view(_ db: ServiceConfig.Database, entries: [RepositoryEntry]) throws -> DatabaseView {
        let own = entries.filter { core.config.databaseName(of: $0) == db.name }
        let lastBackup = own.last { $0.state == .complete && $0.manifest != nil }
        let active = try core.state.activeJobs().first { $0.database == db.name }
        let retention = db.retention.map {
            DatabaseView.Retention(keep_last: $0.keepLast, keep_daily: $0.keepDaily, keep_weekly: $0.keepWeekly, keep_monthly: $0.keepMonthly)
        }
        return DatabaseView(name: db.name, host: db.connection.host, port: db.connection.port, dbname: db.connection.database,
                            schedules: try core.scheduleViews(db), retention: retention, rehearsal_target: db.rehearsal?.target,
                            active_job: active.map(JobView.init), last_backup: lastBackup.map { BackupView($0, config: core.config) },
                            backups: own.count)
    }
}

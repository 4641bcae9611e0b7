import Foundation
import Hummingbird

/// GET /api/schedules; POST /api/schedules/{database}/pause and /resume (operators).
struct ScheduleRoutes {
    let core: ServiceCore

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.get("schedules") { _, context in
            let identity = try context.require(.read)
            let views = try identity.visibleDatabases(in: core.config).flatMap { try core.scheduleViews(core.database($0)) }
            return try APIJSON.response(views)
        }
        for (verb, paused) in [("pause", true), ("resume", false)] {
            api.post("schedules/:database/\(verb)") { request, context in
                let db = try core.database(try Query.parameter(context, "database"))
                try context.require(.operate, database: db.name)
                let configured = try core.scheduleViews(db)
                let kind = Query.string(request, "kind")
                let chosen = configured.filter { kind == nil || $0.kind == kind }
                if chosen.isEmpty {
                    throw APIError.notFound(kind.map { "The database \(db.name) has no \($0) schedule." } ?? "The database \(db.name) has no schedule.")
                }
                for schedule in chosen {
                    try core.state.setSchedulePaused(database: db.name, kind: schedule.kind, paused: paused)
                }
                context.auditNote.set("\(verb)d \(chosen.map(\.kind).joined(separator: ", "))")
                return try APIJSON.response(try core.scheduleViews(db))
            }
        }
    }
}

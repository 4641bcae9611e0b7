import Foundation
import Hummingbird

/// GET /api/audit: the audit log, newest first (operators and viewers).
struct AuditRoutes {
    let core: ServiceCore

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.get("audit") { request, context in
            try context.require(.audit)
            let limit = try Query.int(request, "limit", default: 100, range: 1...1000)
            let offset = try Query.int(request, "offset", default: 0, range: 0...1_000_000)
            let records = try core.state.auditLog(limit: limit, offset: offset, actor: Query.string(request, "actor"))
            return try APIJSON.response(records.map(AuditView.init))
        }
    }
}

import Foundation
import Hummingbird

/// GET /api/jobs, GET /api/jobs/{id}.
struct JobRoutes {
    let core: ServiceCore

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.get("jobs") { request, context in
            let identity = try context.require(.read)
            let limit = try Query.int(request, "limit", default: 100, range: 1...1000)
            let offset = try Query.int(request, "offset", default: 0, range: 0...1_000_000)
            let state = try Query.enumValue(request, "state", as: JobState.self)
            var databases: [String]?
            if let name = Query.string(request, "database") {
                try context.require(.read, database: name)
                databases = [name]
            } else if identity.role == .owner {
                databases = identity.visibleDatabases(in: core.config)
            }
            return try APIJSON.response(try core.state.jobs(databases: databases, state: state, limit: limit, offset: offset).map(JobView.init))
        }
        api.get("jobs/:id") { _, context in
            try context.require(.read)
            guard let job = try core.state.job(try Query.id(context, "job")) else {
                throw APIError.notFound("No job with id \(context.parameters.get("id") ?? ""); GET /api/jobs lists them.")
            }
            try context.require(.read, database: job.database)
            return try APIJSON.response(JobView(job))
        }
    }
}

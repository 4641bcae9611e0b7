import Foundation
import Hummingbird
import TSBackup

/// Restore requests: POST /api/restore-requests (owners for their databases, into a new database;
/// operators also with promote_to), GET /api/restore-requests[/{id}],
/// POST /api/restore-requests/{id}/approve and /reject (operators). Approval queues a restore job,
/// which restores into a new database and verifies it against the manifest (and promotes it when
/// the request says so).
struct RestoreRoutes {
    let core: ServiceCore

    struct CreateBody: Decodable {
        var database: String
        var backup_id: String
        var into: String?
        var promote_to: String?
    }

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.post("restore-requests") { request, context in
            try context.require(.read)
            let body = try await APIJSON.decodeBody(CreateBody.self, from: request, context: context)
            let db = try core.database(body.database)
            let identity = try context.require(.request, database: db.name)
            if body.promote_to != nil {
                // Promotion replaces a live database: an operator's decision, never an owner's.
                try context.require(.operate, database: db.name)
            }
            for (name, value) in [("into", body.into), ("promote_to", body.promote_to)] {
                if let value, !Self.isDatabaseName(value) {
                    throw APIError.badRequest("\(name) must be a new database's name: 1 to 63 letters, digits or '_', starting with a letter or '_'.")
                }
            }
            let entry = try await core.entry(body.backup_id)
            guard entry.manifest != nil else {
                throw APIError.badRequest("\(entry.id) is not a database backup (hypertable exports are imported with `tsbackup import-hypertable`).")
            }
            guard core.config.databaseName(of: entry) == db.name else {
                throw APIError.badRequest("Backup \(entry.id) was not taken from the database \(db.name).")
            }
            guard entry.state == .complete else {
                throw APIError.conflict("Backup \(entry.id) is \(entry.state.rawValue), not complete; it cannot be restored.")
            }
            let record = try core.state.insertRestoreRequest(database: db.name, backupID: entry.id, into: body.into, promoteTo: body.promote_to, requestedBy: identity.name)
            context.auditNote.set("restore request \(record.id)")
            return try APIJSON.response(try core.restoreRequestView(record), status: .created)
        }
        api.get("restore-requests") { request, context in
            let identity = try context.require(.read)
            let limit = try Query.int(request, "limit", default: 100, range: 1...1000)
            let offset = try Query.int(request, "offset", default: 0, range: 0...1_000_000)
            let state = try Query.enumValue(request, "state", as: RestoreRequestState.self)
            let databases = identity.role == .owner ? identity.visibleDatabases(in: core.config) : nil
            let records = try core.state.restoreRequests(databases: databases, state: state, limit: limit, offset: offset)
            return try APIJSON.response(try records.map(core.restoreRequestView))
        }
        api.get("restore-requests/:id") { _, context in
            let record = try find(context)
            try context.require(.read, database: record.database)
            return try APIJSON.response(try core.restoreRequestView(record))
        }
        api.post("restore-requests/:id/approve") { _, context in
            let record = try find(context)
            let identity = try context.require(.operate, database: record.database)
            guard record.state == .pending else {
                throw APIError.conflict("Restore request \(record.id) is already \(record.state.rawValue).")
            }
            var parameters = ["backup_id": record.backupID, "restore_request_id": String(record.id)]
            parameters["into"] = record.into
            parameters["promote_to"] = record.promoteTo
            let job = try await core.enqueue(kind: JobKinds.restore, database: record.database, parameters: parameters, identity: identity, context: context)
            _ = try core.state.decideRestoreRequest(record.id, state: .approved, by: identity.name, jobID: job.id)
            context.auditNote.set("restore request \(record.id) approved; job \(job.id)")
            return try APIJSON.response(try core.restoreRequestView(try core.state.restoreRequest(record.id) ?? record), status: .accepted)
        }
        api.post("restore-requests/:id/reject") { _, context in
            let record = try find(context)
            let identity = try context.require(.operate, database: record.database)
            guard try core.state.decideRestoreRequest(record.id, state: .rejected, by: identity.name, jobID: nil) else {
                throw APIError.conflict("Restore request \(record.id) is already \(record.state.rawValue).")
            }
            context.auditNote.set("restore request \(record.id) rejected")
            return try APIJSON.response(try core.restoreRequestView(try core.state.restoreRequest(record.id) ?? record))
        }
    }

    func find(_ context: ServiceRequestContext) throws -> RestoreRequestRecord {
        try context.require(.read)
        guard let record = try core.state.restoreRequest(try Query.id(context, "restore request")) else {
            throw APIError.notFound("No restore request with id \(context.parameters.get("id") ?? ""); GET /api/restore-requests lists them.")
        }
        return record
    }

    static func isDatabaseName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 63 else { return false }
        let letters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
        let rest = letters.union(CharacterSet(charactersIn: "0123456789"))
        return letters.contains(first) && name.unicodeScalars.allSatisfy { rest.contains($0) }
    }
}

import Foundation
import Hummingbird
import Synchronization
import TSBackup

/// The request context of every route: the caller's identity (set by ``APIMiddleware``) and a
/// note a route leaves for the audit log (e.g. the job it queued).
public struct ServiceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: Identity?
    /// Shared with the middleware, which writes it into the audit entry.
    public let auditNote: AuditNote

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        identity = nil
        auditNote = AuditNote()
    }

    /// The caller, allowed to do `permission` on `database`; 401 without a caller, 403 otherwise.
    @discardableResult
    public func require(_ permission: Permission, database: String? = nil) throws -> Identity {
        guard let identity else { throw APIError.unauthorized("Send an API token: Authorization: Bearer TOKEN.") }
        guard identity.allows(permission, database: database) else {
            let scope = database.map { " on the database \($0)" } ?? ""
            throw APIError.forbidden("The token \(identity.name) (role \(identity.role.rawValue)) may not \(permission.rawValue)\(scope). \(Self.hint(permission))")
        }
        return identity
    }

    static func hint(_ permission: Permission) -> String {
        switch permission {
        case .operate: return "Only operators approve restores, promote, delete backups and pause schedules; ask one."
        case .audit: return "The audit log is for operators and viewers."
        case .request, .download: return "Owners act on their own databases only; operators on all."
        case .read: return "Owners see their own databases only."
        }
    }
}

/// What a route adds to its audit entry.
public final class AuditNote: Sendable {
    private let text = Mutex<String?>(nil)
    public init() {}
    public func set(_ value: String) { text.withLock { $0 = value } }
    public var value: String? { text.withLock { $0 } }
}

/// Everything the routes share.
public struct ServiceCore: Sendable {
    public let config: ServiceConfig
    public let state: StateStore
    public let jobs: JobQueue
    public let authenticator: TokenAuthenticator
    /// Entries downloads are streaming and entries retention or a delete job is deleting (the
    /// job queue's, so that its jobs see the same holds).
    public var holds: EntryHolds { jobs.holds }

    public init(config: ServiceConfig, state: StateStore, jobs: JobQueue) {
        self.config = config
        self.state = state
        self.jobs = jobs
        self.authenticator = TokenAuthenticator(tokens: config.tokens)
    }

    /// The configured database, or 404.
    func database(_ name: String) throws -> ServiceConfig.Database {
        guard let db = config.databases[name] else {
            let known = config.databases.keys.sorted()
            throw APIError.notFound("No database named \"\(name)\" is configured\(known.isEmpty ? "" : "; GET /api/databases lists them").")
        }
        return db
    }

    /// The repository's entries; none while the repository does not exist yet.
    func entries() async throws -> [RepositoryEntry] {
        let access = try config.repositoryAccess()
        let repository: any Repository
        do {
            repository = try await access.open(create: false)
        } catch let error as TSBackupError where error.kind == .notFound {
            return []
        }
        do {
            let entries = try await jobs.listing.entries(of: repository)
            await repository.close()
            return entries
        } catch {
            await repository.close()
            throw error
        }
    }

    /// The entry, or 404.
    func entry(_ id: String) async throws -> RepositoryEntry {
        guard let entry = try await entries().first(where: { $0.id == id }) else {
            throw APIError.notFound("No backup or export with id \"\(id)\"; GET /api/backups lists them.")
        }
        return entry
    }

    /// Whether the caller may see the entry; owners only the entries of their databases.
    func check(_ permission: Permission, entry: RepositoryEntry, context: ServiceRequestContext) throws {
        let identity = try context.require(permission)
        if identity.role == .owner {
            try context.require(permission, database: config.databaseName(of: entry) ?? "(no configured database)")
        }
    }

    /// Queues a job, answering 409 with the busy database's job and 503 while shutting down.
    func enqueue(kind: String, database: String, parameters: [String: String], identity: Identity, context: ServiceRequestContext) async throws -> JobRecord {
        do {
            let job = try await jobs.enqueue(kind: kind, database: database, parameters: parameters, requestedBy: identity.name)
            context.auditNote.set("job \(job.id)")
            return job
        } catch EnqueueError.busy(let job) {
            context.auditNote.set("busy with job \(job.id)")
            throw APIError.conflict("The database \(database) is busy with job \(job.id) (\(job.kind), \(job.state.rawValue)); try again when it has ended (GET /api/jobs/\(job.id)).", job: job)
        } catch EnqueueError.stopping {
            throw APIError(.serviceUnavailable, code: "stopping", "The service is shutting down and takes no new jobs.")
        }
    }
}

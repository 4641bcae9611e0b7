import Foundation
import Hummingbird
import TSBackup

extension ServiceOperations {
    /// The cookie the dashboard's sign-in sets: the token itself, HttpOnly, checked like an API token.
    static let sessionCookie = "tsbackup_token"

    func addRoutes(to router: Router<ServiceRequestContext>) {
        // Prometheus sends `Authorization: Bearer` from its scrape config (credentials_file);
        // the figures cover every database, so operators and viewers only, not owners.
        // `metrics.auth: none` (loopback only) drops the check, as exporters do by default.
        router.get("metrics") { request, context in
            if self.core.config.metricsAuth == .token {
                if let refusal = try self.metricsRefusal(request, context) { return refusal }
            }
            let active = (try? self.core.state.activeJobs()) ?? []
            self.metrics.queue(queued: active.filter { $0.state == .queued }.count, running: active.filter { $0.state == .running }.count)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: self.metrics.render())))
        }

        // Retention: what the policy would delete (dry run) and applying it as a job.
        router.get("api/databases/:name/retention") { _, context in
            let db = try self.core.database(try Query.parameter(context, "name"))
            try context.require(.read, database: db.name)
            guard let policy = self.retentionPolicy(db) else {
                throw APIError.notFound("The database \(db.name) has no retention policy (databases.\(db.name).retention in the config).")
            }
            let outcome = try await Retention.apply(policy: policy, repository: try self.core.config.repositoryAccess(), dryRun: true,
                                                    belongs: self.belongs(db.name), inUse: { self.backupsInUse() })
            return try APIJSON.response(outcome.plan)
        }
        router.post("api/databases/:name/retention") { _, context in
            let db = try self.core.database(try Query.parameter(context, "name"))
            let identity = try context.require(.operate, database: db.name)
            guard self.retentionPolicy(db) != nil else {
                throw APIError.notFound("The database \(db.name) has no retention policy (databases.\(db.name).retention in the config).")
            }
            let job = try await self.core.enqueue(kind: OperationsJobKinds.retention, database: db.name, parameters: [:], identity: identity, context: context)
            return try APIJSON.response(JobView(job), status: .accepted)
        }

        // Rehearsals: run one now (operators) and read the results.
        router.post("api/databases/:name/rehearsals") { _, context in
            let db = try self.core.database(try Query.parameter(context, "name"))
            let identity = try context.require(.operate, database: db.name)
            guard db.rehearsal != nil else {
                throw APIError.notFound("The database \(db.name) has no rehearsal target (databases.\(db.name).rehearsal in the config).")
            }
            let job = try await self.core.enqueue(kind: OperationsJobKinds.rehearsal, database: db.name, parameters: [:], identity: identity, context: context)
            return try APIJSON.response(JobView(job), status: .accepted)
        }
        router.get("api/rehearsals") { request, context in
            let identity = try context.require(.read)
            var databases = identity.visibleDatabases(in: self.core.config)
            if let only = Query.string(request, "database") {
                try context.require(.read, database: only)
                databases = databases.filter { $0 == only }
            }
            let jobs = try self.core.state.jobs(databases: databases, kind: OperationsJobKinds.rehearsal, limit: 100)
            return try APIJSON.response(jobs.map(JobView.init))
        }

        // The dashboard.
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/dashboard"]) }
        router.get("dashboard") { request, _ in
            guard let identity = self.signedIn(request) else {
                return Response(status: .seeOther, headers: [.location: "/dashboard/signin"])
            }
            return self.html(self.dashboard.page(try await self.dashboardModel(for: identity)))
        }
        router.get("dashboard/signin") { _, _ in
            self.html(self.dashboard.signInPage(message: nil))
        }
        router.post("dashboard/signin") { request, _ in
            var request = request
            let body = (try? await request.collectBody(upTo: 16 * 1024)).map { String(buffer: $0) } ?? ""
            let token = Self.formValue(body, "token") ?? ""
            guard !token.isEmpty, let identity = self.core.authenticator.identity(forToken: token) else {
                _ = try? self.core.state.audit(actor: "anonymous", role: nil, action: "dashboard.signin", target: "/dashboard", outcome: "refused", status: 401)
                return self.html(self.dashboard.signInPage(message: "That token is not valid."), status: .unauthorized)
            }
            _ = try? self.core.state.audit(actor: identity.name, role: identity.role.rawValue, action: "dashboard.signin", target: "/dashboard",
                                           outcome: "allowed", status: 303)
            let secure = self.core.config.tls != nil ? "; Secure" : ""
            let value = token.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            return Response(status: .seeOther, headers: [.location: "/dashboard",
                                                         .setCookie: "\(Self.sessionCookie)=\(value); Path=/; HttpOnly; SameSite=Lax\(secure)"])
        }
        router.post("dashboard/signout") { _, _ in
            Response(status: .seeOther, headers: [.location: "/dashboard/signin",
                                                  .setCookie: "\(Self.sessionCookie)=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"])
        }
    }

    /// 401 without a valid bearer token, 403 for an owner's token (both audited); nil when allowed.
    func metricsRefusal(_ request: Request, _ context: ServiceRequestContext) throws -> Response? {
        var identity: Identity?
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                identity = core.authenticator.identity(forToken: parts[1].trimmingCharacters(in: .whitespaces))
            }
        }
        let error: APIError
        if let identity {
            guard identity.role == .owner else { return nil }
            error = APIError.forbidden("The token \(identity.name) (role owner) may not read /metrics: its figures cover every database. Give Prometheus a viewer token.")
        } else {
            error = APIError.unauthorized(request.headers[.authorization] == nil
                ? "Send a token: Authorization: Bearer TOKEN (a viewer's; Prometheus: authorization: {credentials_file: FILE} in the scrape config)."
                : "The token is not valid. Check it, or ask an operator for a viewer token (the config stores its SHA-256).")
        }
        _ = try? core.state.audit(actor: identity?.name ?? "anonymous", role: identity?.role.rawValue, action: "GET /metrics", target: "/metrics",
                                  outcome: "refused", status: error.status.code, detail: error.message)
        return try error.response(from: request, context: context)
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                                           .init("Content-Security-Policy")!: "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"],
                 body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The identity of the dashboard's cookie, checked like an API token.
    func signedIn(_ request: Request) -> Identity? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, parts[0] == Self.sessionCookie, let token = parts[1].removingPercentEncoding, !token.isEmpty else { continue }
                return core.authenticator.identity(forToken: token)
            }
        }
        return nil
    }

    /// A value of an `application/x-www-form-urlencoded` body.
    static func formValue(_ body: String, _ name: String) -> String? {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.first == name else { continue }
            let raw = (parts.count > 1 ? parts[1] : "").replacingOccurrences(of: "+", with: " ")
            return raw.removingPercentEncoding
        }
        return nil
    }

    /// Everything the page shows, limited to what `identity` may see.
    func dashboardModel(for identity: Identity, now: Date = Date()) async throws -> DashboardModel {
        let config = core.config
        let visible = identity.visibleDatabases(in: config)
        let entries = (try? await core.entries()) ?? []
        let upcoming = await scheduler.upcoming
        var databases: [DashboardModel.Database] = []
        for name in visible {
            guard let db = config.databases[name] else { continue }
            let own = entries.filter { config.databaseName(of: $0) == name }
            let newest = own.filter { $0.state == .complete && $0.manifest != nil }.max { ($0.manifest!.startedAt, $0.id) < ($1.manifest!.startedAt, $1.id) }
            let schedule = db.schedule.flatMap { try? CronSchedule.parse($0.cron, zone: $0.timeZone) }
            let stored = try? core.state.scheduleState(database: name, kind: ScheduledTask.Kind.backup.rawValue)
            databases.append(DashboardModel.Database(
                name: name, lastGood: newest?.manifest?.startedAt, lastGoodID: newest?.id, lastGoodBytes: newest?.manifest?.totalFileBytes,
                schedule: db.schedule.map { "\($0.cron) (\($0.timeZone))" }, scheduleInterval: schedule?.typicalInterval(from: now),
                nextRun: upcoming["backup:\(name)"] ?? schedule?.nextFire(after: now), paused: stored?.paused ?? false,
                retention: retentionPolicy(db).map { "last \($0.last), daily \($0.daily), weekly \($0.weekly), monthly \($0.monthly)" },
                rehearsalSchedule: db.rehearsal.map { r in "on \(r.target)" + (r.schedule.map { ", \($0.cron) (\($0.timeZone))" } ?? "") },
                backups: own.filter { $0.state == .complete }.count,
                // A hostile or damaged manifest may claim any size: the totals saturate, never trap.
                bytes: own.saturatingSum { $0.manifest?.totalFileBytes ?? $0.hypertable?.totalFileBytes ?? 0 }))
        }
        let mine = entries.filter { entry in config.databaseName(of: entry).map(visible.contains) ?? (identity.role != .owner) }
        let rehearsals = try core.state.jobs(databases: visible, kind: OperationsJobKinds.rehearsal, limit: 20).compactMap { job -> Rehearsal.Result? in
            // Skipped scheduled rehearsals (no backup yet) rehearsed nothing: not in the table.
            let result = Self.rehearsalResult(job)
            return Self.skippedRehearsal(result, state: job.state) ? nil : result
        }
        let jobs = try core.state.jobs(databases: visible, limit: 30).map { job in
            DashboardModel.Job(id: String(job.id), kind: job.kind, database: job.database, state: job.state.rawValue, createdAt: job.createdAt,
                               finishedAt: job.finishedAt, requestedBy: job.requestedBy, detail: job.error ?? job.entryID)
        }
        let requests = try core.state.restoreRequests(databases: visible, state: .pending).map { r in
            DashboardModel.RestoreRequest(id: String(r.id), database: r.database, backupID: r.backupID, requestedBy: r.requestedBy,
                                          createdAt: r.requestedAt, into: r.into)
        }
        return DashboardModel(now: now, repository: config.repository,
                              repositoryBytes: mine.saturatingSum { $0.manifest?.totalFileBytes ?? $0.hypertable?.totalFileBytes ?? 0 },
                              repositoryEntries: mine.count, signedInAs: identity.name, role: identity.role.rawValue,
                              databases: databases, rehearsals: rehearsals, jobs: jobs, restoreRequests: requests)
    }
}

import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOFoundationEssentialsCompat
import Testing
import TSBackup
@testable import TSBackupService

/// The API in-process (HummingbirdTesting's router mode), with the job queue not running, so
/// queued jobs stay queued and a second request for the same database is busy.
@Suite struct RouteTests {
    static let tokens = ["alice": "tok-alice", "bob": "tok-bob", "olga": "tok-olga", "vic": "tok-vic"]

    static func makeConfig(repository: String) throws -> ServiceConfig {
        let yaml = """
            repository:
              url: \(repository)
            state_file: /nonexistent/unused.sqlite
            databases:
              metrics:
                host: 127.0.0.1
                port: 5999
                user: backup
                dbname: metrics
                schedule:
                  cron: "0 3 * * *"
              other:
                host: 127.0.0.1
                port: 5999
                dbname: other
            tokens:
              - {name: alice, sha256: \(TokenHash.hex(of: tokens["alice"]!)), role: owner, databases: [metrics]}
              - {name: bob, sha256: \(TokenHash.hex(of: tokens["bob"]!)), role: owner, databases: [other]}
              - {name: olga, sha256: \(TokenHash.hex(of: tokens["olga"]!)), role: operator}
              - {name: vic, sha256: \(TokenHash.hex(of: tokens["vic"]!)), role: viewer}
            """
        return try ServiceConfig.parse(yaml)
    }

    struct Harness {
        let core: ServiceCore
        let server: ServiceServer
        let repository: String

        init() throws {
            repository = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-routes-\(UUID().uuidString)").path
            let config = try RouteTests.makeConfig(repository: repository)
            let state = try StateStore()
            core = ServiceCore(config: config, state: state, jobs: JobQueue(config: config, state: state, handlers: JobKinds.handlers()))
            server = ServiceServer(core: core)
        }

        func test(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
            let app = Application(router: server.makeRouter())
            try await app.test(.router) { client in try await body(client) }
        }
    }

    static func headers(_ who: String?) -> HTTPFields {
        guard let who else { return [:] }
        let token = tokens[who] ?? who
        return [.authorization: "Bearer \(token)", .contentType: "application/json"]
    }

    static func json(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static func status(_ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, as who: String?, body: String? = nil) async throws -> Int {
        try await client.execute(uri: uri, method: method, headers: headers(who), body: body.map(json)) { $0.status.code }
    }

    static func object(_ response: TestResponse) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    @Test func everyAPIRouteNeedsAValidToken() async throws {
        let harness = try Harness()
        try await harness.test { client in
            let routes: [(HTTPRequest.Method, String)] = [
                (.get, "/api/status"), (.get, "/api/databases"), (.get, "/api/databases/metrics"), (.post, "/api/databases/metrics/backups"),
                (.post, "/api/databases/metrics/exports"), (.get, "/api/backups"), (.get, "/api/backups/x"), (.get, "/api/backups/x/download"),
                (.delete, "/api/backups/x"), (.get, "/api/jobs"), (.get, "/api/jobs/1"), (.get, "/api/restore-requests"),
                (.post, "/api/restore-requests"), (.get, "/api/restore-requests/1"), (.post, "/api/restore-requests/1/approve"),
                (.post, "/api/restore-requests/1/reject"), (.get, "/api/schedules"), (.post, "/api/schedules/metrics/pause"),
                (.post, "/api/schedules/metrics/resume"), (.get, "/api/audit"),
            ]
            for (method, uri) in routes {
                #expect(try await Self.status(client, method, uri, as: nil) == 401, "\(method) \(uri) without a token")
                #expect(try await Self.status(client, method, uri, as: "wrong-token") == 401, "\(method) \(uri) with a wrong token")
            }
            let unauthorized = try await client.execute(uri: "/api/status", method: .get)
            #expect(unauthorized.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            #expect(try await Self.status(client, .get, "/openapi.json", as: nil) == 200)
            #expect(try await Self.status(client, .get, "/health", as: nil) == 200)
        }
        let audit = try harness.core.state.auditLog(limit: 1000)
        #expect(audit.filter { $0.actor == "anonymous" && $0.outcome == "refused" && $0.status == 401 }.count == 41)  // 20 routes x 2, and the WWW-Authenticate check
    }

    @Test func rolesAndScopesOnEveryRoute() async throws {
        let harness = try Harness()
        let pending = try harness.core.state.insertRestoreRequest(database: "metrics", backupID: "20260101T000000Z", into: nil, promoteTo: nil, requestedBy: "alice")
        try await harness.test { client in
            // Reading: every role; owners only their databases.
            for who in ["alice", "bob", "olga", "vic"] {
                for uri in ["/api/status", "/api/databases", "/api/backups", "/api/jobs", "/api/restore-requests", "/api/schedules"] {
                    #expect(try await Self.status(client, .get, uri, as: who) == 200, "\(who) GET \(uri)")
                }
            }
            #expect(try await Self.status(client, .get, "/api/databases/metrics", as: "alice") == 200)
            #expect(try await Self.status(client, .get, "/api/databases/metrics", as: "bob") == 403)
            #expect(try await Self.status(client, .get, "/api/databases/metrics", as: "vic") == 200)
            #expect(try await Self.status(client, .get, "/api/backups?database=metrics", as: "bob") == 403)
            #expect(try await Self.status(client, .get, "/api/jobs?database=metrics", as: "bob") == 403)
            #expect(try await Self.status(client, .get, "/api/restore-requests/\(pending.id)", as: "bob") == 403)
            #expect(try await Self.status(client, .get, "/api/restore-requests/\(pending.id)", as: "alice") == 200)
            // An owner lists only its databases.
            let listed = try await client.execute(uri: "/api/databases", method: .get, headers: Self.headers("bob"))
            let names = try #require(try JSONSerialization.jsonObject(with: Data(buffer: listed.body)) as? [[String: Any]]).compactMap { $0["name"] as? String }
            #expect(names == ["other"])

            // The audit log: operators and viewers.
            #expect(try await Self.status(client, .get, "/api/audit", as: "alice") == 403)
            #expect(try await Self.status(client, .get, "/api/audit", as: "vic") == 200)
            #expect(try await Self.status(client, .get, "/api/audit", as: "olga") == 200)

            // Asking for work: the database's owner and operators; never viewers or other owners.
            for uri in ["/api/databases/metrics/backups", "/api/databases/metrics/exports"] {
                #expect(try await Self.status(client, .post, uri, as: "vic", body: #"{"table": "public.t"}"#) == 403)
                #expect(try await Self.status(client, .post, uri, as: "bob", body: #"{"table": "public.t"}"#) == 403)
            }
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "vic", body: #"{"database": "metrics", "backup_id": "x"}"#) == 403)
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "bob", body: #"{"database": "metrics", "backup_id": "x"}"#) == 403)
            // An owner may not ask for a promotion, nor approve, reject, delete or pause.
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "alice", body: #"{"database": "metrics", "backup_id": "x", "promote_to": "metrics"}"#) == 403)
            #expect(try await Self.status(client, .post, "/api/restore-requests/\(pending.id)/approve", as: "alice") == 403)
            #expect(try await Self.status(client, .post, "/api/restore-requests/\(pending.id)/reject", as: "alice") == 403)
            #expect(try await Self.status(client, .post, "/api/restore-requests/\(pending.id)/approve", as: "vic") == 403)
            #expect(try await Self.status(client, .delete, "/api/backups/x", as: "alice") == 403)
            #expect(try await Self.status(client, .delete, "/api/backups/x", as: "vic") == 403)
            #expect(try await Self.status(client, .post, "/api/schedules/metrics/pause", as: "alice") == 403)
            #expect(try await Self.status(client, .post, "/api/schedules/metrics/resume", as: "vic") == 403)

            // Operators may.
            #expect(try await Self.status(client, .post, "/api/schedules/metrics/pause", as: "olga") == 200)
            #expect(try harness.core.state.scheduleState(database: "metrics", kind: "backup").paused)
            #expect(try await Self.status(client, .post, "/api/schedules/metrics/resume", as: "olga") == 200)
            #expect(try !harness.core.state.scheduleState(database: "metrics", kind: "backup").paused)
            let approved = try await client.execute(uri: "/api/restore-requests/\(pending.id)/approve", method: .post, headers: Self.headers("olga"))
            #expect(approved.status == .accepted)
            let request = try Self.object(approved)
            #expect(request["state"] as? String == "approved")
            #expect((request["job"] as? [String: Any])?["kind"] as? String == "restore")
            // Approving twice is a conflict.
            #expect(try await Self.status(client, .post, "/api/restore-requests/\(pending.id)/approve", as: "olga") == 409)
        }
        // Refusals are audited with who and what.
        let audit = try harness.core.state.auditLog(limit: 1000)
        #expect(audit.contains { $0.actor == "alice" && $0.action == "POST /api/restore-requests/{id}/approve" && $0.outcome == "refused" && $0.status == 403 })
        #expect(audit.contains { $0.actor == "olga" && $0.action == "POST /api/restore-requests/{id}/approve" && $0.outcome == "allowed" && $0.detail?.contains("job") == true })
        #expect(audit.contains { $0.actor == "vic" && $0.action == "DELETE /api/backups/{id}" && $0.outcome == "refused" })
    }

    @Test func badInputGets400And404And409() async throws {
        let harness = try Harness()
        try await harness.test { client in
            // Not JSON, wrong JSON.
            #expect(try await Self.status(client, .post, "/api/databases/metrics/backups", as: "alice", body: "{not json") == 400)
            #expect(try await Self.status(client, .post, "/api/databases/metrics/exports", as: "alice", body: #"{"table": 5}"#) == 400)
            #expect(try await Self.status(client, .post, "/api/databases/metrics/exports", as: "alice", body: #"{"table": "no_schema"}"#) == 400)
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "alice", body: "[]") == 400)
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "olga", body: #"{"database": "metrics", "backup_id": "x", "into": "bad name;"}"#) == 400)
            #expect(try await Self.status(client, .get, "/api/jobs?limit=abc", as: "olga") == 400)
            #expect(try await Self.status(client, .get, "/api/jobs?state=bogus", as: "olga") == 400)
            // Unknown things.
            #expect(try await Self.status(client, .post, "/api/databases/nope/backups", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/databases/nope", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/backups/20990101T000000Z", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/backups/20990101T000000Z/download", as: "olga") == 404)
            #expect(try await Self.status(client, .delete, "/api/backups/20990101T000000Z", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/jobs/999", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/jobs/abc", as: "olga") == 404)
            #expect(try await Self.status(client, .get, "/api/restore-requests/999", as: "olga") == 404)
            #expect(try await Self.status(client, .post, "/api/restore-requests/999/approve", as: "olga") == 404)
            #expect(try await Self.status(client, .post, "/api/restore-requests", as: "alice", body: #"{"database": "metrics", "backup_id": "20990101T000000Z"}"#) == 404)
            #expect(try await Self.status(client, .post, "/api/schedules/nope/pause", as: "olga") == 404)
            #expect(try await Self.status(client, .post, "/api/schedules/other/pause", as: "olga") == 404)

            // A busy database: the second request is 409 and names the first job.
            let first = try await client.execute(uri: "/api/databases/metrics/backups", method: .post, headers: Self.headers("alice"), body: Self.json(#"{"label": "first"}"#))
            #expect(first.status == .accepted)
            let job = try Self.object(first)
            #expect(job["state"] as? String == "queued")
            #expect((job["parameters"] as? [String: Any])?["label"] as? String == "first")
            let second = try await client.execute(uri: "/api/databases/metrics/backups", method: .post, headers: Self.headers("olga"))
            #expect(second.status == .conflict)
            let busy = try Self.object(second)
            #expect((busy["job"] as? [String: Any])?["id"] as? Int == job["id"] as? Int)
            #expect(((busy["error"] as? [String: Any])?["message"] as? String)?.contains("busy") == true)
            // The job is readable by its owner and operators, not by another owner.
            let id = try #require(job["id"] as? Int)
            #expect(try await Self.status(client, .get, "/api/jobs/\(id)", as: "alice") == 200)
            #expect(try await Self.status(client, .get, "/api/jobs/\(id)", as: "bob") == 403)
        }
        #expect(try harness.core.state.jobs().count == 1)
    }

    /// Walks the routes the router really registered (the API's and serve-ops': metrics,
    /// retention, rehearsals, dashboard), so a route added later without a description fails here.
    @Test func openAPIDocumentDescribesEveryRegisteredRoute() async throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPI.document.utf8)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let harness = try Harness()
        var server = harness.server
        await (try ServiceOperations.make(core: harness.core)).install(into: &server)
        let router = server.makeRouter()
        var served: Set<String> = []
        for route in router.routes {
            let path = route.path.description
            let method = route.method.rawValue.lowercased()
            served.insert("\(method) \(path)")
            #expect(paths[path]?[method] != nil, "\(route.method.rawValue) \(path) is served but /openapi.json does not describe it")
        }
        for (path, operations) in paths {
            for method in operations.keys where method != "parameters" {
                #expect(served.contains("\(method) \(path)"), "/openapi.json describes \(method.uppercased()) \(path), which is not served")
            }
        }
        // The routes serve-ops adds are among them (the walk saw the whole router).
        for route in ["get /metrics", "get /api/databases/{name}/retention", "post /api/databases/{name}/retention",
                      "post /api/databases/{name}/rehearsals", "get /api/rehearsals", "get /dashboard"] {
            #expect(served.contains(route), "\(route)")
        }
        try await harness.test { client in
            let response = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(response.headers[.contentType] == "application/json")
            #expect(String(buffer: response.body) == OpenAPI.document)
        }
    }

    /// /metrics: an operator's or viewer's bearer token (what a Prometheus scrape config sends);
    /// none is 401, an owner's (scoped to some databases) 403, both audited.
    @Test func metricsNeedAViewerOrOperatorToken() async throws {
        let harness = try Harness()
        var server = harness.server
        await (try ServiceOperations.make(core: harness.core)).install(into: &server)
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            #expect(try await Self.status(client, .get, "/metrics", as: nil) == 401)
            #expect(try await Self.status(client, .get, "/metrics", as: "not-a-token") == 401)
            #expect(try await Self.status(client, .get, "/metrics", as: "alice") == 403)
            for who in ["vic", "olga"] {
                let response = try await client.execute(uri: "/metrics", method: .get, headers: Self.headers(who))
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("tsbackup_last_successful_backup_timestamp_seconds{database=\"metrics\"}"))
            }
        }
        let refused = try harness.core.state.auditLog(limit: 10).filter { $0.target == "/metrics" }
        #expect(refused.compactMap(\.status).sorted() == [401, 401, 403])
        #expect(refused.contains { $0.actor == "alice" && $0.outcome == "refused" })
    }

    // MARK: Hostile repositories and held entries

    /// The manifest Fuzz/corpus keeps for sizes of 2^63-1, as the repository's entry `id` of the
    /// configured database `metrics`.
    static func hugeManifest(id: String) throws -> BackupManifest {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/corpus/manifest/regression-file-bytes-overflow.json").standardizedFileURL
        var manifest = try JSONOutput.decode(BackupManifest.self, from: try Data(contentsOf: url))  // a legacy (unwrapped) manifest
        manifest.id = id
        manifest.source.host = "127.0.0.1"
        manifest.source.port = 5999
        manifest.source.database = "metrics"
        return manifest
    }

    /// Commits entries with these manifests into the harness's (new) repository.
    static func plant(_ manifests: [BackupManifest], in repository: String) async throws {
        let repo = try LocalRepository.open(repository, create: true)
        for manifest in manifests {
            try await repo.commitEntry(try repo.beginEntry(manifest.id), manifest: manifest)
        }
    }

    /// Anyone who can write to the repository chooses the sizes its manifests claim: two entries
    /// of 2^63-1 bytes each made the dashboard's per-database and repository totals overflow,
    /// which traps and ends the service. The totals now saturate.
    @Test func manifestsClaimingHugeSizesDoNotCrashTheDashboard() async throws {
        let harness = try Harness()
        defer { try? FileManager.default.removeItem(atPath: harness.repository) }
        let manifests = [try Self.hugeManifest(id: "20261127T121821Z"), try Self.hugeManifest(id: "20261128T121821Z")]
        #expect(manifests.allSatisfy { $0.totalFileBytes == .max })
        try await Self.plant(manifests, in: harness.repository)
        var server = harness.server
        let operations = try ServiceOperations.make(core: harness.core)
        await operations.install(into: &server)
        let model = try await operations.dashboardModel(for: try #require(harness.core.authenticator.identity(forToken: "tok-olga")))
        #expect(model.repositoryEntries == 2 && model.repositoryBytes == .max)
        #expect(model.databases.first { $0.name == "metrics" }?.bytes == .max)
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            let page = try await client.execute(uri: "/dashboard", method: .get, headers: [.cookie: "\(ServiceOperations.sessionCookie)=tok-olga"])
            #expect(page.status == .ok)
            #expect(String(buffer: page.body).contains("20261128T121821Z"))
            let list = try await client.execute(uri: "/api/backups", method: .get, headers: Self.headers("olga"))
            #expect(list.status == .ok)
            let listed = try #require(try JSONSerialization.jsonObject(with: Data(buffer: list.body)) as? [[String: Any]])
            #expect(listed.count == 2)
        }
    }

    /// An operator's DELETE of a backup a download is streaming: refused with 409 and what to do
    /// (the route), and a delete job queued before the download started does not delete it
    /// either (the job claims the entry as retention does). After the download, both go ahead.
    @Test func deleteWaitsForADownloadOfTheBackup() async throws {
        let harness = try Harness()
        defer { try? FileManager.default.removeItem(atPath: harness.repository) }
        var manifest = try Self.hugeManifest(id: "20261127T121821Z")
        manifest.files = []
        try await Self.plant([manifest], in: harness.repository)
        let id = manifest.id
        // What GET /api/backups/{id}/download holds from before it opens the files until the
        // stream ends (ServeGapsTests streams a real one to a slow client).
        #expect(harness.core.holds.acquireReader(id))
        try await harness.test { client in
            let refused = try await client.execute(uri: "/api/backups/\(id)", method: .delete, headers: Self.headers("olga"))
            #expect(refused.status == .conflict)
            let body = try #require(try Self.object(refused)["error"] as? [String: Any])
            #expect(body["code"] as? String == "conflict" && body["status"] as? Int == 409)
            let message = try #require(body["message"] as? String)
            #expect(message.contains("is being downloaded") && message.contains("after the download has ended"), "\(message)")
        }
        #expect(try harness.core.state.jobs().isEmpty, "a refused DELETE queues nothing")
        #expect(try harness.core.state.auditLog(limit: 10).contains { $0.action.hasPrefix("DELETE") && $0.status == 409 })

        // A delete job already queued when the download started: it fails and deletes nothing.
        let job = try await harness.core.jobs.enqueue(kind: JobKinds.delete, database: "metrics", parameters: ["backup_id": id], requestedBy: "olga")
        let context = JobContext(config: harness.core.config, state: harness.core.state, logger: Logger(label: "test"), holds: harness.core.holds,
                                 progressSink: ProgressSink(jobID: job.id, state: harness.core.state))
        do {
            _ = try await JobKinds.runDelete(job, context)
            Issue.record("the delete job deleted a backup a download holds")
        } catch let error as TSBackupError {
            #expect(error.kind == .precondition && error.message.contains("Delete it again after the download has ended"))
        }
        #expect(FileManager.default.fileExists(atPath: harness.repository + "/backups/\(id)/manifest.json"))

        // The download ends: the job deletes the entry, and while it does no download starts.
        harness.core.holds.releaseReader(id)
        _ = try await JobKinds.runDelete(job, context)
        #expect(!FileManager.default.fileExists(atPath: harness.repository + "/backups/\(id)"))
        #expect(harness.core.holds.acquireReader(id), "the deletion's claim ended with the job")
        harness.core.holds.releaseReader(id)
    }

    @Test func metricsWithoutATokenWhenTheConfigSaysSo() async throws {
        var config = try Self.makeConfig(repository: "/nonexistent/repo")
        config.metricsAuth = .none
        let state = try StateStore()
        let core = ServiceCore(config: config, state: state, jobs: JobQueue(config: config, state: state, handlers: JobKinds.handlers()))
        var server = ServiceServer(core: core)
        await (try ServiceOperations.make(core: core)).install(into: &server)
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            let metrics = try await Self.status(client, .get, "/metrics", as: nil)
            #expect(metrics == 200)
            // The API itself still needs a token.
            let status = try await Self.status(client, .get, "/api/status", as: nil)
            #expect(status == 401)
        }
    }
}

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox
import TSBackupService

/// The service's operations as a real `tsbackup serve` process against a real cluster: per-second
/// schedules, retention after each backup, a rehearsal, failure and recovery webhooks, metrics, and
/// the dashboard read by headless Chromium.
@Suite(.serialized) struct ServeOpsTests {
    static let operatorToken = "olga-\(UUID().uuidString)"
    static let ownerToken = "alice-\(UUID().uuidString)"

    struct Running {
        let process: BackgroundProcess
        let port: Int
        var base: String { "http://127.0.0.1:\(port)" }

        /// Writes `yaml` as `<work>/serve.yaml`, starts `tsbackup serve` on it in `<work>/run`
        /// with `environment` (the server passwords; PGPASSWORD emptied so none leaks in) and
        /// waits for its port (a hang guard, not a timing assertion). The caller stops it.
        static func start(work: String, port: Int, yaml: String, environment: [String: String]) async throws -> Running {
            try yaml.write(toFile: work + "/serve.yaml", atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: work + "/run", withIntermediateDirectories: true)
            let process = try await BackgroundProcess.start(
                name: "serve", command: [CLI.executable, "serve", "--config", work + "/serve.yaml"],
                environment: environment.merging(["PGPASSWORD": ""]) { own, _ in own }, directory: work + "/run")
            do {
                try await process.waitForPort(port, timeout: .seconds(600))
            } catch {
                await process.stop()
                throw error
            }
            return Running(process: process, port: port)
        }

        func request(_ method: HTTPMethod, _ path: String, token: String = ServeOpsTests.operatorToken) async throws -> (status: Int, body: String) {
            var request = HTTPClientRequest(url: base + path)
            request.method = method
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 16 << 20)))
        }

        func json(_ path: String) async throws -> Any? {
            try JSONSerialization.jsonObject(with: Data(try await request(.GET, path).body.utf8))
        }

        func jobs(_ database: String) async throws -> [[String: Any]] {
            (try await json("/api/jobs?database=\(database)&limit=200") as? [[String: Any]]) ?? []
        }

        /// Polls until `condition` holds (a hang guard of ten minutes, not a timing assertion).
        func waitUntil(_ what: String, _ condition: () async throws -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(600)
            while ContinuousClock.now < deadline {
                if try await condition() { return }
                try await Task.sleep(for: .milliseconds(300))
            }
            throw SandboxError("\(what) did not happen; service log:\n\(process.log().suffix(4000))")
        }
    }

    /// Loads a page in headless Chromium signed in with `token`: a local harness page posts the
    /// sign-in form (the only JavaScript involved is the harness's own), Chromium follows the
    /// redirect with the cookie it got, and the DOM of the dashboard is printed.
    static func chromiumDashboard(base: String, token: String, work: String) async throws -> String {
        let harness = work + "/signin-harness.html"
        try """
            <!DOCTYPE html><html><body>
            <form method="post" action="\(base)/dashboard/signin"><input type="hidden" name="token" value="\(token)"></form>
            <script>document.forms[0].submit()</script>
            </body></html>
            """.write(toFile: harness, atomically: true, encoding: .utf8)
        let result = try await ProcessRunner.run("chromium", [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--user-data-dir=\(work)/chromium-profile", "--virtual-time-budget=15000", "--dump-dom", "file://\(harness)",
        ])
        guard result.succeeded else { throw SandboxError("chromium failed (\(result.statusDescription)): \(result.standardError.suffix(2000))") }
        return result.standardOutput
    }

    @Test("schedules fire within seconds, retention keeps exactly keep_last, a rehearsal passes, webhooks tell failure and recovery once each, metrics and the dashboard (in Chromium) show it")
    func operations() async throws {
        let (cluster, dbname) = try await makeSampleDatabase("ops")
        let brokenName = uniqueDatabaseName("ops_missing")  // created later, to recover
        let work = NSTemporaryDirectory() + "tsbackup-ops-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let receiver = try await WebhookReceiver.start()
        defer { Task { await receiver.stop() } }
        let port = try SandboxCluster.freeLoopbackPort()
        let connection = "host: 127.0.0.1, port: \(cluster.port), user: postgres, password_env: OPS_PGPASSWORD, backup_jobs: 1"
        let yaml = """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(work)/repo}
            state_file: \(work)/state.sqlite
            jobs: {max_concurrent: 2}
            rehearsal_targets:
              scratch: {host: 127.0.0.1, port: \(cluster.port), user: postgres, password_env: OPS_PGPASSWORD}
            databases:
              metrics:
                {\(connection), dbname: \(dbname), schedule: {cron: "*/4 * * * * *", time_zone: Europe/Berlin}, retention: {keep_last: 2}, rehearsal: {target: scratch}}
              broken:
                {\(connection), dbname: \(brokenName), schedule: {cron: "*/4 * * * * *"}}
              idle:
                {\(connection), dbname: nothing_here}
            webhooks:
              - {url: "\(receiver.url)"}
            tokens:
              - {name: olga, sha256: \(TokenHash.hex(of: Self.operatorToken)), role: operator}
              - {name: alice, sha256: \(TokenHash.hex(of: Self.ownerToken)), role: owner, databases: [metrics]}

            """
        let service = try await Running.start(work: work, port: port, yaml: yaml, environment: ["OPS_PGPASSWORD": cluster.superuserPassword])
        defer { Task { await service.process.stop() } }

        // 1. The per-second schedule fires: scheduled backups of metrics finish, with no one asking.
        try await service.waitUntil("two scheduled backups of metrics") {
            try await service.jobs("metrics").filter { $0["kind"] as? String == "backup" && $0["requested_by"] as? String == "scheduler" && $0["state"] as? String == "finished" }.count >= 3
        }
        // 2. Backups of broken fail: one failure webhook, however many failures.
        try await service.waitUntil("three failed backups of broken") {
            try await service.jobs("broken").filter { $0["state"] as? String == "failed" }.count >= 3
        }
        // The webhook is sent after the first failure is recorded, in the background: wait for it
        // (a state) before counting, instead of assuming it arrived with the job's end.
        try await service.waitUntil("the failure webhook for broken") {
            receiver.received().compactMap(\.json).contains { $0["database"] as? String == "broken" }
        }
        let failures = receiver.received().compactMap(\.json).filter { $0["database"] as? String == "broken" }
        #expect(failures.count == 1, "\(failures)")
        #expect(failures.first?["event"] as? String == "failure")
        #expect(failures.first?["check"] as? String == "backup")
        // 3. The database appears: the next backup works, and one recovery webhook says so.
        try await cluster.createDatabase(brokenName)
        try await service.waitUntil("a recovery webhook for broken") {
            receiver.received().compactMap(\.json).contains { $0["database"] as? String == "broken" && $0["event"] as? String == "recovery" }
        }
        #expect(receiver.received().compactMap(\.json).filter { $0["database"] as? String == "broken" }.map { $0["event"] as? String } == ["failure", "recovery"])

        // 4. Pause the schedules; once metrics is idle, retention has left exactly keep_last = 2.
        for db in ["metrics", "broken"] {
            #expect(try await service.request(.POST, "/api/schedules/\(db)/pause").status == 200)
        }
        try await service.waitUntil("metrics idle") {
            !(try await service.jobs("metrics")).contains { ["queued", "running"].contains($0["state"] as? String ?? "") }
        }
        // Retention ran after backups by itself; run it once more now that nothing else will.
        #expect(try await service.jobs("metrics").contains { $0["kind"] as? String == "retention" && $0["requested_by"] as? String == "retention" })
        // The retention job a backup's end queues may still be on its way (the observer runs
        // after the backup is recorded as finished): 409 until it has ended, then 202.
        var queued = (status: 0, body: "")
        try await service.waitUntil("a retention job accepted") {
            queued = try await service.request(.POST, "/api/databases/metrics/retention")
            return queued.status != 409
        }
        #expect(queued.status == 202, "\(queued.body)")
        try await service.waitUntil("the last retention job ends") {
            try await service.jobs("metrics").first.map { $0["kind"] as? String == "retention" && ["finished", "failed"].contains($0["state"] as? String ?? "") } ?? false
        }
        let backups = (try await service.json("/api/backups?database=metrics") as? [[String: Any]]) ?? []
        #expect(backups.filter { $0["state"] as? String == "complete" }.count == 2, "\(backups.map { $0["id"] ?? "" })")
        let retentionJobs = try await service.jobs("metrics").filter { $0["kind"] as? String == "retention" && $0["state"] as? String == "finished" }
        let deletedByRetention = retentionJobs.flatMap { (($0["report"] as? [String: Any])?["deleted"] as? [String]) ?? [] }
        #expect(!deletedByRetention.isEmpty)
        // Each deletion is in the audit log, by retention.
        let audit = (try await service.json("/api/audit?limit=500") as? [[String: Any]]) ?? []
        let auditedDeletes = Set(audit.filter { $0["action"] as? String == "backup.delete" && $0["actor"] as? String == "retention" }.compactMap { $0["target"] as? String })
        #expect(auditedDeletes == Set(deletedByRetention))
        // The dry run now deletes nothing and says why each is kept.
        let plan = try #require(try await service.json("/api/databases/metrics/retention") as? [String: Any])
        let decisions = (plan["decisions"] as? [[String: Any]]) ?? []
        #expect(decisions.count == 2 && decisions.allSatisfy { $0["action"] as? String == "keep" })

        // 5. A rehearsal through the API passes and leaves no scratch database.
        let (status, body) = try await service.request(.POST, "/api/databases/metrics/rehearsals")
        #expect(status == 202, "\(body)")
        try await service.waitUntil("the rehearsal ends") {
            try await service.jobs("metrics").first { $0["kind"] as? String == "rehearsal" }.map { ["finished", "failed"].contains($0["state"] as? String ?? "") } ?? false
        }
        let rehearsal = try #require(try await service.jobs("metrics").first { $0["kind"] as? String == "rehearsal" })
        #expect(rehearsal["state"] as? String == "finished", "\(rehearsal)")
        let report = try #require(rehearsal["report"] as? [String: Any])
        #expect(report["ok"] as? Bool == true)
        #expect(report["scratch_dropped"] as? Bool == true)
        #expect(try await rehearsalLeftovers(cluster).contains(report["scratch_database"] as? String ?? "?") == false)
        // An owner may not start one.
        #expect(try await service.request(.POST, "/api/databases/metrics/rehearsals", token: Self.ownerToken).status == 403)

        // 6. Metrics.
        let metrics = try await service.request(.GET, "/metrics").body
        let lastSuccess = metrics.split(separator: "\n").first { $0.hasPrefix("tsbackup_last_successful_backup_timestamp_seconds{database=\"metrics\"}") }
        #expect((lastSuccess?.split(separator: " ").last.flatMap { Double($0) } ?? 0) > 1_700_000_000)
        #expect(metrics.contains("tsbackup_last_rehearsal_success{database=\"metrics\"} 1"))
        #expect(metrics.contains("tsbackup_jobs_queued 0"))
        let brokenFailures = metrics.split(separator: "\n").first { $0.hasPrefix("tsbackup_backup_failures_total{database=\"broken\"}") }
        #expect((brokenFailures?.split(separator: " ").last.flatMap { Double($0) } ?? 0) >= 3)

        // A fresh good backup of each scheduled database just before the dashboard: green means
        // a good backup within 1.5 intervals plus ten minutes of grace, and the steps above
        // (retention, a rehearsal) may take longer than that on a loaded machine.
        for db in ["metrics", "broken"] {
            try await service.waitUntil("\(db) idle") {
                !(try await service.jobs(db)).contains { ["queued", "running"].contains($0["state"] as? String ?? "") }
            }
            let (backupStatus, backupBody) = try await service.request(.POST, "/api/databases/\(db)/backups")
            #expect(backupStatus == 202, "\(backupBody)")
            let id = try #require((try JSONSerialization.jsonObject(with: Data(backupBody.utf8)) as? [String: Any])?["id"] as? Int)
            try await service.waitUntil("the backup of \(db) before the dashboard") {
                try await service.jobs(db).first { $0["id"] as? Int == id }.map { ["finished", "failed", "interrupted"].contains($0["state"] as? String ?? "") } ?? false
            }
            #expect(try await service.jobs(db).first { $0["id"] as? Int == id }?["state"] as? String == "finished")
        }

        // 7. The dashboard without a cookie redirects to the sign-in form; in Chromium, signed in,
        //    it shows the databases with their status in words and colour classes, HTML-escaped.
        var plain = HTTPClientRequest(url: service.base + "/dashboard")
        plain.method = .GET
        // (The shared client follows the 303 to the sign-in form.)
        let unsigned = try await HTTPClient.shared.execute(plain, timeout: .seconds(300))
        let unsignedBody = String(buffer: try await unsigned.body.collect(upTo: 1 << 20))
        #expect(unsigned.status.code == 200)
        #expect(unsignedBody.contains(#"action="/dashboard/signin""#))
        #expect(!unsignedBody.contains("data-database"))
        let dom = try await Self.chromiumDashboard(base: service.base, token: Self.operatorToken, work: work)
        #expect(dom.contains("Signed in as <b id=\"user\">olga</b>"), "\(dom.prefix(3000))")
        #expect(dom.contains("data-database=\"metrics\" data-status=\"green\""))
        #expect(dom.contains("data-database=\"broken\" data-status=\"green\""))
        // The never-backed-up database is red, with the status in words too.
        #expect(dom.contains("data-database=\"idle\" data-status=\"red\""))
        #expect(dom.contains("PASSED"))
        #expect(dom.contains("STALE"))
        // An owner sees only their database.
        for sub in ["owner", "wrong"] { try FileManager.default.createDirectory(atPath: work + "/" + sub, withIntermediateDirectories: true) }
        let ownerDom = try await Self.chromiumDashboard(base: service.base, token: Self.ownerToken, work: work + "/owner")
        #expect(ownerDom.contains("data-database=\"metrics\""))
        #expect(!ownerDom.contains("data-database=\"broken\""))
        // A wrong token gets the form again, with a message.
        let refusedDom = try await Self.chromiumDashboard(base: service.base, token: "wrong", work: work + "/wrong")
        #expect(refusedDom.contains("id=\"message\""))
        #expect(!refusedDom.contains("data-database"))
    }

    @Test("a scheduled rehearsal before the first backup is skipped, not a failure: no alert, no failure counted; one asked for by an operator still fails")
    func rehearsalBeforeFirstBackup() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let work = NSTemporaryDirectory() + "tsbackup-rhskip-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work + "/run", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let receiver = try await WebhookReceiver.start()
        defer { Task { await receiver.stop() } }
        let port = try SandboxCluster.freeLoopbackPort()
        // No backup schedule: the repository never holds a backup of "fresh".
        let yaml = """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(work)/repo}
            state_file: \(work)/state.sqlite
            rehearsal_targets:
              scratch: {host: 127.0.0.1, port: \(cluster.port), user: postgres, password_env: RH_PGPASSWORD}
            databases:
              fresh:
                {host: 127.0.0.1, port: \(cluster.port), user: postgres, password_env: RH_PGPASSWORD, dbname: postgres, rehearsal: {target: scratch, schedule: {cron: "*/2 * * * * *"}}}
            webhooks:
              - {url: "\(receiver.url)"}
            tokens:
              - {name: olga, sha256: \(TokenHash.hex(of: Self.operatorToken)), role: operator}

            """
        let service = try await Running.start(work: work, port: port, yaml: yaml, environment: ["RH_PGPASSWORD": cluster.superuserPassword])
        defer { Task { await service.process.stop() } }

        try await service.waitUntil("two scheduled rehearsals of fresh ended") {
            try await service.jobs("fresh").filter { $0["kind"] as? String == "rehearsal" && ["finished", "failed"].contains($0["state"] as? String ?? "") }.count >= 2
        }
        let scheduled = try await service.jobs("fresh").filter { $0["kind"] as? String == "rehearsal" && ["finished", "failed"].contains($0["state"] as? String ?? "") }
        for job in scheduled {
            #expect(job["requested_by"] as? String == "scheduler")
            #expect(job["state"] as? String == "finished", "\(job)")
            let report = try #require(job["report"] as? [String: Any])
            #expect(report["nothing_to_rehearse"] as? Bool == true)
            #expect(report["ok"] as? Bool == false)
        }
        let metrics = try await service.request(.GET, "/metrics").body
        #expect(!metrics.contains("tsbackup_rehearsal_failures_total{database=\"fresh\"} 1"), "\(metrics)")

        // Asked for by an operator, the same rehearsal fails, naming the cause; its failure is
        // the first the alert state sees, so it sends the one failure webhook.
        let (status, body) = try await service.request(.POST, "/api/databases/fresh/rehearsals")
        #expect(status == 202, "\(body)")
        try await service.waitUntil("the operator's rehearsal fails") {
            try await service.jobs("fresh").contains { $0["kind"] as? String == "rehearsal" && $0["requested_by"] as? String == "olga" && $0["state"] as? String == "failed" }
        }
        let asked = try #require(try await service.jobs("fresh").first { $0["requested_by"] as? String == "olga" })
        #expect((asked["error"] as? String)?.contains("Take a backup first") == true, "\(asked)")
        try await service.waitUntil("the failure webhook for fresh") {
            receiver.received().compactMap(\.json).contains { $0["database"] as? String == "fresh" }
        }
        let events = receiver.received().compactMap(\.json).filter { $0["database"] as? String == "fresh" }
        #expect(events.count == 1, "\(events)")
        #expect(events.first?["event"] as? String == "failure")
        #expect(events.first?["check"] as? String == "rehearsal")
        #expect(events.first?["job_id"] as? String == (asked["id"] as? String ?? (asked["id"] as? Int).map(String.init)), "\(events)")
    }
}

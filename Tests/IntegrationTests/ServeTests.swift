import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat
import NIOFoundationEssentialsCompat
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox
import TSBackupService

/// `tsbackup serve` as a real process against a real cluster: an owner's backup and its download,
/// an operator's approved restore with verification, an owner refused, and a shutdown during a
/// backup followed by a restart that runs the job left queued.
@Suite(.serialized) struct ServeTests {
    static let tokens = ["alice": "alice-\(UUID().uuidString)", "olga": "olga-\(UUID().uuidString)"]

    /// A running `tsbackup serve` with its own repository and state file in `work`.
    struct Service {
        let process: BackgroundProcess
        let port: Int
        let work: String

        var base: String { "http://127.0.0.1:\(port)" }

        /// Writes the config (databases on the shared cluster) and starts the service.
        static func start(work: String, cluster: SandboxCluster, databases: [String: String], run: String = "run1") async throws -> Service {
            let port = try SandboxCluster.freeLoopbackPort()
            var yaml = """
                listen: {host: 127.0.0.1, port: \(port)}
                repository: {url: \(work)/repo}
                state_file: \(work)/state.sqlite
                jobs: {max_concurrent: 2}
                databases:

                """
            for (name, dbname) in databases.sorted(by: { $0.key < $1.key }) {
                yaml += "  \(name): {host: 127.0.0.1, port: \(cluster.port), user: postgres, dbname: \(dbname), password_env: SERVE_TEST_PGPASSWORD, backup_jobs: 1}\n"
            }
            yaml += """
                tokens:
                  - {name: alice, sha256: \(TokenHash.hex(of: tokens["alice"]!)), role: owner, databases: [\(databases.keys.sorted().joined(separator: ", "))]}
                  - {name: olga, sha256: \(TokenHash.hex(of: tokens["olga"]!)), role: operator}

                """
            try yaml.write(toFile: work + "/serve.yaml", atomically: true, encoding: .utf8)
            // The process's directory is removed by its watchdog when it ends: keep it apart from the state.
            let directory = work + "/" + run
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let process = try await BackgroundProcess.start(
                name: "serve", command: [CLI.executable, "serve", "--config", work + "/serve.yaml"],
                environment: ["SERVE_TEST_PGPASSWORD": cluster.superuserPassword, "PGPASSWORD": "", "PGHOST": ""], directory: directory)
            try await process.waitForPort(port, timeout: .seconds(600))
            return Service(process: process, port: port, work: work)
        }

        func request(_ method: HTTPMethod, _ path: String, as who: String, body: String? = nil) async throws -> (status: Int, json: Any?) {
            var request = HTTPClientRequest(url: base + path)
            request.method = method
            request.headers.add(name: "Authorization", value: "Bearer \(ServeTests.tokens[who]!)")
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: body))
            }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
            let data = Data(buffer: try await response.body.collect(upTo: 16 << 20))
            return (Int(response.status.code), try? JSONSerialization.jsonObject(with: data))
        }

        /// Polls the job until it has ended (a hang guard, not a timing assertion).
        func waitForJob(_ id: Int, as who: String = "olga", until done: Set<String> = ["finished", "failed", "interrupted"]) async throws -> [String: Any] {
            let deadline = ContinuousClock.now + .seconds(600)
            while ContinuousClock.now < deadline {
                let (status, json) = try await request(.GET, "/api/jobs/\(id)", as: who)
                let job = try #require(json as? [String: Any], "GET /api/jobs/\(id): \(status)")
                if let state = job["state"] as? String, done.contains(state) { return job }
                try await Task.sleep(for: .milliseconds(300))
            }
            throw SandboxError("job \(id) did not end; service log:\n\(process.log().suffix(3000))")
        }

        /// SIGTERM, then waits for the process to exit by itself (no KILL: the test is that it does).
        func terminate() async throws {
            kill(process.pid, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(600)
            while process.isRunning {
                guard ContinuousClock.now < deadline else { throw SandboxError("tsbackup serve did not exit after SIGTERM") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// pg_dump processes whose parent chain leads to `pid`.
    static func pgDumpProcesses(descendingFrom pid: Int32) -> [Int32] {
        pgDumpProcesses().filter { candidate in
            var current = candidate
            for _ in 0..<8 {
                guard let stat = try? String(contentsOfFile: "/proc/\(current)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return false }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                guard fields.count > 1, let parent = Int32(fields[1]), parent > 1 else { return false }
                if parent == pid { return true }
                current = parent
            }
            return false
        }
    }

    /// pg_dump processes whose command line names a path under `directory` (their --file).
    static func pgDumpProcesses(writingUnder directory: String) -> [Int32] {
        pgDumpProcesses().filter { pid in
            let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            return String(decoding: cmdline.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(directory)
        }
    }

    static func pgDumpProcesses() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "pg_dump"
        }
    }

    static func workDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "tsbackup-serve-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// The repository's entries; none while no run has created it (a run stopped in its preflight).
    static func entries(_ work: String) async throws -> [RepositoryEntry] {
        guard FileManager.default.fileExists(atPath: work + "/repo/tsbackup-repository.json") else { return [] }
        return try await RepositoryAccess(path: work + "/repo").with(create: false) { try await $0.entries() }
    }

    static func count(_ cluster: SandboxCluster, _ database: String, _ table: String) async throws -> Int64 {
        try await cluster.withSuperuser(database: database) { try await $0.value("SELECT count(*) FROM \(unescaped: table)", as: Int64.self) }
    }

    /// Runs `body` while a session holds ACCESS EXCLUSIVE on `public.blocker` in an open
    /// transaction; `release` ends it. The session is closed however `body` ends.
    static func holdingBlocker(_ cluster: SandboxCluster, _ database: String, id: Int,
                               statement: String = "LOCK TABLE public.blocker IN ACCESS EXCLUSIVE MODE",
                               _ body: (_ release: @escaping @Sendable () async throws -> Void) async throws -> Void) async throws {
        let holder = try await PostgresConnection.connect(
            configuration: .init(host: "127.0.0.1", port: cluster.port, username: SandboxCluster.superuser,
                                 password: cluster.superuserPassword, database: database, tls: .disable),
            id: id, logger: .init(label: "blocker"))
        do {
            _ = try await holder.query("BEGIN", logger: .init(label: "blocker"))
            _ = try await holder.query(PostgresQuery(unsafeSQL: statement), logger: .init(label: "blocker"))
            try await body { _ = try? await holder.query("ROLLBACK", logger: .init(label: "blocker")) }
        } catch {
            try? await holder.close()
            throw error
        }
        try? await holder.close()
    }

    @Test func ownerBacksUpThroughTheAPIAndDownloadsIt() async throws {
        let (cluster, dbname) = try await makeSampleDatabase("serve_owner")
        let work = try Self.workDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let service = try await Service.start(work: work, cluster: cluster, databases: ["metrics": dbname])
        defer { Task { await service.process.stop() } }

        let (status, json) = try await service.request(.POST, "/api/databases/metrics/backups", as: "alice", body: #"{"label": "on demand"}"#)
        #expect(status == 202)
        let id = try #require((json as? [String: Any])?["id"] as? Int)
        let job = try await service.waitForJob(id, as: "alice")
        #expect(job["state"] as? String == "finished", "\(job)")
        let entryID = try #require(job["entry_id"] as? String)
        let report = try #require(job["report"] as? [String: Any])
        #expect(report["status"] as? String == "complete")
        #expect(report["label"] as? String == "on demand")
        #expect(report["rows"] as? Int ?? 0 > 0)

        // The owner lists and reads it.
        let (listStatus, list) = try await service.request(.GET, "/api/backups", as: "alice")
        #expect(listStatus == 200)
        let listed = try #require((list as? [[String: Any]])?.first { $0["id"] as? String == entryID })
        #expect(listed["database"] as? String == "metrics")
        #expect(listed["state"] as? String == "complete")
        let (_, detail) = try await service.request(.GET, "/api/backups/\(entryID)", as: "alice")
        let manifest = try #require((detail as? [String: Any])?["manifest"] as? [String: Any])
        let files = try #require(manifest["files"] as? [[String: Any]])
        #expect(!files.isEmpty)

        // The download is a tar of the manifest and every file; each file's SHA-256, computed here
        // from the extracted copy, matches the manifest's.
        let tarPath = work + "/download.tar"
        var request = HTTPClientRequest(url: service.base + "/api/backups/\(entryID)/download")
        request.headers.add(name: "Authorization", value: "Bearer \(Self.tokens["alice"]!)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(600))
        #expect(response.status.code == 200)
        #expect(response.headers.first(name: "Content-Type") == "application/x-tar")
        _ = FileManager.default.createFile(atPath: tarPath, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: tarPath))
        for try await chunk in response.body { handle.write(Data(buffer: chunk)) }
        try handle.close()
        let extract = work + "/extracted"
        try FileManager.default.createDirectory(atPath: extract, withIntermediateDirectories: true)
        let untar = try await ProcessRunner.run("tar", ["-xf", tarPath, "-C", extract])
        #expect(untar.succeeded, "\(untar.standardError)")
        let stored = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(extract)/\(entryID)/manifest.json"))) as? [String: Any]
        #expect(stored?["id"] as? String == entryID)
        for file in files {
            let path = try #require(file["path"] as? String)
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(extract)/\(entryID)/\(path)"))
            #expect(SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() == file["sha256"] as? String, "\(path)")
            #expect(Int64(data.count) == (file["bytes"] as? Int).map(Int64.init))
        }

        // The audit log holds the request and the download.
        let (_, audit) = try await service.request(.GET, "/api/audit", as: "olga")
        let entries = try #require(audit as? [[String: Any]])
        #expect(entries.contains { $0["actor"] as? String == "alice" && $0["action"] as? String == "POST /api/databases/{name}/backups" && $0["outcome"] as? String == "allowed" })
        #expect(entries.contains { $0["actor"] as? String == "alice" && ($0["target"] as? String)?.hasSuffix("/download") == true })
        try await service.terminate()
    }

    @Test func operatorApprovesARestoreThatVerifiesAndOwnerIsRefused() async throws {
        let (cluster, dbname) = try await makeSampleDatabase("serve_restore")
        let work = try Self.workDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let service = try await Service.start(work: work, cluster: cluster, databases: ["metrics": dbname])
        defer { Task { await service.process.stop() } }

        let (_, queued) = try await service.request(.POST, "/api/databases/metrics/backups", as: "olga")
        let backupJob = try await service.waitForJob(try #require((queued as? [String: Any])?["id"] as? Int))
        #expect(backupJob["state"] as? String == "finished", "\(backupJob)")
        let entryID = try #require(backupJob["entry_id"] as? String)

        // An owner may ask for a restore into a new database, but not for a promotion.
        let into = uniqueDatabaseName("serve_restored")
        let promotion = try await service.request(.POST, "/api/restore-requests", as: "alice",
                                                  body: #"{"database": "metrics", "backup_id": "\#(entryID)", "promote_to": "\#(dbname)"}"#)
        #expect(promotion.status == 403)
        let created = try await service.request(.POST, "/api/restore-requests", as: "alice",
                                                body: #"{"database": "metrics", "backup_id": "\#(entryID)", "into": "\#(into)"}"#)
        #expect(created.status == 201)
        let requestID = try #require((created.json as? [String: Any])?["id"] as? Int)
        #expect((created.json as? [String: Any])?["state"] as? String == "pending")

        // ... and may not approve it.
        #expect(try await service.request(.POST, "/api/restore-requests/\(requestID)/approve", as: "alice").status == 403)
        let (_, pending) = try await service.request(.GET, "/api/restore-requests/\(requestID)", as: "alice")
        #expect((pending as? [String: Any])?["state"] as? String == "pending")

        // The operator approves: the restore runs as a job and verifies.
        let approved = try await service.request(.POST, "/api/restore-requests/\(requestID)/approve", as: "olga")
        #expect(approved.status == 202)
        let restoreJobID = try #require(((approved.json as? [String: Any])?["job"] as? [String: Any])?["id"] as? Int)
        let restoreJob = try await service.waitForJob(restoreJobID)
        #expect(restoreJob["state"] as? String == "finished", "\(restoreJob)")
        let report = try #require(restoreJob["report"] as? [String: Any])
        #expect(report["ok"] as? Bool == true)
        let checks = try #require(report["checks"] as? [[String: Any]])
        #expect(!checks.isEmpty)

        // Independently: the restored database has the source's rows, counted through the hypertable root.
        #expect(try await Self.count(cluster, into, "public.conditions") == (try await Self.count(cluster, dbname, "public.conditions")))
        #expect(try await Self.count(cluster, into, "public.conditions") > 0)

        let (_, audit) = try await service.request(.GET, "/api/audit?actor=alice", as: "olga")
        let entries = try #require(audit as? [[String: Any]])
        #expect(entries.contains { $0["action"] as? String == "POST /api/restore-requests/{id}/approve" && $0["outcome"] as? String == "refused" })
        #expect(entries.contains { $0["action"] as? String == "POST /api/restore-requests" && $0["status"] as? Int == 403 })
        try await service.terminate()
    }

    /// A backup blocked on a lock is running when SIGTERM arrives: the service cancels it (no
    /// complete-looking entry), marks it interrupted and exits; the second database's backup,
    /// queued behind it (the repository takes one writer), stays queued and runs after a restart.
    @Test func shutdownDuringABackupAndRestartWithAQueuedJob() async throws {
        let (cluster, busyDB) = try await makeSampleDatabase("serve_busy")
        let (_, queuedDB) = try await makeSampleDatabase("serve_queued")
        try await cluster.withSuperuser(database: busyDB) { _ = try await $0.execute("CREATE SEQUENCE public.blocker_seq") }
        let work = try Self.workDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let service = try await Service.start(work: work, cluster: cluster, databases: ["busy": busyDB, "queued": queuedDB])

        // Hold a lock only pg_dump waits for, in an open transaction: an ACCESS EXCLUSIVE lock on
        // a sequence (a rename, rolled back at the end). tsbackup's preflight measures tables,
        // not sequences, so the backup gets past it, stages its entry and starts pg_dump, which
        // then waits to read the sequence's value.
        var busyJob = 0
        var queuedJob = 0
        try await Self.holdingBlocker(cluster, busyDB, id: 1, statement: "ALTER SEQUENCE public.blocker_seq RENAME TO blocker_seq_held") { release in

        let (s1, j1) = try await service.request(.POST, "/api/databases/busy/backups", as: "olga")
        #expect(s1 == 202)
        busyJob = try #require((j1 as? [String: Any])?["id"] as? Int)
        // A second backup of the busy database is refused with the running job.
        let again = try await service.request(.POST, "/api/databases/busy/backups", as: "alice")
        #expect(again.status == 409)
        #expect(((again.json as? [String: Any])?["job"] as? [String: Any])?["id"] as? Int == busyJob)
        let (s2, j2) = try await service.request(.POST, "/api/databases/queued/backups", as: "olga")
        #expect(s2 == 202)
        queuedJob = try #require((j2 as? [String: Any])?["id"] as? Int)

        // Wait until pg_dump itself runs (a child process of the service) and waits for the
        // lock (its read of the sequence), with the entry staged in the repository.
        let deadline = ContinuousClock.now + .seconds(600)
        while true {
            let waiting = try await cluster.withSuperuser(database: busyDB) {
                try await $0.value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%blocker_seq%' AND query NOT LIKE 'ALTER SEQUENCE%'", as: Int64.self)
            }
            let staged = ((try? FileManager.default.contentsOfDirectory(atPath: work + "/repo/backups")) ?? []).contains { $0.hasSuffix(".partial") }
            if waiting > 0 && staged && !Self.pgDumpProcesses(descendingFrom: service.process.pid).isEmpty { break }
            guard ContinuousClock.now < deadline else { throw SandboxError("the backup never waited for the lock; log:\n\(service.process.log().suffix(3000))") }
            try await Task.sleep(for: .milliseconds(200))
        }
        let (_, queuedState) = try await service.request(.GET, "/api/jobs/\(queuedJob)", as: "olga")
        #expect((queuedState as? [String: Any])?["state"] as? String == "queued")

        // SIGTERM; once the queue has cancelled its jobs the lock is let go, so statements waiting
        // on it can end too (waiting for that state, not for a time, keeps the order under load).
        kill(service.process.pid, SIGTERM)
        let stopDeadline = ContinuousClock.now + .seconds(600)
        while !service.process.log().contains("job queue stopping") && ContinuousClock.now < stopDeadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        try await release()
        try await service.terminate()
        }

        // No pg_dump of this repository outlived the service.
        #expect(Self.pgDumpProcesses(writingUnder: work).isEmpty)
        let state = try StateStore(path: work + "/state.sqlite")
        #expect(try state.job(Int64(busyJob))?.state == .interrupted)
        #expect(try state.job(Int64(queuedJob))?.state == .queued)
        let afterStop = try await Self.entries(work)
        #expect(afterStop.allSatisfy { $0.state != .complete }, "\(afterStop.map { ($0.id, $0.state) })")

        // Restart: the queued job runs and completes; nothing of the interrupted run looks complete.
        let restarted = try await Service.start(work: work, cluster: cluster, databases: ["busy": busyDB, "queued": queuedDB], run: "run2")
        defer { Task { await restarted.process.stop() } }
        let finished = try await restarted.waitForJob(queuedJob)
        #expect(finished["state"] as? String == "finished", "\(finished)")
        let entries = try await Self.entries(work)
        let complete = entries.filter { $0.state == .complete }
        #expect(complete.map(\.id) == [finished["entry_id"] as? String])
        #expect(complete.first?.manifest?.source.database == queuedDB)
        let (_, interrupted) = try await restarted.request(.GET, "/api/jobs/\(busyJob)", as: "olga")
        #expect((interrupted as? [String: Any])?["state"] as? String == "interrupted")
        try await restarted.terminate()
    }

    /// The service is killed (SIGKILL) while a backup runs (it waits for a lock in its preflight):
    /// nothing could mark the job, so the next start marks it interrupted and runs the
    /// repository's gc (audited); no entry is complete or left unfinished.
    @Test func killedServiceIsCleanedUpAtTheNextStart() async throws {
        let (cluster, dbname) = try await makeSampleDatabase("serve_killed")
        try await cluster.withSuperuser(database: dbname) { _ = try await $0.execute("CREATE TABLE public.blocker (id int)") }
        let work = try Self.workDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let service = try await Service.start(work: work, cluster: cluster, databases: ["metrics": dbname])
        var jobID = 0
        try await Self.holdingBlocker(cluster, dbname, id: 2) { release in
        let (_, queued) = try await service.request(.POST, "/api/databases/metrics/backups", as: "alice")
        jobID = try #require((queued as? [String: Any])?["id"] as? Int)
        let deadline = ContinuousClock.now + .seconds(600)
        while true {
            let waitingDump = try await cluster.withSuperuser(database: dbname) {
                try await $0.value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", as: Int64.self)
            }
            if waitingDump > 0 { break }
            guard ContinuousClock.now < deadline else { throw SandboxError("the backup never waited for the lock; log:\n\(service.process.log().suffix(3000))") }
            try await Task.sleep(for: .milliseconds(200))
        }
        kill(service.process.pid, SIGKILL)
        while service.process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        // The killed service's pg_dump is an orphan now: end its sessions, then let the lock go.
        _ = try await cluster.withSuperuser(database: dbname) {
            try await $0.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'tsbackup-serve'")
        }
        try await release()
        }
        let before = try await Self.entries(work)
        #expect(!before.contains { $0.state == .complete })

        let restarted = try await Service.start(work: work, cluster: cluster, databases: ["metrics": dbname], run: "run2")
        defer { Task { await restarted.process.stop() } }
        let job = try await restarted.waitForJob(jobID)
        #expect(job["state"] as? String == "interrupted")
        let after = try await Self.entries(work)
        #expect(after.allSatisfy { $0.state != .complete }, "\(after.map { ($0.id, $0.state) })")
        #expect(!after.contains { $0.state == .incomplete }, "\(after.map { ($0.id, $0.state) })")
        let (_, audit) = try await restarted.request(.GET, "/api/audit?actor=service", as: "olga")
        #expect((audit as? [[String: Any]])?.contains { $0["action"] as? String == "repo.gc" && $0["outcome"] as? String == "done" } == true)
        try await restarted.terminate()
    }
}

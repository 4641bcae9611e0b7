import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Testing
import TSBackup
import TSBackupSandbox
import TSBackupService

/// `tsbackup serve` as a real process: HTTPS with a certificate made here, the backup list seeing
/// backups the CLI makes and deletes beside the service (the listing cache revalidates), and
/// retention keeping a backup while a download streams it.
@Suite(.serialized) struct ServeGapsTests {
    static let token = "olga-\(UUID().uuidString)"

    static func work() throws -> String {
        let path = NSTemporaryDirectory() + "tsbackup-servegaps-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path + "/run", withIntermediateDirectories: true)
        return path
    }

    static func start(_ work: String, yaml: String, port: Int, environment: [String: String] = [:]) async throws -> BackgroundProcess {
        try yaml.write(toFile: work + "/serve.yaml", atomically: true, encoding: .utf8)
        let process = try await BackgroundProcess.start(name: "serve", command: [CLI.executable, "serve", "--config", work + "/serve.yaml"],
                                                        environment: environment, directory: work + "/run")
        try await process.waitForPort(port, timeout: .seconds(600))
        return process
    }

    static func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)" + path)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 64 << 20)))
    }

    static func post(_ port: Int, _ path: String) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)" + path)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        let body = try await response.body.collect(upTo: 1 << 20)
        return try #require(try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any], "POST \(path): \(response.status)")
    }

    static func backupIDs(_ port: Int) async throws -> [String] {
        let (status, body) = try await get(port, "/api/backups")
        #expect(status == 200, "\(body)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]])
        return list.compactMap { $0["id"] as? String }
    }

    static func waitForJob(_ port: Int, _ id: Int, _ process: BackgroundProcess) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < deadline {
            let job = try #require(try JSONSerialization.jsonObject(with: Data(try await get(port, "/api/jobs/\(id)").body.utf8)) as? [String: Any])
            if let state = job["state"] as? String, ["finished", "failed", "interrupted"].contains(state) { return job }
            try await Task.sleep(for: .milliseconds(300))
        }
        throw SandboxError("job \(id) did not end; log:\n\(process.log().suffix(3000))")
    }

    /// Polls until `condition` holds; a hang guard of ten minutes, not a timing assertion.
    static func waitUntil(_ what: String, _ process: BackgroundProcess, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(300))
        }
        throw SandboxError("\(what) did not happen; log:\n\(process.log().suffix(3000))")
    }

    static func backup(_ cluster: SandboxCluster, _ database: String, repository: String) async throws -> String {
        let result = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", repository, "--json"],
                                       environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(result.exitCode == 0, "\(result.standardError)")
        return try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
    }

    /// A sample database and a scratch directory whose repository holds one backup of it.
    struct Setup {
        var cluster: SandboxCluster
        var database: String
        var work: String
        var repository: String { work + "/repo" }
        /// The backup taken first.
        var backup: String
    }

    static func setUp(_ name: String) async throws -> Setup {
        let (cluster, database) = try await makeSampleDatabase(name)
        let work = try Self.work()
        do {
            return Setup(cluster: cluster, database: database, work: work, backup: try await backup(cluster, database, repository: work + "/repo"))
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            throw error
        }
    }

    /// Starts the service on `setup`'s repository with the database as `metrics` (`options` added
    /// to its line) and the operator token; the password comes from `passwordVariable`.
    static func startService(_ setup: Setup, passwordVariable: String, options: String) async throws -> (port: Int, process: BackgroundProcess) {
        let port = try SandboxCluster.freeLoopbackPort()
        let yaml = """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(setup.repository)}
            state_file: \(setup.work)/state.sqlite
            databases:
              metrics: {host: 127.0.0.1, port: \(setup.cluster.port), user: postgres, dbname: \(setup.database), password_env: \(passwordVariable), \(options)}
            tokens:
              - {name: olga, sha256: \(TokenHash.hex(of: Self.token)), role: operator}

            """
        let process = try await start(setup.work, yaml: yaml, port: port,
                                      environment: [passwordVariable: setup.cluster.superuserPassword, "PGPASSWORD": ""])
        return (port, process)
    }

    /// An operator's `DELETE /api/backups/{id}`: the status and the body.
    static func delete(_ port: Int, _ id: String) async throws -> (status: HTTPResponseStatus, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/backups/\(id)")
        request.method = .DELETE
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        return (response.status, String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    // MARK: TLS

    @Test("with tls: configured the service speaks HTTPS only, with the configured certificate (checked by curl --cacert)")
    func servesHTTPSWithTheConfiguredCertificate() async throws {
        let work = try Self.work()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let openssl = try await ProcessRunner.run("openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", work + "/key.pem", "-out", work + "/cert.pem"])
        #expect(openssl.succeeded, "\(openssl.standardError)")
        let port = try SandboxCluster.freeLoopbackPort()
        let yaml = """
            listen: {host: 127.0.0.1, port: \(port)}
            tls: {certificate: \(work)/cert.pem, key: \(work)/key.pem}
            repository: {url: \(work)/repo}
            state_file: \(work)/state.sqlite
            databases:
              metrics: {host: 127.0.0.1, port: 1, dbname: metrics}
            tokens:
              - {name: olga, sha256: \(TokenHash.hex(of: Self.token)), role: operator}

            """
        let process = try await Self.start(work, yaml: yaml, port: port)
        defer { Task { await process.stop() } }
        let base = "https://127.0.0.1:\(port)"
        let health = try await ProcessRunner.run("curl", ["-sS", "--max-time", "300", "--cacert", work + "/cert.pem", base + "/health"])
        #expect(health.exitCode == 0, "\(health.standardError)")
        #expect(health.standardOutput == "ok")
        // The API over TLS, with the token; and the certificate curl saw is the configured one.
        let status = try await ProcessRunner.run("curl", ["-sS", "--max-time", "300", "--cacert", work + "/cert.pem", "-w", "\n%{http_code}",
                                                          "-H", "Authorization: Bearer \(Self.token)", base + "/api/status"])
        #expect(status.exitCode == 0, "\(status.standardError)")
        #expect(status.standardOutput.hasSuffix("\n200"), "\(status.standardOutput)")
        #expect(status.standardOutput.contains("\"accepting_jobs\":true"))
        let unauthorized = try await ProcessRunner.run("curl", ["-sS", "--max-time", "300", "--cacert", work + "/cert.pem", "-o", "/dev/null",
                                                                "-w", "%{http_code}", base + "/api/status"])
        #expect(unauthorized.standardOutput == "401")
        // Without the certificate as a trust anchor the client refuses it (exit 60: peer certificate cannot be authenticated).
        let untrusted = try await ProcessRunner.run("curl", ["-sS", "--max-time", "300", base + "/health"])
        #expect(untrusted.exitCode == 60, "\(untrusted.exitCode) \(untrusted.standardError)")
        // Plain HTTP on the same port gets no answer (no HTTP fallback).
        let plain = try await ProcessRunner.run("curl", ["-sS", "--max-time", "300", "-o", "/dev/null", "-w", "%{http_code}",
                                                         "http://127.0.0.1:\(port)/health"])
        #expect(plain.exitCode != 0 || plain.standardOutput != "200", "\(plain.exitCode) \(plain.standardOutput)")
        #expect(process.isRunning)
    }

    // MARK: The listing cache

    @Test("the backup list shows backups the CLI makes and deletes beside the service, and the service's own, while the listing is cached")
    func backupListSeesChangesMadeBesideTheService() async throws {
        let setup = try await Self.setUp("serve_cache")
        defer { try? FileManager.default.removeItem(atPath: setup.work) }
        let (cluster, database, repository, first) = (setup.cluster, setup.database, setup.repository, setup.backup)
        let (port, process) = try await Self.startService(setup, passwordVariable: "CACHE_PGPASSWORD", options: "backup_jobs: 1")
        defer { Task { await process.stop() } }
        #expect(try await Self.backupIDs(port) == [first])
        #expect(try await Self.backupIDs(port) == [first])

        // A backup by the CLI beside the service appears in the next listing.
        let second = try await Self.backup(cluster, database, repository: repository)
        #expect(try await Self.backupIDs(port) == [first, second])
        // A deletion by the CLI disappears from it.
        let deleted = try await CLI.run(["delete", first, "--repo", repository, "--yes"])
        #expect(deleted.exitCode == 0, "\(deleted.standardError)")
        #expect(try await Self.backupIDs(port) == [second])
        // The service's own backup is listed as soon as its job has ended.
        let job = try await Self.post(port, "/api/databases/metrics/backups")
        let ended = try await Self.waitForJob(port, try #require(job["id"] as? Int), process)
        #expect(ended["state"] as? String == "finished", "\(ended)")
        let third = try #require(ended["entry_id"] as? String)
        #expect(try await Self.backupIDs(port) == [second, third])
        // And the service's own deletion.
        let response = try await Self.delete(port, second)
        let deleteJob = try #require(try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any], "\(response.status)")
        let deleteEnded = try await Self.waitForJob(port, try #require(deleteJob["id"] as? Int), process)
        #expect(deleteEnded["state"] as? String == "finished", "\(deleteEnded)")
        #expect(try await Self.backupIDs(port) == [third])
    }

    // MARK: Retention and a running download

    /// A backup retention would delete is being downloaded (a slow client holds the stream
    /// open): the dry run says it is in use, and retention keeps it; once the client has gone,
    /// retention deletes it.
    @Test("retention keeps a backup while a download streams it, and deletes it after")
    func retentionKeepsABackupWhileItIsDownloaded() async throws {
        let setup = try await Self.setUp("serve_hold")
        defer { try? FileManager.default.removeItem(atPath: setup.work) }
        let (work, repository, newest) = (setup.work, setup.repository, setup.backup)
        // An older copy of it with a large extra file (so a slow download stays open for long),
        // committed through the repository's API with a manifest that lists the file.
        let old = try await RepositoryAccess(path: repository).with(create: false) { repo -> String in
            let (entry, manifest) = try await repo.completeManifest(newest)
            return try await repo.withLock(command: "test plant") { _ in
                let when = manifest.startedAt.addingTimeInterval(-86_400 * 3)
                let id = try await repo.newID(now: when)
                let staged = try await repo.beginEntry(id)
                for file in entry.files {
                    try FileManager.default.createDirectory(atPath: ((staged.directory + "/" + file.path) as NSString).deletingLastPathComponent,
                                                            withIntermediateDirectories: true)
                    try FileManager.default.copyItem(atPath: entry.location + "/" + file.path, toPath: staged.directory + "/" + file.path)
                }
                let padding = Data(repeating: 0x5a, count: 48 << 20)
                try padding.write(to: URL(fileURLWithPath: staged.directory + "/padding.bin"))
                var copy = manifest
                copy.id = id
                copy.startedAt = when
                copy.files.append(BackupManifest.FileEntry(path: "padding.bin", bytes: Int64(padding.count), sha256: FileSystem.sha256(of: padding)))
                try await repo.commitEntry(staged, manifest: copy)
                return id
            }
        }
        let (port, process) = try await Self.startService(setup, passwordVariable: "HOLD_PGPASSWORD", options: "retention: {keep_last: 1}")
        defer { Task { await process.stop() } }
        func decision(_ id: String) async throws -> [String: Any] {
            let plan = try #require(try JSONSerialization.jsonObject(with: Data(try await Self.get(port, "/api/databases/metrics/retention").body.utf8)) as? [String: Any])
            let decisions = try #require(plan["decisions"] as? [[String: Any]])
            return try #require(decisions.first { $0["id"] as? String == id })
        }
        #expect(try await decision(old)["action"] as? String == "delete")

        // A client that reads 4 KiB/s: the 48 MiB stream stays open for over three hours, far
        // longer than any wait below (at 64 KiB/s it ended after 13 minutes, which a loaded
        // machine's retention job and hang guards could reach). The test stops it.
        try FileManager.default.createDirectory(atPath: work + "/curl", withIntermediateDirectories: true)
        let curl = try await BackgroundProcess.start(
            name: "slow-download",
            command: ["curl", "-sS", "--limit-rate", "4k", "-o", work + "/download.tar", "-H", "Authorization: Bearer \(Self.token)",
                      "http://127.0.0.1:\(port)/api/backups/\(old)/download"],
            directory: work + "/curl")
        try await Self.waitUntil("the download holding the backup", process) {
            let d = try await decision(old)
            return d["action"] as? String == "keep" && ((d["reasons"] as? [String]) ?? []).contains("in use by a running job")
        }
        let job = try await Self.post(port, "/api/databases/metrics/retention")
        let kept = try await Self.waitForJob(port, try #require(job["id"] as? Int), process)
        #expect(kept["state"] as? String == "finished", "\(kept)")
        #expect(FileManager.default.fileExists(atPath: repository + "/backups/\(old)/manifest.json"))
        #expect(curl.isRunning, "the download was still streaming while retention ran")
        // An operator's DELETE is refused while the download streams (409, delete it again after).
        let (refusedStatus, refusal) = try await Self.delete(port, old)
        #expect(refusedStatus == .conflict, "\(refusal)")
        #expect(refusal.contains("is being downloaded") && refusal.contains("after the download has ended"), "\(refusal)")
        #expect(FileManager.default.fileExists(atPath: repository + "/backups/\(old)/manifest.json"))
        #expect(curl.isRunning, "the download was still streaming when DELETE was refused")

        // The client goes away: the hold ends with the stream, and retention deletes the backup.
        await curl.stop()
        try await Self.waitUntil("the hold to end", process) { try await decision(old)["action"] as? String == "delete" }
        let again = try await Self.post(port, "/api/databases/metrics/retention")
        let deleted = try await Self.waitForJob(port, try #require(again["id"] as? Int), process)
        #expect(deleted["state"] as? String == "finished", "\(deleted)")
        #expect(!FileManager.default.fileExists(atPath: repository + "/backups/\(old)"))
        #expect(try await Self.backupIDs(port) == [newest])
    }
}

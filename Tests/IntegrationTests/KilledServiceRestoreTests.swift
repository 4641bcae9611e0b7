import AsyncHTTPClient
import NIOHTTP1
import PostgresNIO
import Foundation
import Testing
import TSBackup
import TSBackupSandbox
import TSBackupService

/// Issue 14, item 1: the kill campaign's last two violations. `tsbackup serve` SIGKILLed while
/// its restore job was (1) between CREATE DATABASE and the marker comment, or (2) past the
/// verification but before the job's report was recorded, left a restored database that no
/// report named. Now the database is created already marked (psql runs the pair and finishes it
/// without tsbackup) and keeps its marker until the report is stored; the service's next start
/// drops it and says so in its audit log. Each kill is made deterministic with the
/// `TSBACKUP_TEST_PAUSE` seam; nothing waits for a duration.
@Suite(.serialized) struct KilledServiceRestoreTests {
    static func start(work: String, cluster: SandboxCluster, dbname: String, run: String, environment: [String: String] = [:]) async throws -> ServeTests.Service {
        let port = try SandboxCluster.freeLoopbackPort()
        let yaml = """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(work)/repo}
            state_file: \(work)/state.sqlite
            databases:
              metrics: {host: 127.0.0.1, port: \(cluster.port), user: postgres, dbname: \(dbname), password_env: SERVE_TEST_PGPASSWORD, backup_jobs: 1}
            tokens:
              - {name: alice, sha256: \(TokenHash.hex(of: ServeTests.tokens["alice"]!)), role: owner, databases: [metrics]}
              - {name: olga, sha256: \(TokenHash.hex(of: ServeTests.tokens["olga"]!)), role: operator}

            """
        try yaml.write(toFile: work + "/serve.yaml", atomically: true, encoding: .utf8)
        let directory = work + "/" + run
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let process = try await BackgroundProcess.start(
            name: "serve", command: [CLI.executable, "serve", "--config", work + "/serve.yaml"],
            environment: environment.merging(["SERVE_TEST_PGPASSWORD": cluster.superuserPassword, "PGPASSWORD": "", "PGHOST": ""]) { $1 },
            directory: directory)
        try await process.waitForPort(port, timeout: .seconds(600))
        return ServeTests.Service(process: process, port: port, work: work)
    }

    static func comment(_ cluster: SandboxCluster, _ database: String) async throws -> String? {
        try await cluster.withSuperuser {
            try await $0.values("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = \(database)", as: String?.self).first ?? nil
        }
    }

    static func exists(_ cluster: SandboxCluster, _ database: String) async throws -> Bool {
        try await cluster.withSuperuser { try await $0.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(database))", as: Bool.self) }
    }

    @Test("a service killed in a restore job's former windows: the next start names the database in its audit log and drops it",
          arguments: ["create database: before the marker", "record the restore report"])
    func killedRestoreJob(step: String) async throws {
        let faults = ServerFaultTests()
        // A cluster of its own: on the shared one, another test's restore sweeps marked databases
        // whose process is gone, and would drop (and name, in its own output) the killed job's
        // database before this service's next start could: that failed the full suite under load.
        try await faults.withSampleCluster { cluster in
            try await killedRestoreJob(step: step, cluster: cluster, dbname: "faults", faults: faults)
        }
    }

    func killedRestoreJob(step: String, cluster: SandboxCluster, dbname: String, faults: ServerFaultTests) async throws {
        let work = try ServeTests.workDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let backupID = try await ServeGapsTests.backup(cluster, dbname, repository: work + "/repo")
        let into = uniqueDatabaseName("killed_sr")
        let pause = work + "/pause"

        let first = try await Self.start(work: work, cluster: cluster, dbname: dbname, run: "run1", environment: ["TSBACKUP_TEST_PAUSE": "\(step)=\(pause)"])
        let created = try await first.request(.POST, "/api/restore-requests", as: "alice",
                                              body: #"{"database": "metrics", "backup_id": "\#(backupID)", "into": "\#(into)"}"#)
        let requestID = try #require((created.json as? [String: Any])?["id"] as? Int, "\(created)")
        let approved = try await first.request(.POST, "/api/restore-requests/\(requestID)/approve", as: "olga")
        let jobID = try #require(((approved.json as? [String: Any])?["job"] as? [String: Any])?["id"] as? Int, "\(approved)")
        try await faults.waitUntil("the restore job reaching \"\(step)\"", seconds: 600) { FileManager.default.fileExists(atPath: pause) }
        #expect(try await Self.exists(cluster, into), "the database exists at the pause")

        // SIGKILL: no cleanup code runs. psql, holding the pause between its two statements in the
        // first case, is not tsbackup and goes on once the pause ends.
        #expect(kill(first.process.pid, SIGKILL) == 0)
        try await faults.waitUntil("the killed service to be gone", seconds: 600) { kill(first.process.pid, 0) != 0 }
        try? FileManager.default.removeItem(atPath: pause)
        try await faults.waitUntil("the database to carry the killed run's marker", seconds: 600) {
            try await Self.comment(cluster, into).flatMap(InterruptedRuns.Owner.parse)?.pid == first.process.pid
        }

        let second = try await Self.start(work: work, cluster: cluster, dbname: dbname, run: "run2")
        let job = try await second.waitForJob(jobID)
        #expect(job["state"] as? String == "interrupted", "\(job)")
        // The start's clean-up runs beside the HTTP server: wait for its audit entry.
        var details: [String] = []
        try await faults.waitUntil("the service's clean-up of interrupted restores", seconds: 600) {
            let (_, audit) = try await second.request(.GET, "/api/audit?actor=service", as: "olga")
            details = (audit as? [[String: Any]] ?? []).filter { $0["action"] as? String == "restore.cleanup" }.compactMap { $0["detail"] as? String }
            return !details.isEmpty
        }
        #expect(details.contains { $0.contains("Dropped the database \(into) on") && $0.contains("interrupted restore") },
                "\(details); service log: \(second.process.log().suffix(3000))")
        #expect(try await !Self.exists(cluster, into), "the killed job's database was dropped")
        try await second.terminate()
    }
}

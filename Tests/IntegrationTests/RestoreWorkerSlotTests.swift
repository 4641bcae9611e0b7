import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Every database with TimescaleDB keeps a scheduler, and a slot of
/// `timescaledb.max_background_workers`, for as long as it exists. When the pool is full a
/// restore is refused in its preflight, before it creates anything, instead of failing its
/// "TimescaleDB scheduler running" check after all the work (CI, with over 150 databases).
@Suite("restore preflight: a slot for the restored database's TimescaleDB scheduler")
struct RestoreWorkerSlotTests {
    static let scheduler = "TimescaleDB Background Worker Scheduler"

    /// Waits until exactly `databases` have a running scheduler: a state, with a hang guard only
    /// (a scheduler that found the pool busy is started on the launcher's next round, a minute on).
    static func waitForSchedulers(_ cluster: SandboxCluster, exactly databases: [String]) async throws {
        let deadline = ContinuousClock.now + .seconds(600)
        var running: [String] = []
        while ContinuousClock.now < deadline {
            running = try await cluster.withSuperuser { session in
                try await session.values(
                    "SELECT DISTINCT datname::text FROM pg_stat_activity WHERE backend_type = \(scheduler) AND datname IS NOT NULL ORDER BY 1",
                    as: String.self)
            }
            if running == databases.sorted() { return }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw SandboxError("hang guard: schedulers run in \(running), expected \(databases.sorted())")
    }

    @Test("a full timescaledb.max_background_workers is refused (exit 5) naming it, with no database created; with a slot free the restore succeeds")
    func fullPool() async throws {
        let backup = try await BackedUpDatabase.make("slots", backupOptions: [])
        defer { backup.scratch.remove() }
        // Three slots: the launcher's and two databases' schedulers.
        try await SandboxCluster.with(.init(settings: ["timescaledb.max_background_workers": "3"])) { cluster in
            let fillers = ["filler_a", "filler_b"]
            for name in fillers { try await cluster.createDatabase(name) }
            try await Self.waitForSchedulers(cluster, exactly: fillers)

            let refused = try await backup.restore(["--into", "copy", "--json"], target: cluster)
            #expect(refused.exitCode == 5, "\(refused.standardOutput) \(refused.standardError)")
            #expect(refused.standardError.contains("timescaledb.max_background_workers is 3"), "\(refused.standardError)")
            #expect(refused.standardError.contains("3 are in use: the launcher and 2 databases' schedulers"), "\(refused.standardError)")
            #expect(refused.standardError.contains("restart the server"))
            #expect(try await databaseExists(cluster, "copy") == false)
            // --json: the report says where it stopped and why.
            let report = try JSONOutput.decode(Restore.Report.self, from: Data(refused.standardOutput.utf8))
            #expect(!report.ok)
            #expect(report.steps.map(\.name) == ["preflight"])
            #expect(report.steps.first?.detail?.contains("timescaledb.max_background_workers") == true)
            // The fillers' schedulers are untouched.
            try await Self.waitForSchedulers(cluster, exactly: fillers)

            // Dropping a database stops its scheduler and frees its slot.
            try await cluster.withSuperuser { try await $0.execute("DROP DATABASE filler_b WITH (FORCE)") }
            try await Self.waitForSchedulers(cluster, exactly: ["filler_a"])
            let restored = try await backup.restore(["--into", "copy", "--json"], target: cluster)
            #expect(restored.exitCode == 0, "\(restored.standardOutput) \(restored.standardError)")
            let done = try JSONOutput.decode(Restore.Report.self, from: Data(restored.standardOutput.utf8))
            #expect(done.ok)
            #expect(done.checks.contains { $0.check == "TimescaleDB scheduler" && $0.actual == "running" })
            // It took the pool's last slot: said so, since no job worker can start now.
            #expect(done.warnings.contains { $0.contains("leaving none for job workers") }, "\(done.warnings)")
            try await Self.waitForSchedulers(cluster, exactly: ["copy", "filler_a"])
        }
    }

    @Test("max_worker_processes held by the launchers and schedulers is refused too (exit 5), naming it, with no database created")
    func fullWorkerProcesses() async throws {
        let backup = try await BackedUpDatabase.make("slotsmwp", backupOptions: [])
        defer { backup.scratch.remove() }
        // Four PostgreSQL slots: the logical replication launcher, TimescaleDB's launcher and two
        // schedulers; TimescaleDB's own pool has room to spare.
        try await SandboxCluster.with(.init(settings: ["max_worker_processes": "4", "timescaledb.max_background_workers": "16"])) { cluster in
            let fillers = ["filler_a", "filler_b"]
            for name in fillers { try await cluster.createDatabase(name) }
            try await Self.waitForSchedulers(cluster, exactly: fillers)

            let refused = try await backup.restore(["--into", "copy"], target: cluster)
            #expect(refused.exitCode == 5, "\(refused.standardOutput) \(refused.standardError)")
            #expect(refused.standardError.contains("max_worker_processes is 4 and 4 are held"), "\(refused.standardError)")
            #expect(refused.standardError.contains("logical replication launcher"), "\(refused.standardError)")
            #expect(try await databaseExists(cluster, "copy") == false)
        }
    }
}

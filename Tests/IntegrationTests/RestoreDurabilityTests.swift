import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// WAL flushes of a restore, counted by `pg_stat_wal.wal_sync` on a durable (fsync on) cluster:
/// a counter, not a timing. tsbackup's sessions on the new database commit asynchronously until
/// the final WAL flush, so its flushes come from the WAL writer and checkpoints, not from one
/// commit per table.
@Suite("restore durability: WAL syncs")
struct RestoreDurabilityTests {
    /// Cluster-wide WAL syncs so far.
    static func walSyncs(_ cluster: SandboxCluster) async throws -> Int64 {
        try await cluster.withSuperuser { try await $0.value("SELECT wal_sync FROM pg_stat_wal", as: Int64.self) }
    }

    /// Relations a database-wide ANALYZE visits: what one synchronous commit per table costs.
    static func analyzedRelations(_ cluster: SandboxCluster, _ database: String) async throws -> Int64 {
        try await cluster.withSuperuser(database: database) {
            try await $0.value("SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm', 'p') AND relpersistence <> 't'", as: Int64.self)
        }
    }

    /// The procedure as TimescaleDB documents it, on a custom-format dump: serial pg_restore,
    /// every statement committed synchronously.
    static func documentedRestore(_ cluster: SandboxCluster, dump: String, into: String) async throws {
        try await cluster.withSuperuser { try await $0.execute("CREATE DATABASE \(quoteIdentifier(into))") }
        try await cluster.withSuperuser(database: into) { session in
            try await session.execute("CREATE EXTENSION timescaledb")
            try await session.execute("SELECT timescaledb_pre_restore()")
        }
        let pgRestore = try await PostgresTools.locate("pg_restore", minimumMajor: 15)
        let result = try await ProcessRunner.run(pgRestore.path, ["--dbname=\(into)", "--no-password", dump],
                                                 environment: cluster.settings(database: into).childProcessEnvironment())
        guard result.succeeded else { throw SandboxError("pg_restore: \(result.standardError)") }
        try await cluster.withSuperuser(database: into) { try await $0.execute("SELECT timescaledb_post_restore()") }
    }

    static func dropDatabase(_ cluster: SandboxCluster, _ name: String) async throws {
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)") }
    }

    @Test("startup settings reach the session without a statement")
    func startupSettings() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let settings = cluster.settings().with(setting: "synchronous_commit", "off")
        let value = try await DatabaseSession.with(settings) { try await $0.value("SHOW synchronous_commit", as: String.self) }
        #expect(value == "off")
    }

    @Test("a verified restore flushes WAL far less often than once per table")
    func fewWalSyncs() async throws {
        // Autovacuum off: its workers force synchronous commits ("local") while analysing freshly
        // loaded tables, whenever its launcher happens to visit; that is PostgreSQL's, not
        // tsbackup's, and would make the count depend on timing.
        try await SandboxCluster.with(.init(durable: true, settings: ["autovacuum": "off"])) { cluster in
            try await cluster.createDatabase("source")
            try await cluster.withSuperuser(database: "source") { try await SampleData(.small).load(into: $0) }
            let scratch = try ScratchDirectory("wal")
            defer { scratch.remove() }
            let backup = try await runBackup(cluster, "source", repository: scratch.path + "/repo")
            #expect(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id

            let before = try await Self.walSyncs(cluster)
            let result = try await CLI.run(["restore", id, "--repo", scratch.path + "/repo", "--target", cluster.url(database: "postgres"),
                                            "--into", "restored", "--jobs", "2", "--json"],
                                           environment: ["PGPASSWORD": cluster.superuserPassword])
            let after = try await Self.walSyncs(cluster)
            #expect(result.exitCode == 0, "\(result.standardError)")
            let relations = try await Self.analyzedRelations(cluster, "restored")
            // One synchronous commit per analysed table alone would be `relations` syncs; what is
            // left are the WAL writer's background flushes, CREATE DATABASE and the final flush.
            print("restore wal_sync delta \(after - before) for \(relations) relations")
            #expect(after - before < relations, "wal_sync delta \(after - before), relations \(relations)")
        }
    }

    /// "Complete" means durable: the restore reports success only after its WAL is flushed. The
    /// server is stopped the hard way (`pg_ctl -m immediate`: WAL still in the server's buffers
    /// is lost, as in a crash) right after the restore returned, and restarted with crash
    /// recovery. The WAL writer is slowed to its maximum delay, so without the final flush the
    /// restore's last asynchronous commits (ANALYZE, leaving restore mode, resetting the
    /// database's synchronous_commit) would still sit in those buffers.
    @Test("a restore that returned survives a crash right after it")
    func durableAfterCrash() async throws {
        try await SandboxCluster.with(.init(durable: true, settings: ["autovacuum": "off", "wal_writer_delay": "'10s'"])) { cluster in
            try await cluster.createDatabase("source")
            try await cluster.withSuperuser(database: "source") { try await SampleData(.small).load(into: $0) }
            let scratch = try ScratchDirectory("walcrash")
            defer { scratch.remove() }
            let backup = try await runBackup(cluster, "source", repository: scratch.path + "/repo")
            #expect(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let result = try await CLI.run(["restore", id, "--repo", scratch.path + "/repo", "--target", cluster.url(database: "postgres"),
                                            "--into", "restored", "--jobs", "2", "--json"],
                                           environment: ["PGPASSWORD": cluster.superuserPassword])
            try #require(result.exitCode == 0, "\(result.standardError)")
            let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
            #expect(report.steps.last?.name == "make durable (flush WAL)")
            #expect(!report.steps.contains { $0.name == "checkpoint" })

            try await cluster.stopImmediately()
            try await cluster.restart()

            #expect(try await contentDigests(cluster, "restored") == contentDigests(cluster, "source"))
            let settings = try await cluster.withSuperuser {
                try await $0.value("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'restored'",
                                   as: Int64.self)
            }
            // Restore mode left and synchronous_commit reset: the restore's very last commits.
            #expect(settings == 0, "database-level settings left on the restored database after the crash")
            let restoredChunks = try await cluster.withSuperuser(database: "restored") {
                try await $0.value("SELECT count(*) FROM _timescaledb_catalog.chunk", as: Int64.self)
            }
            let expectedChunks = try await cluster.withSuperuser(database: "source") {
                try await $0.value("SELECT count(*) FROM _timescaledb_catalog.chunk", as: Int64.self)
            }
            #expect(restoredChunks == expectedChunks)
            let analyzed = try await cluster.withSuperuser(database: "restored") {
                try await $0.value("SELECT count(*) FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '_timescaledb_internal'", as: Int64.self)
            }
            // ANALYZE ran beside the verification, among the last commits.
            #expect(analyzed > 0, "the chunks' statistics were lost in the crash")
        }
    }

    /// Before/after figures for the report: the documented procedure against tsbackup, 3 runs
    /// each, medians. Set TSBACKUP_MEASURE_WAL=1 (and TSBACKUP_MEASURE_WAL_BEFORE=<an older
    /// tsbackup binary> to compare); prints, asserts nothing about the ratio.
    @Test("WAL syncs of the documented procedure and of tsbackup restore (measurement)",
          .enabled(if: ProcessInfo.processInfo.environment["TSBACKUP_MEASURE_WAL"] == "1"))
    func measure() async throws {
        let environment = ProcessInfo.processInfo.environment
        let hours = Int(environment["TSBACKUP_MEASURE_WAL_HOURS"] ?? "") ?? 400
        // TSBACKUP_MEASURE_WAL_AUTOVACUUM=off separates autovacuum's synchronous commits out.
        var settings = ["max_locks_per_transaction": "256"]
        if environment["TSBACKUP_MEASURE_WAL_AUTOVACUUM"] == "off" { settings["autovacuum"] = "off" }
        try await SandboxCluster.with(.init(durable: true, settings: settings)) { cluster in
            try await cluster.createDatabase("source")
            let options = SampleData.Options(devices: 4, days: (hours + 23) / 24, readingsPerDay: 24, chunkInterval: "1 hour",
                                             events: 1_000, eventsPerChunk: 100, sensors: 4, spacePartitions: 2)
            try await cluster.withSuperuser(database: "source") { try await SampleData(options).load(into: $0) }
            let chunks = try await cluster.withSuperuser(database: "source") {
                try await $0.value("SELECT count(*) FROM _timescaledb_catalog.chunk", as: Int64.self)
            }
            let scratch = try ScratchDirectory("walmeasure")
            defer { scratch.remove() }
            let repository = scratch.path + "/repo"
            let backup = try await runBackup(cluster, "source", repository: repository)
            #expect(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let dump = scratch.path + "/source.pgdump"
            let pgDump = try await PostgresTools.locate("pg_dump", minimumMajor: 15)
            let dumped = try await ProcessRunner.run(pgDump.path, ["--format=custom", "--file=\(dump)", "--no-password", "source"],
                                                     environment: cluster.settings(database: "source").childProcessEnvironment())
            #expect(dumped.succeeded)

            func median(_ values: [Int64]) -> Int64 { values.sorted()[values.count / 2] }
            var documented: [Int64] = []
            for run in 0..<3 {
                let before = try await Self.walSyncs(cluster)
                try await Self.documentedRestore(cluster, dump: dump, into: "documented\(run)")
                documented.append(try await Self.walSyncs(cluster) - before)
                try await Self.dropDatabase(cluster, "documented\(run)")
            }
            var binaries = [("this build", CLI.executable)]
            if let before = environment["TSBACKUP_MEASURE_WAL_BEFORE"] { binaries.insert(("before", before), at: 0) }
            var lines = ["\(chunks) chunks; documented procedure wal_sync \(documented) median \(median(documented))"]
            for (label, binary) in binaries {
                var syncs: [Int64] = []
                for run in 0..<3 {
                    let before = try await Self.walSyncs(cluster)
                    var env: [String: String?] = ["PGPASSWORD": cluster.superuserPassword, "HOME": NSTemporaryDirectory()]
                    for key in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSFILE"] { env[key] = .some(nil) }
                    let result = try await ProcessRunner.run(binary, ["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"),
                                                                      "--into", "ts\(run)", "--jobs", "2", "--json"], environment: env)
                    syncs.append(try await Self.walSyncs(cluster) - before)
                    #expect(result.exitCode == 0, "\(label): \(result.standardError)")
                    try await Self.dropDatabase(cluster, "ts\(run)")
                }
                let ratio = Double(median(syncs)) / Double(max(1, median(documented))) * 100
                lines.append("tsbackup restore (\(label)) wal_sync \(syncs) median \(median(syncs)) = \(String(format: "%.2f", ratio))% of documented")
            }
            print(lines.joined(separator: "\n"))
            try lines.joined(separator: "\n").write(toFile: "/tmp/tsbackup-wal-measure.txt", atomically: true, encoding: .utf8)
        }
    }
}

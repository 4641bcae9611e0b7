import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// The lock-budget preflight must count what the backup's survey locks beside pg_dump, not only
/// pg_dump's tables (issue 11, item 3). The survey counts rows through each hypertable's root in
/// the snapshot's transaction; planning that count locks every chunk and every index of every
/// chunk until the transaction ends. Here pg_dump's relations fit the lock table with the
/// preflight's 20 % headroom, but with three indexes per chunk, relations + chunk indexes are
/// far beyond it (and beyond PostgreSQL's real limit with its spare shared memory): the old
/// preflight said "sufficient", took the one-pass path, and failed with "out of shared memory
/// while running: hashing the rows of public.readings" (measured against the old binary with
/// TSBACKUP_TEST_BINARY). The fix takes the batched path.
@Suite("chunk scale: the survey's index locks count in the lock budget")
struct ChunkScaleIndexLockTests {
    /// 64 x 20 = 1,280 by the preflight's formula; PostgreSQL sizes its lock table for 64 x 30
    /// backend slots (connections, one autovacuum worker, its launcher, 8 worker processes) = 1,920.
    static let settings = SandboxCluster.Options(settings: [
        "max_locks_per_transaction": "64", "max_connections": "20", "max_worker_processes": "8",
        "timescaledb.max_background_workers": "4", "max_wal_senders": "0", "autovacuum_max_workers": "1",
    ])
    /// Hourly chunks: about 900 relations for pg_dump (under 1,280 / 1.2), 3 x 800 chunk indexes.
    static let hours = 800
    static let rowsPerHour = 2
    static let epoch = "2026-01-01 00:00:00+00"

    /// md5 of the ordered rows, 100 hours (chunks) per statement so the small lock table can
    /// answer; computed by SQL, not by tsbackup.
    static func digests(_ cluster: SandboxCluster, _ database: String) async throws -> [String] {
        try await cluster.withSuperuser(database: database) { session in
            var digests: [String] = []
            for start in stride(from: 0, to: hours, by: 100) {
                digests.append(try await session.value(PostgresQuery(unsafeSQL: """
                    SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY time, sensor), '')) FROM public.readings t
                    WHERE time >= timestamptz '\(epoch)' + make_interval(hours => \(start))
                      AND time < timestamptz '\(epoch)' + make_interval(hours => \(start + 100))
                    """), as: String.self))
            }
            return digests
        }
    }

    @Test("tables that fit but tables plus chunk indexes that do not: the backup takes the batched path and restores exactly")
    func chunkIndexesCountInTheBudget() async throws {
        try await SandboxCluster.with(Self.settings) { cluster in
            let database = "indexed"
            try await cluster.createDatabase(database)
            try await cluster.withSuperuser(database: database) { session in
                for statement in [
                    "CREATE TABLE public.sensors (id integer PRIMARY KEY, name text NOT NULL)",
                    "INSERT INTO public.sensors SELECT g, 'sensor-' || g FROM generate_series(1, 4) g",
                    "CREATE TABLE public.readings (time timestamptz NOT NULL, sensor integer NOT NULL, value double precision NOT NULL)",
                    "SELECT create_hypertable('public.readings', 'time', chunk_time_interval => interval '1 hour')",
                    // Two more indexes besides TimescaleDB's (time DESC): three per chunk.
                    "CREATE INDEX readings_sensor_time ON public.readings (sensor, time DESC)",
                    "CREATE INDEX readings_value ON public.readings (value)",
                ] {
                    try await session.execute(statement)
                }
                // 50 new chunks per statement: all at once would not fit the lock table.
                for start in stride(from: 0, to: Self.hours, by: 50) {
                    try await session.execute("""
                        INSERT INTO public.readings (time, sensor, value)
                        SELECT timestamptz '\(Self.epoch)' + make_interval(hours => h, mins => m * 30), 1 + (h + m) % 4, h * 2 + m
                        FROM generate_series(\(start), \(start + 49)) h, generate_series(0, \(Self.rowsPerHour - 1)) m
                        """)
                }
            }
            let scratch = try ScratchDirectory("indexlocks")
            defer { scratch.remove() }

            // First the backup, so a run against an older tsbackup (TSBACKUP_TEST_BINARY) shows its failure.
            let repository = scratch.path + "/repo"
            let backup = try await runBackup(cluster, database, repository: repository, ["--checksums"])
            try #require(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let manifest = try backupManifest(repository, id)
            let path = try #require(manifest.chunkPath, "the batched path must be taken")
            #expect(path.batches.reduce(0) { $0 + $1.chunks.count } == Self.hours)
            #expect(manifest.warnings.contains { $0.contains("indexes") && $0.contains("in batches") })
            let readings = try #require(manifest.hypertables.first { $0.name == "readings" })
            #expect(readings.dumpPath == "chunk_batches")
            #expect(readings.rowCount == Int64(Self.hours * Self.rowsPerHour))
            let check = try #require(path.rootChecks?.first { $0.hypertable == "public.readings" })
            #expect(check.rootRows == Int64(Self.hours * Self.rowsPerHour))

            // The scenario: pg_dump's relations alone fit the budget with headroom (so the old
            // preflight said "sufficient"), relations + chunk indexes do not.
            let inspect = try await CLI.run(["inspect", "--json", "--db", cluster.url(database: database)],
                                            environment: ["PGPASSWORD": cluster.superuserPassword])
            try #require(inspect.exitCode == 0, "\(inspect.standardError)")
            let budget = try JSONOutput.decode(ServerInspection.self, from: Data(inspect.standardOutput.utf8)).lockBudget
            #expect(budget.budget == 64 * 20)
            #expect(budget.relationsToLock * 12 <= budget.budget * 10, "pg_dump's \(budget.relationsToLock) relations must fit alone")
            #expect(budget.indexesToLock == 3 * (Self.hours + 1))
            #expect(budget.sufficient == false)
            #expect(budget.recommendedMaxLocksPerTransaction * 20 * 10 >= (budget.relationsToLock + budget.indexesToLock) * 12)

            // pg_dump alone does succeed here: its tables are not the problem.
            let pgDump = try await PostgresTools.locate("pg_dump", minimumMajor: 15)
            let plain = try await ProcessRunner.run(pgDump.path, ["--format=custom", "--file=\(scratch.path)/plain.dump", "--no-password",
                                                                  "--host=127.0.0.1", "--port=\(cluster.port)", "--username=postgres", database],
                                                    environment: ["PGPASSWORD": cluster.superuserPassword, "LC_MESSAGES": "C"])
            #expect(plain.exitCode == 0, "\(plain.standardError)")

            // Restored on a server with ordinary settings and verified by tsbackup...
            let target = try await SharedCluster.shared.cluster()
            let into = uniqueDatabaseName("indexlocks_restored")
            let (result, report) = try await ChunkScaleTests.restore(repository, id, into: target, as: into)
            #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            #expect(report?.ok == true)
            #expect(report?.checks.contains { $0.subject == "public.readings" && $0.check == "rows" && $0.actual == String(Self.hours * Self.rowsPerHour) } == true)
            // ...and by SQL through the root: the exact count, and the same rows as the source.
            let (rows, chunks, sensors) = try await target.withSuperuser(database: into) { session in
                (try await session.value("SELECT count(*) FROM public.readings", as: Int64.self),
                 try await session.value("SELECT count(*) FROM show_chunks('public.readings')", as: Int64.self),
                 try await session.value("SELECT count(*) FROM public.sensors", as: Int64.self))
            }
            #expect(rows == Int64(Self.hours * Self.rowsPerHour))
            #expect(chunks == Int64(Self.hours))
            #expect(sensors == 4)
            let restoredDigests = try await Self.digests(target, into)
            #expect(try await Self.digests(cluster, database) == restoredDigests)
            try await target.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }
        }
    }
}

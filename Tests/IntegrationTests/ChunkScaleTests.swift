import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Backups past pg_dump's lock limit. CI stays fast by shrinking the lock table, not by growing
/// the data: `max_locks_per_transaction = 10` and 20 connections (and few worker slots, which
/// PostgreSQL also counts) make a few hundred chunks more than one pg_dump can lock.
@Suite("chunk scale: past the lock limit")
struct ChunkScaleTests {
    static let lowLocks = SandboxCluster.Options(settings: [
        "max_locks_per_transaction": "10", "max_connections": "20", "max_worker_processes": "8",
        "timescaledb.max_background_workers": "4", "max_wal_senders": "0", "autovacuum_max_workers": "1",
    ])
    /// Hourly chunks of `public.metrics`.
    static let hours = 400
    static let epoch = "2026-01-01 00:00:00+00"

    /// `public.metrics` (hourly chunks, an FK to `devices`, an index, a comment, a grant, a view on
    /// it) and `public.events` (a hypertable with a bigserial column, which the chunk path leaves
    /// to the main pg_dump). One transaction per chunk: more at once would not fit the lock table.
    /// Without `foreignKey`, for retention tests: dropping a chunk with a foreign key needs an
    /// exclusive lock on the referenced table, which waits for the backup's snapshot transaction.
    static func load(_ cluster: SandboxCluster, _ database: String, foreignKey: Bool = true) async throws {
        try await cluster.createDatabase(database)
        try await cluster.withSuperuser(database: database) { session in
            for statement in [
                "CREATE TABLE public.devices (id integer PRIMARY KEY, name text NOT NULL)",
                "INSERT INTO public.devices SELECT g, 'device-' || g FROM generate_series(1, 5) g",
                "CREATE TABLE public.metrics (time timestamptz NOT NULL, device integer NOT NULL\(foreignKey ? " REFERENCES public.devices (id)" : ""), value double precision NOT NULL CHECK (value >= 0), note text DEFAULT 'none')",
                "SELECT create_hypertable('public.metrics', 'time', chunk_time_interval => interval '1 hour')",
                "CREATE INDEX metrics_device_time ON public.metrics (device, time DESC)",
                "COMMENT ON TABLE public.metrics IS 'hourly chunks'",
                "GRANT SELECT ON public.metrics TO PUBLIC",
                "CREATE VIEW public.metrics_hourly AS SELECT time_bucket('1 hour', time) AS hour, count(*) AS readings FROM public.metrics GROUP BY 1",
                "CREATE TABLE public.events (id bigserial, seq bigint NOT NULL, kind text NOT NULL)",
                "SELECT create_hypertable('public.events', 'seq', chunk_time_interval => 100)",
                "INSERT INTO public.events (seq, kind) SELECT s, 'kind-' || s % 3 FROM generate_series(0, 499) s",
            ] {
                try await session.execute(statement)
            }
            for hour in 0..<hours {
                try await session.execute(insertHour(hour))
            }
        }
    }

    /// The six rows of one hour: values are a function of the hour, so any hour's rows can be
    /// recomputed independently of the database.
    static func insertHour(_ hour: Int) -> String {
        """
        INSERT INTO public.metrics (time, device, value, note)
        SELECT timestamptz '\(epoch)' + make_interval(hours => \(hour), mins => m * 10), 1 + (\(hour) + m) % 5, \(hour) * 6 + m,
               CASE WHEN m = 0 THEN 'hour ' || \(hour) END
        FROM generate_series(0, 5) m
        """
    }

    /// md5 of the ordered rows of `public.metrics` per day (24 chunks per statement, so the source
    /// with its small lock table can answer), and of the other tables: computed by SQL, not by tsbackup.
    static func digests(_ cluster: SandboxCluster, _ database: String, days: ClosedRange<Int>) async throws -> [String: String] {
        try await cluster.withSuperuser(database: database) { session in
            var digests: [String: String] = [:]
            for day in days {
                digests["metrics day \(day)"] = try await session.value(PostgresQuery(unsafeSQL: """
                    SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY time, device), '')) FROM public.metrics t
                    WHERE time >= timestamptz '\(epoch)' + interval '\(day) days' AND time < timestamptz '\(epoch)' + interval '\(day + 1) days'
                    """), as: String.self)
            }
            for (table, order) in [("public.devices", "id"), ("public.events", "seq")] {
                digests[table] = try await session.value(PostgresQuery(unsafeSQL:
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY \(order)), '')) FROM \(table) t"), as: String.self)
            }
            return digests
        }
    }

    static func restore(_ repository: String, _ id: String, into target: SandboxCluster, as name: String,
                        environment: [String: String] = [:]) async throws -> (ProcessResult, Restore.Report?) {
        let result = try await CLI.run(["restore", id, "--repo", repository, "--target", target.url(database: "postgres"),
                                        "--into", name, "--jobs", "2", "--json"],
                                       environment: environment.merging(["PGPASSWORD": target.superuserPassword]) { _, new in new })
        return (result, try? JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8)))
    }

    /// Restores `id` into a new database on the shared cluster (two jobs), expects a verified
    /// restore whose catalog names no missing table, runs `check` on it, and drops it.
    static func restoreAndCheck(_ repository: String, _ id: String, prefix: String,
                                _ check: (DatabaseSession) async throws -> Void) async throws {
        let target = try await SharedCluster.shared.cluster()
        let into = uniqueDatabaseName(prefix)
        let (result, report) = try await restore(repository, id, into: target, as: into)
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        #expect(report?.ok == true)
        try await target.withSuperuser(database: into) { session in
            let missing = try await session.value(
                "SELECT count(*) FROM _timescaledb_catalog.chunk WHERE to_regclass(format('%I.%I', schema_name, table_name)) IS NULL",
                as: Int64.self)
            #expect(missing == 0)
            try await check(session)
        }
        try await target.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }
    }

    /// md5 of `public.metrics`' rows in order.
    static func metricsDigest(_ session: DatabaseSession) async throws -> String {
        try await session.value("SELECT md5(string_agg(t::text, E'\\n' ORDER BY time, device)) FROM public.metrics t", as: String.self)
    }

    /// md5 of the rows ``insertHour(_:)`` generates for `hours`, in the same order and text,
    /// computed by SQL from the formula, not read from any table.
    static func generatedDigest(_ session: DatabaseSession, hours: ClosedRange<Int>) async throws -> String {
        try await session.value(PostgresQuery(unsafeSQL: """
            SELECT md5(string_agg(t::text, E'\\n' ORDER BY time, device)) FROM (
              SELECT timestamptz '\(epoch)' + make_interval(hours => h, mins => m * 10) AS time, 1 + (h + m) % 5 AS device,
                     (h * 6 + m)::float8 AS value, CASE WHEN m = 0 THEN 'hour ' || h END AS note
              FROM generate_series(\(hours.lowerBound), \(hours.upperBound)) h, generate_series(0, 5) m) t
            """), as: String.self)
    }

    @Test("a backup past the lock limit succeeds where pg_dump fails, and restores exactly")
    func pastTheLockLimit() async throws {
        try await SandboxCluster.with(Self.lowLocks) { cluster in
            let database = "scale"
            try await Self.load(cluster, database)
            let scratch = try ScratchDirectory("scale")
            defer { scratch.remove() }

            // Plain pg_dump cannot: it locks every chunk in one transaction.
            let pgDump = try await PostgresTools.locate("pg_dump", minimumMajor: 15)
            let plain = try await ProcessRunner.run(pgDump.path, ["--format=custom", "--file=\(scratch.path)/plain.dump", "--no-password",
                                                                  "--host=127.0.0.1", "--port=\(cluster.port)", "--username=postgres", database],
                                                    environment: ["PGPASSWORD": cluster.superuserPassword, "LC_MESSAGES": "C"])
            #expect(plain.exitCode != 0)
            #expect(plain.standardError.contains("out of shared memory"), "\(plain.standardError)")

            let repository = scratch.path + "/repo"

            // A chunk that a bug left out of every batch (while the main pg_dump still excludes
            // it): the count through the root on the snapshot does not share the batches' chunk
            // list, finds the chunk's rows, and the backup fails naming the hypertable, the
            // window and the chunk, with its entry marked failed.
            let leftOut = try await cluster.withSuperuser(database: database) { session in
                try await session.value(PostgresQuery(unsafeSQL: """
                    SELECT format('%s.%s', c.schema_name, c.table_name) FROM _timescaledb_catalog.chunk c
                    JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
                    WHERE h.table_name = 'metrics' ORDER BY c.id OFFSET 50 LIMIT 1
                    """), as: String.self)
            }
            let failedRepository = scratch.path + "/failed-repo"
            let broken = try await runBackup(cluster, database, repository: failedRepository, ["--checksums"],
                                             environment: ["TSBACKUP_TEST_LEAVE_OUT_CHUNK": leftOut])
            #expect(broken.exitCode == 1, "\(broken.standardError)")
            #expect(broken.standardError.contains("hypertable public.metrics counted through its root"), "\(broken.standardError)")
            #expect(broken.standardError.contains("chunk \(leftOut) holds 6 row(s) through the root but is in no chunk batch"), "\(broken.standardError)")
            #expect(broken.standardError.contains("in window "), "\(broken.standardError)")
            let failedIDs = (try? FileManager.default.contentsOfDirectory(atPath: failedRepository + "/backups")) ?? []
            #expect(failedIDs.count == 1)
            if let failedID = failedIDs.first {
                let failed = try backupManifest(failedRepository, failedID)
                #expect(failed.status == .failed)
                #expect(failed.error?.contains(leftOut) == true)
            }

            // The chunk catalog is listed once (in the snapshot): the preflight decides from counts.
            let listings = scratch.path + "/chunk-listings"
            // The check through the root moves to a new server session after each window here
            // (every 5,000 chunks planned otherwise), and still agrees.
            let backup = try await runBackup(cluster, database, repository: repository, ["--checksums"],
                                             environment: ["TSBACKUP_TEST_COUNT_CHUNK_LISTINGS": listings,
                                                           "TSBACKUP_TEST_ROOT_CHECK_CHUNKS_PER_SESSION": "1"])
            try #require(backup.exitCode == 0, "\(backup.standardError)")
            let listed = (try? String(contentsOfFile: listings, encoding: .utf8)) ?? ""
            #expect(listed.split(separator: "\n").count == 1, "\(listed)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let manifest = try backupManifest(repository, id)
            let path = try #require(manifest.chunkPath)
            #expect(path.batches.count > 1)
            #expect(path.batches.allSatisfy { $0.chunks.count <= path.chunksPerBatch })
            #expect(path.batches.reduce(0) { $0 + $1.chunks.count } == Self.hours)
            #expect(path.droppedChunks.isEmpty)
            // Counted through the root, window by window (each within the lock budget).
            let check = try #require(path.rootChecks?.first { $0.hypertable == "public.metrics" })
            #expect(check.windows > 1)
            #expect(check.rootRows == Int64(Self.hours * 6))
            #expect(check.batchRows == check.rootRows)
            #expect(check.droppedAfterDump.isEmpty)
            #expect(check.sessions == check.windows)
            let metrics = try #require(manifest.hypertables.first { $0.name == "metrics" })
            #expect(metrics.dumpPath == "chunk_batches")
            #expect(metrics.chunkCount == Self.hours)
            #expect(metrics.rowCount == Int64(Self.hours * 6))
            let events = try #require(manifest.hypertables.first { $0.name == "events" })
            #expect(events.dumpPath == "pg_dump")
            #expect(path.fallbacks.contains { $0.hypertable == "public.events" && $0.reason.contains("sequence") })
            #expect(manifest.warnings.contains { $0.contains("in batches") })
            #expect(manifest.chunkTables.count == Self.hours + 5)
            // The batches' archives hold DDL only; the rows are in one zstd data file per batch,
            // hashed in the manifest like every file.
            #expect(path.dataForm == .copyFiles)
            let listedFiles = Set(manifest.files.map(\.path))
            #expect(path.batches.allSatisfy { $0.dataFile.map { listedFiles.contains($0) } == true })
            #expect(path.batches.reduce(0) { $0 + $1.rowCount } == Int64(Self.hours * 6))

            let verify = try await CLI.run(["verify", id, "--repo", repository])
            #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")

            // Restore on a server with ordinary settings, verified by tsbackup against the manifest...
            let target = try await SharedCluster.shared.cluster()
            let into = uniqueDatabaseName("scale_restored")
            let (result, report) = try await Self.restore(repository, id, into: target, as: into)
            #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            #expect(report?.ok == true)
            #expect(report?.checks.contains { $0.subject == "public.metrics" && $0.check == "content hash" && $0.ok } == true)

            // ...and by SQL: the same rows, day by day, as the source.
            let days = 0...(Self.hours / 24)
            let source = try await Self.digests(cluster, database, days: days)
            #expect(try await Self.digests(target, into, days: days) == source)
            try await target.withSuperuser(database: into) { session in
                // The view on the batched hypertable, its grant and comment came back; it still works.
                #expect(try await session.value("SELECT sum(readings)::int8 FROM public.metrics_hourly", as: Int64.self) == Int64(Self.hours * 6))
                #expect(try await session.value("SELECT has_table_privilege('public', 'public.metrics', 'SELECT')", as: Bool.self))
                #expect(try await session.value("SELECT obj_description('public.metrics'::regclass, 'pg_class')", as: String?.self) == "hourly chunks")
                // The FK holds on a new chunk, CHECK too.
                await #expect(throws: TSBackupError.self) {
                    try await session.execute("INSERT INTO public.metrics (time, device, value) VALUES ('2030-01-01', 99, 1)")
                }
                await #expect(throws: TSBackupError.self) {
                    try await session.execute("INSERT INTO public.metrics (time, device, value) VALUES ('2030-01-01', 1, -1)")
                }
                try await session.execute("INSERT INTO public.metrics (time, device, value) VALUES ('2030-01-01', 1, 1)")
                #expect(try await session.value("SELECT count(*) FROM show_chunks('public.metrics')", as: Int64.self) == Int64(Self.hours + 1))
            }
            try await target.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }

            // And on the small-lock server itself: verification reads the roots a window of
            // chunks at a time (here on a new server session per window), and ANALYZE leaves the roots out.
            let local = "scale_restored_here"
            // ANALYZE moves to a new session every 50 tables here (2,000 otherwise).
            let (here, hereReport) = try await Self.restore(repository, id, into: cluster, as: local,
                                                            environment: ["TSBACKUP_TEST_ROOT_CHECK_CHUNKS_PER_SESSION": "1",
                                                                          "TSBACKUP_TEST_ANALYZE_TABLES_PER_SESSION": "50"])
            #expect(here.exitCode == 0, "\(here.standardOutput) \(here.standardError)")
            #expect(hereReport?.ok == true)
            let notAnalyzed = try await cluster.withSuperuser(database: local) { session in
                try await session.value(
                    """
                    SELECT count(*) FROM _timescaledb_catalog.chunk c
                    JOIN pg_stat_user_tables s ON s.schemaname = c.schema_name AND s.relname = c.table_name
                    WHERE s.last_analyze IS NULL
                    """, as: Int64.self)
            }
            #expect(notAnalyzed == 0)
            #expect(hereReport?.checks.contains { $0.subject == "public.metrics" && $0.check == "rows" && $0.actual == String(Self.hours * 6) } == true)
            // The insert tests, here on a new session per hypertable (past 5,000 chunks
            // otherwise), ran for every hypertable with rows and passed.
            let inserted = Set(hereReport?.checks.filter { $0.check == "insert test" && $0.ok }.map(\.subject) ?? [])
            let withRows = Set(try backupManifest(repository, id).hypertables.filter { $0.rowCount > 0 }.map { "\($0.schema).\($0.name)" })
            #expect(!withRows.isEmpty && inserted == withRows, "\(inserted) against \(withRows)")
            #expect(try await Self.digests(cluster, local, days: days) == source)

            // A backup of the old form (rows inside the batches' archives, as tsbackup wrote them
            // before the data files) still restores exactly, through the old path. Its batches
            // are smaller: each chunk's indexes counted in its lock share.
            let oldRepository = scratch.path + "/old-form-repo"
            let oldBackup = try await runBackup(cluster, database, repository: oldRepository, ["--checksums"],
                                                environment: ["TSBACKUP_TEST_CHUNK_DATA_IN_ARCHIVES": "1"])
            try #require(oldBackup.exitCode == 0, "\(oldBackup.standardError)")
            let oldID = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(oldBackup.standardOutput.utf8)).id
            let oldPath = try #require(try backupManifest(oldRepository, oldID).chunkPath)
            #expect(oldPath.dataForm == nil)
            #expect(oldPath.batches.allSatisfy { $0.dataFile == nil })
            #expect(oldPath.batches.count > path.batches.count)
            let oldVerify = try await CLI.run(["verify", oldID, "--repo", oldRepository])
            #expect(oldVerify.exitCode == 0, "\(oldVerify.standardOutput) \(oldVerify.standardError)")
            let oldInto = "scale_restored_old_form"
            let (oldRestore, oldReport) = try await Self.restore(oldRepository, oldID, into: cluster, as: oldInto)
            #expect(oldRestore.exitCode == 0, "\(oldRestore.standardOutput) \(oldRestore.standardError)")
            #expect(oldReport?.ok == true)
            #expect(try await Self.digests(cluster, oldInto, days: days) == source)

            // A damaged data file: verify names it, and a restore refuses it without leaving a database.
            let damaged = try #require(path.batches.last?.dataFile)
            let damagedPath = repository + "/backups/\(id)/" + damaged
            var bytes = try Data(contentsOf: URL(fileURLWithPath: damagedPath))
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: damagedPath))
            let badVerify = try await CLI.run(["verify", id, "--repo", repository])
            #expect(badVerify.exitCode != 0)
            #expect((badVerify.standardOutput + badVerify.standardError).contains(damaged), "\(badVerify.standardOutput) \(badVerify.standardError)")
            let badInto = "scale_restored_damaged"
            let (badRestore, _) = try await Self.restore(repository, id, into: cluster, as: badInto)
            #expect(badRestore.exitCode != 0)
            #expect((badRestore.standardOutput + badRestore.standardError).contains(damaged), "\(badRestore.standardOutput) \(badRestore.standardError)")
            let left = try await cluster.withSuperuser { session in
                try await session.value("SELECT count(*) FROM pg_database WHERE datname = \(badInto)", as: Int64.self)
            }
            #expect(left == 0)
        }
    }

    @Test("retention dropping chunks and writes during a batched backup: the snapshot's rows, no missing table")
    func retentionAndWritesDuringBackup() async throws {
        try await SandboxCluster.with(Self.lowLocks) { cluster in
            let database = "churn"
            try await Self.load(cluster, database, foreignKey: false)
            let scratch = try ScratchDirectory("churn")
            defer { scratch.remove() }
            let repository = scratch.path + "/repo"

            // One job: the batches run one after another, oldest chunks first. The run pauses
            // before its second batch (a test seam): the first is dumped, the snapshot is taken, the
            // later batches have not started. That moment is waited for, not guessed.
            // Writes: more rows into hours 100-199, all committed after the backup's snapshot, so
            // none may reach the backup; a hundred before the batches go on, the rest while they run.
            func write(_ rows: Range<Int>) async throws {
                try await DatabaseSession.with(cluster.settings(database: database)) { session in
                    for n in rows {
                        try await session.execute("INSERT INTO public.metrics (time, device, value) VALUES (timestamptz '\(Self.epoch)' + make_interval(hours => \(100 + n % 100), mins => 5), 1, 0.5)")
                    }
                }
            }
            let (backup, (droppedCount, writer)) = try await pausedBackup(
                cluster, database, repository: repository, ["--checksums", "--jobs", "1"],
                at: "chunk batch 2 of", marker: scratch.path + "/pause-before-batch-2"
            ) {
                // Retention drops the newest 60 chunks, five at a time (the last batches find them gone).
                let droppedCount = try await DatabaseSession.with(cluster.settings(database: database)) { session in
                    var dropped = 0
                    var newer = Self.hours - 5
                    while dropped < 60 {
                        let rows = try await session.query(PostgresQuery(unsafeSQL:
                            "SELECT drop_chunks('public.metrics', newer_than => timestamptz '\(Self.epoch)' + interval '\(newer) hours' - interval '1 microsecond')"))
                        dropped += rows.count
                        newer -= 5
                    }
                    return dropped
                }
                try await write(0..<100)
                return (droppedCount, Task { try await write(100..<500) })
            }
            try await writer.value
            try #require(backup.exitCode == 0, "\(backup.standardError)")
            #expect(droppedCount > 0)

            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let manifest = try backupManifest(repository, id)
            let path = try #require(manifest.chunkPath)
            // The last batches started after the drops: they found chunks gone and said so.
            #expect(!path.droppedChunks.isEmpty)
            let metrics = try #require(manifest.hypertables.first { $0.name == "metrics" })
            #expect(metrics.chunkCount == Self.hours - path.droppedChunks.count)
            #expect(Set(path.droppedChunks.map(\.table)).isDisjoint(with: manifest.chunkTables))
            // The root check saw the snapshot's rows: the batches' minus nothing but chunks dropped after their dump.
            let check = try #require(path.rootChecks?.first { $0.hypertable == "public.metrics" })
            #expect(metrics.rowCount == check.batchRows)
            #expect(check.rootRows <= check.batchRows)
            #expect(check.droppedAfterDump.isEmpty == (check.rootRows == check.batchRows))

            try await Self.restoreAndCheck(repository, id, prefix: "churn_restored") { session in
                // Exactly the generated rows of the hours that are there (none of the concurrent
                // writes), and the hours are the original ones up to where the drops began.
                let hoursPresent = try await session.values(PostgresQuery(unsafeSQL:
                    "SELECT DISTINCT floor(extract(epoch FROM time - timestamptz '\(Self.epoch)') / 3600)::int8 FROM public.metrics ORDER BY 1"),
                    as: Int64.self)
                #expect(hoursPresent.first == 0)
                #expect(hoursPresent == Array(0..<Int64(hoursPresent.count)))
                #expect(hoursPresent.count == metrics.chunkCount)
                let (restored, expected) = (try await Self.metricsDigest(session),
                                            try await Self.generatedDigest(session, hours: 0...max(0, hoursPresent.count - 1)))
                #expect(restored == expected)
            }
        }
    }

    @Test("a chunk dropped between its rows' copy and its batch's DDL leaves the backup whole: recorded dropped, in neither file")
    func droppedBetweenCopyAndDefinitions() async throws {
        try await SandboxCluster.with(Self.lowLocks) { cluster in
            let database = "gap"
            try await Self.load(cluster, database, foreignKey: false)
            let scratch = try ScratchDirectory("gap")
            defer { scratch.remove() }
            let repository = scratch.path + "/repo"
            // One job; the run pauses after batch 1 copied its chunks' rows, before its pg_dump
            // of their DDL (a test seam): retention then drops the ten oldest chunks, all in batch 1.
            let (backup, dropped) = try await pausedBackup(
                cluster, database, repository: repository, ["--checksums", "--jobs", "1"],
                at: "chunk batch 1 DDL of", marker: scratch.path + "/pause-before-ddl-1"
            ) {
                try await DatabaseSession.with(cluster.settings(database: database)) { session in
                    try await session.values(PostgresQuery(unsafeSQL:
                        "SELECT drop_chunks('public.metrics', older_than => timestamptz '\(Self.epoch)' + interval '10 hours')::text"),
                        as: String.self)
                }
            }
            try #require(backup.exitCode == 0, "\(backup.standardError)")
            #expect(dropped.count == 10)

            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let manifest = try backupManifest(repository, id)
            let path = try #require(manifest.chunkPath)
            #expect(Set(path.droppedChunks.map(\.table)) == Set(dropped))
            #expect(Set(dropped).isDisjoint(with: manifest.chunkTables))
            let first = try #require(path.batches.first)
            #expect(Set(first.chunks).isDisjoint(with: dropped))
            let metrics = try #require(manifest.hypertables.first { $0.name == "metrics" })
            #expect(metrics.chunkCount == Self.hours - 10)
            #expect(metrics.rowCount == Int64((Self.hours - 10) * 6))
            // The data file lost those chunks' rows too: verify splits it into the batch's chunks.
            let verify = try await CLI.run(["verify", id, "--repo", repository])
            #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")

            try await Self.restoreAndCheck(repository, id, prefix: "gap_restored") { session in
                let chunks = try await session.value("SELECT count(*) FROM show_chunks('public.metrics')", as: Int64.self)
                #expect(chunks == Int64(Self.hours - 10))
                let (restored, expected) = (try await Self.metricsDigest(session), try await Self.generatedDigest(session, hours: 10...(Self.hours - 1)))
                #expect(restored == expected)
            }
        }
    }
}

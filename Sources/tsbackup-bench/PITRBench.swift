import Foundation
import PostgresNIO
import TSBackup
import TSBackupSandbox

/// Point-in-time recovery against pgBackRest and pg_basebackup on one archiving cluster, in one
/// run, variants interleaved (the order rotates every round), medians of `repetitions`:
///
/// - base backup time and size: `tsbackup base-backup` vs `pgbackrest backup --type=full`
///   (`compress-type=lz4`, `process-max=2`, `start-fast=y`) vs `pg_basebackup -Ft -z -c fast`;
/// - from start to a promoted server at a target time: `tsbackup recover --to-time` (its
///   TimescaleDB verification included) vs `pgbackrest restore --type=time` + `pg_ctl start` +
///   waiting until `pg_is_in_recovery()` is false;
/// - one process per 16 MB segment: `tsbackup wal-push` vs `pgbackrest archive-push`, and
///   `tsbackup wal-fetch` vs `pgbackrest archive-get`.
///
/// Fair setup: the cluster's archive_command feeds both archives at once (the two pushes run
/// side by side in one shell, and the command fails when either fails), so each tool's backup
/// waits for its own archive and each recovery replays from its own archive. The data is loaded
/// with archiving discarded (`/bin/true`), then vacuumed and checkpointed, so every backup reads
/// the same settled files. Recovered servers run the same archive_command, but it archives only
/// from the source's data directory, so no recovery adds a timeline to the archives the later
/// rounds read.
struct PITRBench {
    let tsbackup: String
    let sizeMB: Int
    let walMB: Int
    let pushSegments: Int
    let repetitions: Int
    /// An older tsbackup binary (TSBACKUP_BENCH_BEFORE) measured beside this one per segment.
    var before: String? = nil
    /// `tsbackup-wal` beside the measured tsbackup, when it was built: measured per segment too.
    var slimExecutable: String? {
        let path = (tsbackup as NSString).deletingLastPathComponent + "/tsbackup-wal"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }
    let log: (String) -> Void

    let pgBin = "/usr/lib/postgresql/15/bin"
    let pgbackrest = "/usr/bin/pgbackrest"
    let stanza = "bench"

    /// Rows of one device in `public.conditions`: 45 days every 5 minutes (1,080 hourly chunks).
    static let days = 45
    static let readingsPerDay = 288

    /// Checks pgBackRest is installed and makes the run's scratch directory (world-readable:
    /// the server's user archives into it). The caller removes it.
    func makeScratch() throws -> String {
        guard FileManager.default.isExecutableFile(atPath: pgbackrest) else {
            throw SandboxError("pgbackrest is not installed (apt-get install pgbackrest)")
        }
        var template = Array("/tmp/tsbackup-pitrbench-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SandboxError("mkdtemp failed") }
        let scratch = URL(fileURLWithPath: String(cString: made)).resolvingSymlinksInPath().path
        chmod(scratch, 0o755)
        return scratch
    }

    func run(into results: inout BenchResults) async throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let tsRepo = scratch + "/tsbackup-repo"
        for directory in [tsRepo, scratch + "/pgbackrest", scratch + "/recovered"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try SandboxCluster.handToPostgres(directory)
        }
        results.datasets["load average at start"] = Bench.loadAverage()
        let cluster = try await SandboxCluster.start(SandboxCluster.Options(
            durable: true,
            settings: ["shared_buffers": "'256MB'", "max_wal_size": "'4GB'", "archive_command": "'/bin/true'"],
            archiving: .init(tsbackup: tsbackup, repository: tsRepo)))
        do {
            try await measure(cluster: cluster, scratch: scratch, tsRepo: tsRepo, into: &results)
        } catch {
            await stopRecovered(scratch)
            await cluster.stop()
            throw error
        }
        await stopRecovered(scratch)
        await cluster.stop()
    }

    func measure(cluster: SandboxCluster, scratch: String, tsRepo: String, into results: inout BenchResults) async throws {
        // The binary the server's user can run (the harness copies it when it cannot).
        let serverTsbackup = FileManager.default.fileExists(atPath: cluster.directory + "/tsbackup") ? cluster.directory + "/tsbackup" : tsbackup
        let database = "metrics"
        let dataset = try await load(cluster, database: database)
        results.datasets["pitr"] = dataset
        log("  dataset: \(dataset)")

        let config = try writePgbackrestConfig(scratch: scratch, name: "main", repo: scratch + "/pgbackrest/repo", cluster: cluster)
        let dataDirectory = URL(fileURLWithPath: cluster.dataDirectory).resolvingSymlinksInPath().path
        // Both archives at once; only from the source's data directory (see the type's comment).
        let command = "[ \"$(pwd -P)\" = \"\(dataDirectory)\" ] || exit 0; "
            + "\"\(serverTsbackup)\" wal-push \"%p\" --repo \"\(tsRepo)\" & ts=$!; "
            + "\(pgbackrest) --config=\"\(config)\" --stanza=\(stanza) archive-push \"%p\"; br=$?; "
            + "wait $ts && [ $br -eq 0 ]"
        try await asPostgres(pgbackrest, ["--config=\(config)", "--stanza=\(stanza)", "stanza-create"], "pgbackrest stanza-create")
        try await cluster.withSuperuser { session in
            // ALTER SYSTEM takes no bind parameters.
            try await session.execute("ALTER SYSTEM SET archive_command = \(SQLLiteral.quote(command))")
            try await session.execute("SELECT pg_reload_conf()")
        }
        // pgBackRest's own proof that archiving into its stanza works (a switch arrives).
        try await asPostgres(pgbackrest, ["--config=\(config)", "--stanza=\(stanza)", "check"], "pgbackrest check")
        log("  archive_command: \(command)")

        // MARK: Base backups
        log("\n== Base backups (\(repetitions) interleaved rounds; load average \(Bench.loadAverage()))")
        let pgbbRoot = scratch + "/pg_basebackup"
        try FileManager.default.createDirectory(atPath: pgbbRoot, withIntermediateDirectories: true)
        typealias Variant = (name: String, run: () async throws -> [String: Double])
        let backupVariants: [Variant] = [
            ("tsbackup base-backup", {
                let start = ContinuousClock.now
                let result = try await ProcessRunner.run(self.tsbackup, ["base-backup", "--db", cluster.url(database: "postgres"), "--repo", tsRepo, "--json"],
                                                         environment: self.environment(cluster))
                let seconds = Self.seconds(since: start)
                try self.check(result, "tsbackup base-backup")
                let manifest = try JSONOutput.decode(BaseBackupManifest.self, from: Data(result.standardOutput.utf8))
                return ["seconds": seconds, "bytes": Double(manifest.files.reduce(0) { $0 + $1.bytes })]
            }),
            ("pgbackrest backup --type=full (lz4, process-max=2)", {
                let before = Set((try? FileManager.default.contentsOfDirectory(atPath: scratch + "/pgbackrest/repo/backup/\(self.stanza)")) ?? [])
                let start = ContinuousClock.now
                try await self.asPostgres(self.pgbackrest, ["--config=\(config)", "--stanza=\(self.stanza)", "--type=full", "backup"], "pgbackrest backup")
                let seconds = Self.seconds(since: start)
                let after = Set(try FileManager.default.contentsOfDirectory(atPath: scratch + "/pgbackrest/repo/backup/\(self.stanza)"))
                guard let label = after.subtracting(before).first(where: { $0.hasSuffix("F") }) else { throw SandboxError("no new pgBackRest backup directory") }
                return ["seconds": seconds, "bytes": Double(FileSystem.size(of: scratch + "/pgbackrest/repo/backup/\(self.stanza)/\(label)"))]
            }),
            ("pg_basebackup -Ft -z -c fast", {
                let target = pgbbRoot + "/\(UUID().uuidString.prefix(8))"
                let start = ContinuousClock.now
                let result = try await ProcessRunner.run(self.pgBin + "/pg_basebackup", ["-D", target, "-Ft", "-z", "-c", "fast", "-d", cluster.url(database: "postgres")],
                                                         environment: self.environment(cluster))
                let seconds = Self.seconds(since: start)
                try self.check(result, "pg_basebackup")
                let bytes = FileSystem.size(of: target)
                try? FileManager.default.removeItem(atPath: target)
                return ["seconds": seconds, "bytes": Double(bytes)]
            }),
        ]
        let backups = try await interleaved("base backup", backupVariants, rounds: repetitions)
        results.measurements += backups

        // MARK: Writes after the backups, and the target
        log("\n== Writes to replay (\(walMB) MB of WAL), then the target time")
        let (target, markCheck) = try await writeAndMark(cluster, database: database)
        log("  target: \(Recover.timestamp(target)) (between the commits of marks 1 and 2)")

        // MARK: Recoveries
        log("\n== Recovery to the target time (\(repetitions) interleaved rounds; load average \(Bench.loadAverage()))")
        var tsSteps: [String: [Double]] = [:]
        let recoverVariants: [Variant] = [
            ("tsbackup recover --to-time (verified, promoted)", {
                let pgdata = scratch + "/recovered/ts-\(UUID().uuidString.prefix(8))"
                let port = try SandboxCluster.freeLoopbackPort()
                let start = ContinuousClock.now
                let result = try await ProcessRunner.run(self.tsbackup, ["recover", "--repo", tsRepo, "--to-time", Recover.timestamp(target),
                                                                         "--pgdata", pgdata, "--port", String(port), "--json"],
                                                         environment: self.environment(cluster))
                let seconds = Self.seconds(since: start)
                try self.check(result, "tsbackup recover")
                let report = try JSONOutput.decode(Recover.Report.self, from: Data(result.standardOutput.utf8))
                guard report.ok else { throw SandboxError("tsbackup recover reported a failed check: \(result.standardOutput.suffix(2000))") }
                for step in report.steps { tsSteps[step.name, default: []].append(step.seconds) }
                try await markCheck(port)
                await self.stopServer(pgdata)
                try? FileManager.default.removeItem(atPath: pgdata)
                return ["seconds": seconds]
            }),
            ("pgbackrest restore --type=time + start + promotion", {
                let pgdata = scratch + "/recovered/br-\(UUID().uuidString.prefix(8))"
                let port = try SandboxCluster.freeLoopbackPort()
                try FileManager.default.createDirectory(atPath: pgdata, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                try SandboxCluster.handToPostgres(pgdata)
                let start = ContinuousClock.now
                try await self.asPostgres(self.pgbackrest, ["--config=\(config)", "--stanza=\(self.stanza)", "--pg1-path=\(pgdata)", "--type=time",
                                                            "--target=\(Recover.timestamp(target))", "--target-action=promote", "restore"], "pgbackrest restore")
                // The restored configuration is the source's: only the port must differ.
                let auto = pgdata + "/postgresql.auto.conf"
                let text = (try? String(contentsOfFile: auto, encoding: .utf8)) ?? ""
                try (text + "\nport = \(port)\n").write(toFile: auto, atomically: true, encoding: .utf8)
                try SandboxCluster.handToPostgres(auto)
                try await self.asPostgres(self.pgBin + "/pg_ctl", ["-D", pgdata, "-l", pgdata + "/server.log", "-W", "start"], "pg_ctl start")
                try await self.waitForPromotion(cluster, port: port, pgdata: pgdata)
                let seconds = Self.seconds(since: start)
                try await markCheck(port)
                await self.stopServer(pgdata)
                try? FileManager.default.removeItem(atPath: pgdata)
                return ["seconds": seconds]
            }),
        ]
        let recoveries = try await interleaved("recovery", recoverVariants, rounds: repetitions)
        results.measurements += recoveries
        let stepText = tsSteps.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, Measurement.median($0.value)) }.joined(separator: ", ")
        log("    tsbackup recover steps (medians, s): " + stepText)
        results.findings.append(.init(scenario: "pitr", name: "tsbackup recover steps (medians, s)", value: nil, text: stepText))

        // MARK: Per segment
        log("\n== One process per 16 MB segment (\(pushSegments) real segments x \(repetitions) rounds; load average \(Bench.loadAverage()))")
        let fetched = try await fetchSegments(cluster, tsRepo: tsRepo, scratch: scratch, count: pushSegments + 1)
        let (push, fetch, stored) = try await perSegment(Array(fetched.dropFirst()), warmUp: fetched[0], cluster: cluster, scratch: scratch)
        results.measurements += push + fetch
        results.datasets["load average at end"] = Bench.loadAverage()

        // MARK: Table
        func row(_ name: String, _ ours: Measurement, _ theirs: Measurement, unit: String = "s", scale: Double = 1) -> [String] {
            let ratio = theirs.median / ours.median
            return [name, String(format: "%.2f %@", ours.median * scale, unit), String(format: "%.2f %@", theirs.median * scale, unit),
                    String(format: "%.2fx %@", ratio >= 1 ? ratio : 1 / ratio, ratio >= 1 ? "faster" : "SLOWER")]
        }
        var table = TextTable(header: ["ROW (medians of \(repetitions))", "TSBACKUP", "PGBACKREST", "TSBACKUP VS PGBACKREST"])
        table.add(row("base backup time", backups[0], backups[1]))
        let tsBytes = backups[0].medianCounter("bytes") ?? 0
        let brBytes = backups[1].medianCounter("bytes") ?? 0
        table.add(["base backup size", ByteCount.format(Int64(tsBytes)), ByteCount.format(Int64(brBytes)),
                   String(format: "%.2fx %@", tsBytes <= brBytes ? brBytes / tsBytes : tsBytes / brBytes, tsBytes <= brBytes ? "smaller" : "LARGER")])
        table.add(row("recover to a time: start to promoted server", recoveries[0], recoveries[1]))
        table.add(row("wal-push vs archive-push, per segment", push[0], push[1], unit: "ms", scale: 1000))
        table.add(row("wal-fetch vs archive-get, per segment", fetch[0], fetch[1], unit: "ms", scale: 1000))
        for (name, pair) in [("wal-push vs archive-push, CPU per segment", push), ("wal-fetch vs archive-get, CPU per segment", fetch)] {
            var ours = pair[0], theirs = pair[1]
            ours.seconds = ours.counters["cpu_seconds"] ?? []
            theirs.seconds = theirs.counters["cpu_seconds"] ?? []
            table.add(row(name, ours, theirs, unit: "ms", scale: 1000))
        }
        table.add(["WAL stored (of 16 MB segments)", String(format: "%.1f %%", stored.0 * 100), String(format: "%.1f %%", stored.1 * 100), ""])
        log("\n== PITR: tsbackup vs pgBackRest 2.45 (release: \(tsbackup.contains("/release/")))")
        log(table.render())
        let pgbb = backups[2]
        log(String(format: "  pg_basebackup -Ft -z -c fast: %.2f s, %@ (tsbackup %.2fx faster, %.2fx the size)",
                   pgbb.median, ByteCount.format(Int64(pgbb.medianCounter("bytes") ?? 0)), pgbb.median / backups[0].median,
                   tsBytes / (pgbb.medianCounter("bytes") ?? 1)))
        log("  load average: start \(results.datasets["load average at start"] ?? "?"), end \(results.datasets["load average at end"] ?? "?")")
        for (index, name) in ["base backup time", "", "recovery to a time"].enumerated() where !name.isEmpty {
            let pair = index == 0 ? (backups[0], backups[1]) : (recoveries[0], recoveries[1])
            results.findings.append(.init(scenario: "pitr", name: "\(name): pgBackRest / tsbackup", value: pair.1.median / pair.0.median,
                                          text: String(format: "%.2fx (tsbackup %.2f s, pgBackRest %.2f s)", pair.1.median / pair.0.median, pair.0.median, pair.1.median)))
        }
        results.findings.append(.init(scenario: "pitr", name: "base backup size: tsbackup / pgBackRest / pg_basebackup -z", value: tsBytes / brBytes,
                                      text: "\(ByteCount.format(Int64(tsBytes))) / \(ByteCount.format(Int64(brBytes))) / \(ByteCount.format(Int64(pgbb.medianCounter("bytes") ?? 0)))"))
        results.findings.append(.init(scenario: "pitr", name: "pg_basebackup -Ft -z / tsbackup base-backup", value: pgbb.median / backups[0].median,
                                      text: String(format: "%.2fx (%.2f s vs %.2f s)", pgbb.median / backups[0].median, pgbb.median, backups[0].median)))
        results.findings.append(.init(scenario: "pitr", name: "per segment: archive-push / wal-push", value: push[1].median / push[0].median,
                                      text: String(format: "%.2fx (%.0f ms vs %.0f ms); stored %.1f %% vs %.1f %%", push[1].median / push[0].median,
                                                   push[1].median * 1000, push[0].median * 1000, stored.1 * 100, stored.0 * 100)))
        results.findings.append(.init(scenario: "pitr", name: "per segment: archive-get / wal-fetch", value: fetch[1].median / fetch[0].median,
                                      text: String(format: "%.2fx (%.0f ms vs %.0f ms)", fetch[1].median / fetch[0].median, fetch[1].median * 1000, fetch[0].median * 1000)))
    }

    // MARK: Data

    /// TimescaleDB sample data grown device by device until the database reaches `sizeMB`:
    /// 1,080 hourly chunks of `public.conditions` plus the sample's other hypertables. The
    /// devices added after the sample's first four carry a 64-character note on each reading
    /// (two md5 hex strings), so 1 GB takes about half as many rows to load. Archiving
    /// discards this WAL; a VACUUM (hint bits, visibility map) and a CHECKPOINT follow so every
    /// backup reads the same settled files.
    func load(_ cluster: SandboxCluster, database: String) async throws -> String {
        log("\n== Loading about \(sizeMB) MB of TimescaleDB data (load average \(Bench.loadAverage()))")
        let start = ContinuousClock.now
        try await cluster.createDatabase(database)
        let first = 4
        let options = SampleData.Options(devices: first, days: Self.days, readingsPerDay: Self.readingsPerDay, chunkInterval: "1 hour",
                                         events: 20_000, eventsPerChunk: 1_000, sensors: 16, spacePartitions: 2)
        try await cluster.withSuperuser(database: database) { try await SampleData(options).load(into: $0) }
        let target = Int64(sizeMB) << 20
        var devices = first
        try await cluster.withSuperuser(database: database) { session in
            let empty = try await session.value("SELECT pg_database_size(current_database())", as: Int64.self)
            var size = empty
            let step = 86_400 / Self.readingsPerDay
            // The first batch measures what a device adds (the empty chunks' pages weigh a lot
            // at first); then batches of about 10 % of the target.
            var perDevice: Int64 = 0
            var batch = 8
            while size < target {
                if perDevice > 0 {
                    batch = Int(max(1, min(400, (target - size) / perDevice + 1, target / 10 / perDevice + 1)))
                }
                let (from, to) = (devices + 1, devices + batch)
                try await session.execute("""
                    INSERT INTO public.devices
                    SELECT d, 'device-' || lpad(d::text, 4, '0'), (ARRAY['north', 'south', 'east', 'west'])[1 + d % 4],
                           timestamptz '\(SampleData.epoch)' - make_interval(days => d)
                    FROM generate_series(\(from), \(to)) d
                    """)
                try await session.execute("""
                    INSERT INTO public.conditions (time, device_id, temperature, humidity, battery, note)
                    SELECT timestamptz '\(SampleData.epoch)' + make_interval(secs => g * \(step)), d,
                           round((20 + 8 * sin(g / 12.0) + d % 7)::numeric, 2)::float8,
                           CASE WHEN (g + d) % 50 = 0 THEN NULL ELSE round((55 + 20 * cos(g / 30.0 + d))::numeric, 1)::float8 END,
                           (100 - (g / \(Self.readingsPerDay)) % 100)::smallint,
                           CASE WHEN g % 97 = 0 THEN 'maintenance' ELSE md5(d::text || ':' || g::text) || md5(g::text) END
                    FROM generate_series(\(from), \(to)) d, generate_series(0, \(Self.days * Self.readingsPerDay - 1)) g
                    """)
                devices = to
                let grown = try await session.value("SELECT pg_database_size(current_database())", as: Int64.self)
                perDevice = max(1, (grown - size) / Int64(batch))
                size = grown
                log("    \(devices) devices, \(ByteCount.format(size)) (\(Int(Self.seconds(since: start))) s, load average \(Bench.loadAverage()))")
            }
            try await session.execute("VACUUM ANALYZE")
            try await session.execute("CHECKPOINT")
        }
        let (bytes, chunks, rows, cluster_) = try await cluster.withSuperuser(database: database) {
            try await $0.row("""
                SELECT pg_database_size(current_database()), (SELECT count(*) FROM _timescaledb_catalog.chunk),
                       (SELECT count(*) FROM public.conditions), (SELECT sum(pg_database_size(oid))::int8 FROM pg_database)
                """, as: (Int64, Int64, Int64, Int64).self)
        }
        return "database \(database): \(ByteCount.format(bytes)), \(chunks) chunks, \(rows) rows in public.conditions; cluster \(ByteCount.format(cluster_)); loaded in \(Int(Self.seconds(since: start))) s"
    }

    /// About `walMB` of WAL in a plain table (replayed by every recovery), then two marks in a
    /// hypertable a second apart; the target lies between their commits. Waits until the
    /// segment holding them is in both archives (archive_command succeeds only then). Returns the
    /// target and a check that a recovered server holds mark 1 and not mark 2.
    func writeAndMark(_ cluster: SandboxCluster, database: String) async throws -> (Date, (Int) async throws -> Void) {
        let target: Date = try await cluster.withSuperuser(database: database) { session in
            try await session.execute("CREATE TABLE churn (id bigint, payload text)")
            try await session.execute("CREATE TABLE marks (t timestamptz NOT NULL, n int NOT NULL)")
            try await session.execute("SELECT create_hypertable('marks', 't', chunk_time_interval => interval '1 day')")
            let startLSN = try await session.value("SELECT pg_current_wal_lsn()::text", as: String.self)
            var written: Int64 = 0
            var batch = 0
            while written < Int64(walMB) << 20 {
                try await session.execute("INSERT INTO churn SELECT g, md5(g::text) || md5((g + \(batch))::text) FROM generate_series(1, 100000) g")
                batch += 1
                written = try await session.value("SELECT (pg_current_wal_lsn() - \(startLSN)::pg_lsn)::int8", as: Int64.self)
            }
            try await session.execute("INSERT INTO marks VALUES (clock_timestamp(), 1)")
            let afterFirst = try await session.value("SELECT clock_timestamp()", as: Date.self)
            try await Task.sleep(for: .milliseconds(1100))
            let beforeSecond = try await session.value("SELECT clock_timestamp()", as: Date.self)
            try await session.execute("INSERT INTO marks VALUES (clock_timestamp(), 2)")
            let segment = try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
            let deadline = ContinuousClock.now + .seconds(600)
            while try await session.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self) < segment {
                guard ContinuousClock.now < deadline else { throw SandboxError("segment \(segment) was not archived within 600 s") }
                try await Task.sleep(for: .milliseconds(200))
            }
            return afterFirst.addingTimeInterval(beforeSecond.timeIntervalSince(afterFirst) / 2)
        }
        let check: (Int) async throws -> Void = { port in
            var settings = cluster.settings(database: database)
            settings.port = port
            let marks = try await DatabaseSession.with(settings) { try await $0.values("SELECT n FROM marks ORDER BY n", as: Int32.self) }
            guard marks == [1] else { throw SandboxError("the server recovered on port \(port) holds marks \(marks), expected [1]") }
        }
        return (target, check)
    }

    /// About `megabytes` of WAL in a plain table, switched and archived.
    func writeChurn(_ cluster: SandboxCluster, megabytes: Int) async throws {
        try await cluster.withSuperuser { session in
            try await session.execute("CREATE TABLE churn (id bigint, payload text)")
            let startLSN = try await session.value("SELECT pg_current_wal_lsn()::text", as: String.self)
            var written: Int64 = 0
            var batch = 0
            while written < Int64(megabytes) << 20 {
                try await session.execute("INSERT INTO churn SELECT g, md5(g::text) || md5((g + \(batch))::text) FROM generate_series(1, 100000) g")
                batch += 1
                written = try await session.value("SELECT (pg_current_wal_lsn() - \(startLSN)::pg_lsn)::int8", as: Int64.self)
            }
            let segment = try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
            let deadline = ContinuousClock.now + .seconds(600)
            while try await session.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self) < segment {
                guard ContinuousClock.now < deadline else { throw SandboxError("segment \(segment) was not archived within 600 s") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: Per segment

    /// Plain copies of `count` archived segments of the churn (read back through wal-fetch).
    func fetchSegments(_ cluster: SandboxCluster, tsRepo: String, scratch: String, count: Int) async throws -> [String] {
        let last = try await cluster.withSuperuser { try await $0.value("SELECT last_archived_wal FROM pg_stat_archiver", as: String.self) }
        guard let lastName = WALFileName(last), lastName.isSegment else { throw SandboxError("bad segment name \(last)") }
        let lastNumber = lastName.segmentNumber(segmentSize: WALFileName.defaultSegmentSize)
        let directory = scratch + "/segments"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        var paths: [String] = []
        // Skip the last few (the marks and switches): the churn before them fills whole segments.
        for number in stride(from: lastNumber - 2, to: lastNumber - 2 - UInt64(count), by: -1) {
            let name = WALFileName(timeline: 1, segmentNumber: number, segmentSize: WALFileName.defaultSegmentSize).name
            let result = try await ProcessRunner.run(tsbackup, ["wal-fetch", name, directory + "/" + name, "--repo", tsRepo])
            try check(result, "tsbackup wal-fetch \(name)")
            chmod(directory + "/" + name, 0o644)
            paths.append(directory + "/" + name)
        }
        return paths.sorted()
    }

    /// Each segment pushed by each tool into a fresh repository per round (one process per
    /// segment, as archive_command runs), then fetched back; all run as this process's user.
    /// Before the timed pushes, `warmUp` is pushed untimed by each, so none pays for creating
    /// its archive (pgBackRest's stanza-create is untimed too). Besides wall time, each run's CPU
    /// time (user + system of the process and its children) is recorded: on a loaded machine
    /// the wall time is mostly waiting for a core. Every run goes through `/usr/bin/time`, which
    /// records its peak RSS and page faults (the same small cost for every tool).
    ///
    /// The measurements are tsbackup, pgBackRest, then (with `before`, an older tsbackup binary)
    /// that binary; the order of the tools rotates with every segment.
    func perSegment(_ segments: [String], warmUp: String, cluster: SandboxCluster, scratch: String) async throws -> ([Measurement], [Measurement], (Double, Double)) {
        struct Tool {
            var name: String
            var push: (String, String) -> (String, [String])
            var fetch: (String, String, String) -> (String, [String])
            var repoKind: String
        }
        var tools = [
            Tool(name: "tsbackup", push: { (self.tsbackup, ["wal-push", $0, "--repo", $1]) },
                 fetch: { (self.tsbackup, ["wal-fetch", $0, $1, "--repo", $2]) }, repoKind: "ts"),
            Tool(name: "pgbackrest", push: { (self.pgbackrest, ["--config=\($1)", "--stanza=\(self.stanza)", "archive-push", $0]) },
                 fetch: { (self.pgbackrest, ["--config=\($2)", "--stanza=\(self.stanza)", "archive-get", $0, $1]) }, repoKind: "br"),
        ]
        if let before {
            tools.append(Tool(name: "before", push: { (before, ["wal-push", $0, "--repo", $1]) },
                              fetch: { (before, ["wal-fetch", $0, $1, "--repo", $2]) }, repoKind: "before"))
        }
        var push = [Measurement(scenario: "pitr per segment", name: "tsbackup wal-push"),
                    Measurement(scenario: "pitr per segment", name: "pgbackrest archive-push (lz4)")]
        var fetch = [Measurement(scenario: "pitr per segment", name: "tsbackup wal-fetch"),
                     Measurement(scenario: "pitr per segment", name: "pgbackrest archive-get")]
        if before != nil {
            push.append(Measurement(scenario: "pitr per segment", name: "tsbackup wal-push, before (main)"))
            fetch.append(Measurement(scenario: "pitr per segment", name: "tsbackup wal-fetch, before (main)"))
        }
        // `tsbackup-wal` (the archive commands alone) beside the measured tsbackup: last.
        if let slim = slimExecutable {
            tools.append(Tool(name: "tsbackup-wal", push: { (slim, ["wal-push", $0, "--repo", $1]) },
                              fetch: { (slim, ["wal-fetch", $0, $1, "--repo", $2]) }, repoKind: "slim"))
            push.append(Measurement(scenario: "pitr per segment", name: "tsbackup-wal wal-push"))
            fetch.append(Measurement(scenario: "pitr per segment", name: "tsbackup-wal wal-fetch"))
        }
        var stored = (0.0, 0.0)
        let plain = Double(segments.count) * Double(16 << 20)
        let stats = scratch + "/time-stats"
        for round in 0..<repetitions {
            // Where each tool's archive lives this round: a tsbackup repository, or pgBackRest's config.
            var repos: [String] = []
            for tool in tools {
                if tool.repoKind == "br" {
                    let config = try writePgbackrestConfig(scratch: scratch, name: "push\(round)", repo: scratch + "/push-br-\(round)", cluster: cluster)
                    try check(try await ProcessRunner.run(pgbackrest, ["--config=\(config)", "--stanza=\(stanza)", "stanza-create"]), "pgbackrest stanza-create")
                    repos.append(config)
                } else {
                    repos.append(scratch + "/push-\(tool.repoKind)-\(round)")
                }
            }
            for (tool, repo) in zip(tools, repos) {
                let (executable, arguments) = tool.push(warmUp, repo)
                _ = try await timedProcess(executable, arguments, stats: stats)
            }
            func record(_ measurement: inout Measurement, _ run: TimedRun) {
                measurement.seconds.append(run.seconds)
                measurement.counters["cpu_seconds", default: []].append(run.cpuSeconds)
                measurement.counters["max_rss_kb", default: []].append(run.maxRSSKB)
                measurement.counters["minor_faults", default: []].append(run.minorFaults)
            }
            for (index, segment) in segments.enumerated() {
                for offset in 0..<tools.count {
                    let which = (index + round + offset) % tools.count
                    let (executable, arguments) = tools[which].push(segment, repos[which])
                    record(&push[which], try await timedProcess(executable, arguments, stats: stats))
                }
            }
            // The warm-up segment is stored too: measure what the timed ones added.
            stored = (Double(FileSystem.size(of: repos[0] + "/wal")) / (plain + Double(16 << 20)),
                      Double(FileSystem.size(of: scratch + "/push-br-\(round)/archive")) / (plain + Double(16 << 20)))
            let out = scratch + "/fetched"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            for (index, segment) in segments.enumerated() {
                let name = (segment as NSString).lastPathComponent
                for offset in 0..<tools.count {
                    let which = (index + round + offset) % tools.count
                    let (executable, arguments) = tools[which].fetch(name, out + "/\(tools[which].repoKind)-" + name, repos[which])
                    record(&fetch[which], try await timedProcess(executable, arguments, stats: stats))
                }
                for tool in tools {
                    let path = out + "/\(tool.repoKind)-" + name
                    guard FileManager.default.contentsEqual(atPath: path, andPath: segment) else {
                        throw SandboxError("\(tool.name) fetched \(name), which differs from the pushed segment")
                    }
                    try? FileManager.default.removeItem(atPath: path)
                }
            }
            for tool in tools { try? FileManager.default.removeItem(atPath: scratch + "/push-\(tool.repoKind)-\(round)") }
        }
        for measurement in push + fetch {
            let (low, high) = measurement.spread
            log("  " + measurement.name.padding(toLength: 40, withPad: " ", startingAt: 0)
                + String(format: " median %7.1f ms  (%.1f-%.1f)  CPU %.1f ms  peak RSS %.1f MB  minor faults %.0f", measurement.median * 1000, low * 1000, high * 1000,
                         (measurement.medianCounter("cpu_seconds") ?? 0) * 1000, (measurement.medianCounter("max_rss_kb") ?? 0) / 1024,
                         measurement.medianCounter("minor_faults") ?? 0))
        }
        log(String(format: "  stored: tsbackup %.1f %%, pgBackRest %.1f %% of the segments' 16 MB", stored.0 * 100, stored.1 * 100))
        return (push, fetch, stored)
    }

    /// Only the per-segment comparison (`--pitr-segments-only`): a small archiving cluster writes
    /// enough WAL for the segments, which are then pushed and fetched as in the full run.
    func runSegmentsOnly(into results: inout BenchResults) async throws {
        let scratch = try makeScratch()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let tsRepo = scratch + "/tsbackup-repo"
        try FileManager.default.createDirectory(atPath: tsRepo, withIntermediateDirectories: true)
        try SandboxCluster.handToPostgres(tsRepo)
        results.datasets["load average at start"] = Bench.loadAverage()
        let cluster = try await SandboxCluster.start(SandboxCluster.Options(
            durable: true, settings: ["max_wal_size": "'1GB'"], archiving: .init(tsbackup: tsbackup, repository: tsRepo)))
        do {
            log("\n== WAL to push: about \(pushSegments + 4) segments of churn")
            try await writeChurn(cluster, megabytes: (pushSegments + 4) * 16)
            log("\n== One process per 16 MB segment (\(pushSegments) real segments x \(repetitions) rounds; load average \(Bench.loadAverage()))")
            let fetched = try await fetchSegments(cluster, tsRepo: tsRepo, scratch: scratch, count: pushSegments + 1)
            let (push, fetch, stored) = try await perSegment(Array(fetched.dropFirst()), warmUp: fetched[0], cluster: cluster, scratch: scratch)
            results.measurements += push + fetch
            results.datasets["load average at end"] = Bench.loadAverage()
            var table = TextTable(header: ["PER SEGMENT (medians of \(push[0].seconds.count))", "WALL", "CPU", "PEAK RSS", "MINOR FAULTS"])
            for measurement in push + fetch {
                table.add([measurement.name, String(format: "%.1f ms", measurement.median * 1000),
                           String(format: "%.1f ms", (measurement.medianCounter("cpu_seconds") ?? 0) * 1000),
                           String(format: "%.1f MB", (measurement.medianCounter("max_rss_kb") ?? 0) / 1024),
                           String(format: "%.0f", measurement.medianCounter("minor_faults") ?? 0)])
            }
            log("\n" + table.render())
            for (verb, pair) in [("push", push), ("fetch", fetch)] {
                let text = String(format: "pgBackRest / tsbackup %.2fx (%.1f ms vs %.1f ms)", pair[1].median / pair[0].median, pair[1].median * 1000, pair[0].median * 1000)
                    + (before != nil ? String(format: "; before / after %.2fx (%.1f ms vs %.1f ms)", pair[2].median / pair[0].median, pair[2].median * 1000, pair[0].median * 1000) : "")
                results.findings.append(.init(scenario: "pitr", name: "per segment \(verb)", value: pair[1].median / pair[0].median, text: text))
                if slimExecutable != nil, let slim = pair.last {
                    results.findings.append(.init(scenario: "pitr", name: "per segment \(verb), tsbackup-wal", value: pair[1].median / slim.median,
                                                  text: String(format: "pgBackRest / tsbackup-wal %.2fx (%.1f ms vs %.1f ms)", pair[1].median / slim.median, pair[1].median * 1000, slim.median * 1000)))
                }
            }
            results.findings.append(.init(scenario: "pitr", name: "WAL stored: tsbackup / pgBackRest", value: stored.0 / stored.1,
                                          text: String(format: "%.1f %% vs %.1f %%", stored.0 * 100, stored.1 * 100)))
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    // MARK: Helpers

    /// A pgBackRest configuration with the fair settings, its paths under `scratch`.
    func writePgbackrestConfig(scratch: String, name: String, repo: String, cluster: SandboxCluster) throws -> String {
        let path = scratch + "/pgbackrest-\(name).conf"
        try """
            [global]
            repo1-path=\(repo)
            repo1-retention-full=100
            compress-type=lz4
            process-max=2
            start-fast=y
            log-level-console=warn
            log-level-file=off
            lock-path=\(scratch)/pgbackrest/lock-\(name)
            spool-path=\(scratch)/pgbackrest/spool-\(name)

            [\(stanza)]
            pg1-path=\(cluster.dataDirectory)
            pg1-port=\(cluster.port)
            pg1-socket-path=\(cluster.directory)
            pg1-user=postgres

            """.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        return path
    }

    func environment(_ cluster: SandboxCluster) -> [String: String?] {
        ["PGPASSWORD": cluster.superuserPassword, "PGHOST": nil, "PGPORT": nil, "PGDATABASE": nil, "PGOPTIONS": nil]
    }

    /// Runs as the `postgres` OS user (as PostgreSQL's own tools must) when this process is root.
    func asPostgres(_ executable: String, _ arguments: [String], _ what: String) async throws {
        let result = getuid() == 0
            ? try await ProcessRunner.run("runuser", ["-u", "postgres", "--", executable] + arguments, workingDirectory: "/")
            : try await ProcessRunner.run(executable, arguments)
        try check(result, what)
    }

    /// Wall seconds and CPU seconds (user + system, from this process's reaped children).
    /// Only one child runs at a time here, so the difference is that child's.
    struct TimedRun {
        var seconds: Double
        var cpuSeconds: Double
        var maxRSSKB: Double = 0
        var minorFaults: Double = 0
    }

    /// Runs a process and measures it; with `stats`, through `/usr/bin/time -f "%M %R" -o stats`
    /// for its peak RSS (KB) and minor page faults.
    func timedProcess(_ executable: String, _ arguments: [String], stats: String? = nil) async throws -> TimedRun {
        let cpuBefore = Self.childrenCPUSeconds()
        let start = ContinuousClock.now
        let result: ProcessResult
        if let stats {
            result = try await ProcessRunner.run("/usr/bin/time", ["-f", "%M %R", "-o", stats, executable] + arguments)
        } else {
            result = try await ProcessRunner.run(executable, arguments)
        }
        let seconds = Self.seconds(since: start)
        let cpu = Self.childrenCPUSeconds() - cpuBefore
        try check(result, (executable as NSString).lastPathComponent + " " + (arguments.first ?? ""))
        var run = TimedRun(seconds: seconds, cpuSeconds: cpu)
        if let stats {
            let fields = ((try? String(contentsOfFile: stats, encoding: .utf8)) ?? "").split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
            guard fields.count >= 2 else { throw SandboxError("/usr/bin/time wrote no figures for \(executable)") }
            run.maxRSSKB = fields[fields.count - 2]
            run.minorFaults = fields[fields.count - 1]
        }
        return run
    }

    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    func waitForPromotion(_ cluster: SandboxCluster, port: Int, pgdata: String) async throws {
        var settings = cluster.settings(database: "postgres")
        settings.port = port
        // `pg_ctl -W` returns before the postmaster has written its pid file.
        let started = ContinuousClock.now + .seconds(120)
        while !FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid"), ContinuousClock.now < started {
            try await Task.sleep(for: .milliseconds(20))
        }
        let deadline = ContinuousClock.now + .seconds(1800)
        while ContinuousClock.now < deadline {
            if !FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") {
                throw SandboxError("the server restored by pgBackRest stopped: \((try? String(contentsOfFile: pgdata + "/server.log", encoding: .utf8))?.suffix(1500) ?? "")")
            }
            if let inRecovery = try? await DatabaseSession.with(settings, { try await $0.value("SELECT pg_is_in_recovery()", as: Bool.self) }), !inRecovery {
                return
            }
            // tsbackup recover polls as often: neither side gains from the polling interval.
            try await Task.sleep(for: .milliseconds(300))
        }
        throw SandboxError("the server restored by pgBackRest did not promote within 30 minutes")
    }

    func stopServer(_ pgdata: String) async {
        guard FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") else { return }
        try? await asPostgres(pgBin + "/pg_ctl", ["-D", pgdata, "-m", "immediate", "-w", "-t", "120", "stop"], "pg_ctl stop")
    }

    func stopRecovered(_ scratch: String) async {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: scratch + "/recovered")) ?? [] {
            await stopServer(scratch + "/recovered/" + name)
        }
    }

    /// Runs the variants `rounds` times, the order rotating each round so a change in load hits
    /// them alike.
    func interleaved(_ scenario: String, _ variants: [(name: String, run: () async throws -> [String: Double])], rounds: Int) async throws -> [Measurement] {
        var measured = variants.map { Measurement(scenario: "pitr " + scenario, name: $0.name) }
        for round in 0..<rounds {
            for offset in 0..<variants.count {
                let index = (offset + round) % variants.count
                var counters = try await variants[index].run()
                let seconds = counters.removeValue(forKey: "seconds") ?? .nan
                measured[index].seconds.append(seconds)
                for (key, value) in counters { measured[index].counters[key, default: []].append(value) }
                let bytes = counters["bytes"].map { "  " + ByteCount.format(Int64($0)) } ?? ""
                log("  round \(round + 1): " + variants[index].name.padding(toLength: 52, withPad: " ", startingAt: 0)
                    + String(format: " %7.2f s", seconds) + bytes + "  (load \(Bench.loadAverage()))")
            }
        }
        for measurement in measured {
            let (low, high) = measurement.spread
            var line = "  " + measurement.name.padding(toLength: 52, withPad: " ", startingAt: 0)
                + String(format: " median %7.2f s  (%.2f-%.2f)", measurement.median, low, high)
            if let bytes = measurement.medianCounter("bytes") { line += "  " + ByteCount.format(Int64(bytes)) }
            log(line)
        }
        return measured
    }

    func check(_ result: ProcessResult, _ what: String) throws {
        guard result.succeeded else {
            throw SandboxError("\(what) failed (\(result.statusDescription)): \(result.standardError.suffix(1500)) \(result.standardOutput.suffix(1500))")
        }
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}

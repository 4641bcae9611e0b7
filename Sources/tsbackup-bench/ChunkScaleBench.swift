import Foundation
import PostgresNIO
import Synchronization
import TSBackup
import TSBackupSandbox

/// Restore at thousands of chunks, and the chunk-count points past pg_dump's lock limit.
extension Bench {
    /// The machine's 1-minute load average, for the log: a shared 2-core machine's figures
    /// mean little without it.
    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    }

    /// `--restore-chunks N`: at N hourly chunks, the documented procedure against
    /// `tsbackup restore --jobs 2` (and, with TSBACKUP_BENCH_BEFORE=<binary>, an older tsbackup's
    /// restore of the same backup), interleaved run by run so load hits all alike. Every
    /// restore is checked against the source by content digests; WAL syncs are counted.
    func restoreChunkScenario(_ count: Int) async throws {
        let scenario = "restore at \(count) chunks"
        let skipDocumented = ProcessInfo.processInfo.environment["TSBACKUP_BENCH_SKIP_DOCUMENTED"] == "1"
        log("\n== Restore at \(count) hourly chunks (\(repetitions) runs each, interleaved)")
        let database = "restore_\(count)"
        let days = max(1, count / 24)
        let options = SampleData.Options(devices: 2, days: days, readingsPerDay: 24, chunkInterval: "1 hour",
                                         events: 100, eventsPerChunk: 100, sensors: 1, spacePartitions: 2)
        try await createDataset(database, options, label: "restore: \(days * 24) hourly chunks")
        let source = try await digests(database)
        let dump = work + "/\(database).pgdump"
        _ = try await pgDump(database, ["--format=custom", "--file=\(dump)"], output: dump, keep: true)
        let backup = try await tsbackupBackup(database, [])
        // The default backup's format is chosen per database (custom for many small chunks): its
        // restore is compared with the restore of a directory-format backup, the default before.
        let directoryBackup = try await tsbackupBackup(database, ["--format", "directory"])
        var binaries = [("tsbackup restore (this build, default backup)", tsbackup, backup),
                        ("tsbackup restore (this build, --format directory backup)", tsbackup, directoryBackup)]
        if let before = ProcessInfo.processInfo.environment["TSBACKUP_BENCH_BEFORE"], !before.isEmpty {
            binaries.append(("tsbackup restore (before)", before, directoryBackup))
        }
        var runs: [String: Measurement] = [:]
        var steps: [String: [String: [Double]]] = [:]
        var identical = true
        func record(_ name: String, _ counters: [String: Double], load: String) {
            var measurement = runs[name] ?? Measurement(scenario: scenario, name: name)
            var counters = counters
            measurement.seconds.append(counters.removeValue(forKey: "seconds") ?? .nan)
            for (key, value) in counters { measurement.counters[key, default: []].append(value) }
            runs[name] = measurement
            log(String(format: "    %@: %.2f s (load %@ before, %@ after)", name, measurement.seconds.last ?? 0, load, Self.loadAverage()))
        }
        for run in 1...repetitions {
            log("  round \(run) of \(repetitions)")
            var load = Self.loadAverage()
            if !skipDocumented {
                let into = "documented_\(run)"
                let walBefore = try await walSyncs()
                let seconds = try await documentedRestore(dump, into: into)
                let walAfter = try await walSyncs()
                if identical { identical = try await digests(into) == source }
                try await dropDatabase(into)
                record("documented procedure (serial pg_restore -Fc)", ["seconds": seconds, "wal_sync": Double(walAfter.0 - walBefore.0)], load: load)
            }
            for (name, binary, backup) in binaries {
                load = Self.loadAverage()
                let into = "tsrestore_\(run)"
                let walBefore = try await walSyncs()
                var counters = try await tsbackupRestore(repository: backup.repository, id: backup.id, into: into, binary: binary) { report in
                    for step in report.steps { steps[name, default: [:]][step.name, default: []].append(step.seconds) }
                }
                let walAfter = try await walSyncs()
                if identical { identical = try await digests(into) == source }
                try await dropDatabase(into)
                counters["wal_sync"] = Double(walAfter.0 - walBefore.0)
                record(name, counters, load: load)
            }
        }
        // TSBACKUP_BENCH_SKIP_DOCUMENTED=1 compares the tsbackup restores only (the documented
        // procedure takes minutes per round at thousands of chunks): ratios are then to the first.
        let documented = runs["documented procedure (serial pg_restore -Fc)"] ?? runs[binaries[0].0]!
        var ordered = skipDocumented ? [] : [documented]
        for (name, _, _) in binaries { ordered.append(runs[name]!) }
        for measurement in ordered {
            let (low, high) = measurement.spread
            var line = "  " + measurement.name.padding(toLength: 48, withPad: " ", startingAt: 0)
                + String(format: " median %7.2f s (%.2f-%.2f)  %.2fx faster than %@", measurement.median, low, high, documented.median / measurement.median,
                                  skipDocumented ? "the default backup's restore" : "documented")
            if let wal = measurement.medianCounter("wal_sync") { line += String(format: "  wal_sync %.0f", wal) }
            if let rss = measurement.medianCounter("max_rss_kb") { line += String(format: "  rss %.0f MB", rss / 1024) }
            log(line)
            results.measurements.append(measurement)
            if measurement.name != documented.name {
                results.findings.append(.init(scenario: scenario, name: "speedup: documented / \(measurement.name), verified", value: documented.median / measurement.median,
                                              text: String(format: "%.2fx (%.2f s vs %.2f s)", documented.median / measurement.median, documented.median, measurement.median)))
                let breakdown = (steps[measurement.name] ?? [:]).map { ($0.key, Measurement.median($0.value)) }.sorted { $0.1 > $1.1 }
                log("    steps (medians): " + breakdown.prefix(8).map { String(format: "%@ %.2f", $0.0, $0.1) }.joined(separator: ", "))
            }
        }
        results.findings.append(.init(scenario: scenario, name: "identical content (md5 of every table's ordered rows vs the source)",
                                      value: identical ? 1 : 0, text: identical ? "identical" : "DIFFERENT"))
        try? FileManager.default.removeItem(atPath: dump)
        try? FileManager.default.removeItem(atPath: backup.repository)
        try? FileManager.default.removeItem(atPath: directoryBackup.repository)
        try await dropDatabase(database)
    }
}

/// `--scale-chunks N...`: chunk counts past pg_dump's lock limit on a cluster with PostgreSQL's
/// default `max_locks_per_transaction = 64` and `max_connections = 100`. The data is built in
/// bounded time: several hypertables with hourly chunks and two rows per chunk, inserted in
/// statements of at most 500 chunks each (one transaction must not lock more chunks than the
/// lock table holds), the hypertables split over two connections, with fsync and autovacuum off
/// while loading (both are reload-time settings).
///
/// No foreign key from the hypertables: every chunk of a hypertable with one gets its own
/// constraint, with two triggers on the referenced table, and each new constraint makes the
/// next statement rebuild that table's relation cache with all of them. Measured on 6,000
/// hourly chunks of one hypertable (2026-11-27, load average about 25): 4.8 s for the first
/// 500 chunks, 38.0 s for the 12th 500 with the key, 2.1 s and 7.9 s without: the build (and
/// every restore's post-data) grows with the square of the chunk count. `--restore-chunks`
/// keeps a key per chunk at 5,040 chunks.
struct ChunkScalePoints {
    /// At most this many chunks per hypertable: a statement over a whole hypertable (ANALYZE of
    /// its root, a count without a time range) locks every chunk of it in one transaction, and
    /// PostgreSQL's default lock table holds about 8,000 locks in all.
    static let chunksPerHypertable = 4_000

    /// Five hypertables, more when that would put more than ``chunksPerHypertable`` in one.
    static func hypertables(chunks: Int) -> Int {
        max(5, (chunks + chunksPerHypertable - 1) / chunksPerHypertable)
    }
    static let chunksPerStatement = 500
    /// Connections building hypertables at once.
    static let builders = 2

    /// What every hypertable refers to; run first.
    static let setup = [
        "CREATE TABLE public.sites (id integer PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO public.sites SELECT s, 'site-' || s FROM generate_series(1, 4) s",
    ]

    /// Hourly chunks of hypertable `table` (1-based) when `chunks` are spread over all of them.
    static func share(of table: Int, chunks: Int) -> Int {
        let count = Self.hypertables(chunks: chunks)
        return chunks / count + (table <= chunks % count ? 1 : 0)
    }

    /// The statements that create hypertable `table` and fill its share of `chunks` chunks.
    static func statements(table: Int, chunks: Int) -> [String] {
        let name = "public.metrics_\(table)"
        let share = Self.share(of: table, chunks: chunks)
        var statements = [
            """
            CREATE TABLE \(name) (
                time timestamptz NOT NULL,
                site_id integer NOT NULL,
                value double precision NOT NULL
            )
            """,
            "SELECT create_hypertable('\(name)', 'time', chunk_time_interval => interval '1 hour')",
            "CREATE INDEX metrics_\(table)_site_time_idx ON \(name) (site_id, time DESC)",
        ]
        var start = 0
        while start < share {
            let end = min(share, start + chunksPerStatement)
            statements.append(
                """
                INSERT INTO \(name)
                SELECT timestamptz '\(SampleData.epoch)' + make_interval(hours => h) + make_interval(mins => 30 * r), 1 + (h + r) % 4, h + r / 10.0
                FROM generate_series(\(start), \(end - 1)) h, generate_series(0, 1) r
                """)
            start = end
        }
        return statements
    }

    /// Rows the statements insert into the hypertables.
    static func rows(chunks: Int) -> Int { chunks * 2 }
}

extension Bench {
    /// At each chunk count: build the data, `pg_dump -Fc` (expected to fail past the lock
    /// limit; recorded either way), `tsbackup backup` (peak RSS), `tsbackup restore --jobs 2`
    /// (verified; peak RSS), and the root-level row count of the restore against the source.
    func scaleChunkScenario(_ counts: [Int]) async throws {
        let scenario = "chunk scale, default lock settings"
        let locks = try await cluster.withSuperuser {
            try await $0.row("SELECT current_setting('max_locks_per_transaction'), current_setting('max_connections')", as: (String, String).self)
        }
        log("\n== Chunk scale on max_locks_per_transaction = \(locks.0), max_connections = \(locks.1)")
        for count in counts {
            let database = "scale_\(count)"
            log("  creating \(count) chunks over \(ChunkScalePoints.hypertables(chunks: count)) hypertables on \(ChunkScalePoints.builders) connections (fsync and autovacuum off while loading) ... load \(Self.loadAverage())")
            let buildStart = ContinuousClock.now
            try await cluster.withSuperuser { session in
                try await session.execute("ALTER SYSTEM SET fsync = off")
                try await session.execute("ALTER SYSTEM SET autovacuum = off")
                try await session.execute("SELECT pg_reload_conf()")
            }
            try await cluster.createDatabase(database)
            try await cluster.withSuperuser(database: database) { session in
                for statement in ChunkScalePoints.setup { try await session.execute(statement) }
            }
            // Each builder takes the next hypertable not yet taken, so they finish together.
            let cluster = self.cluster
            let next = NextNumber()
            let hypertables = ChunkScalePoints.hypertables(chunks: count)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<ChunkScalePoints.builders {
                    group.addTask {
                        try await cluster.withSuperuser(database: database) { session in
                            try await session.execute("SET synchronous_commit = off")
                            while true {
                                let table = next.take()
                                guard table <= hypertables else { break }
                                for statement in ChunkScalePoints.statements(table: table, chunks: count) { try await session.execute(statement) }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await cluster.withSuperuser(database: database) { try await $0.execute("ANALYZE") }
            try await cluster.withSuperuser { session in
                try await session.execute("ALTER SYSTEM RESET fsync")
                try await session.execute("ALTER SYSTEM RESET autovacuum")
                try await session.execute("SELECT pg_reload_conf()")
                try await session.execute("CHECKPOINT")
            }
            let elapsed = (ContinuousClock.now - buildStart).components
            let built = String(format: "%.1f s", Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
            let (bytes, chunks) = try await cluster.withSuperuser(database: database) {
                try await $0.row("SELECT pg_database_size(current_database()), (SELECT count(*) FROM _timescaledb_catalog.chunk)", as: (Int64, Int64).self)
            }
            let rows = try await rowsThroughRoots(database, chunks: count)
            if rows != Int64(ChunkScalePoints.rows(chunks: count)) { log("    WARNING: \(rows) rows through the roots, \(ChunkScalePoints.rows(chunks: count)) inserted") }
            results.datasets["chunk scale: \(count)"] = "\(chunks) chunks over \(ChunkScalePoints.hypertables(chunks: count)) hypertables, \(rows) rows, \(ByteCount.format(bytes)) database, built in \(built)"
            log("    \(chunks) chunks, \(rows) hypertable rows, \(ByteCount.format(bytes)), built in \(built) (load \(Self.loadAverage()))")

            let dump = work + "/\(database).pgdump"
            var load = Self.loadAverage()
            var pgDumpResult: ProcessResult?
            let pgDumpSeconds = try await timed {
                pgDumpResult = try await ProcessRunner.run("/usr/bin/time", ["-f", "TSBACKUP_MAX_RSS_KB=%M", pgBin + "/pg_dump", "--format=custom", "--file=\(dump)", "--no-password", database],
                                                           environment: environment)
            }
            let pgDumpFailure = pgDumpResult!.succeeded ? nil
                : pgDumpResult!.standardError.split(separator: "\n").first { $0.contains("error:") }.map(String.init) ?? pgDumpResult!.statusDescription
            log(String(format: "    pg_dump -Fc: %@ after %.2f s (load %@)", pgDumpFailure.map { "FAILED: \($0)" } ?? "ok, \(ByteCount.format(FileSystem.size(of: dump)))",
                       pgDumpSeconds, load))
            try? FileManager.default.removeItem(atPath: dump)

            load = Self.loadAverage()
            let backup = try await tsbackupBackup(database, [])
            let manifestPath = "\(backup.repository)/backups/\(backup.id)/manifest.json"
            let manifestBytes = FileSystem.size(of: manifestPath)
            log(String(format: "    tsbackup backup: %.2f s, %@, peak RSS %.0f MB (tsbackup itself %.1f MB), manifest %@ (load %@ before, %@ after)",
                       backup.counters["seconds"] ?? 0, ByteCount.format(Int64(backup.counters["bytes"] ?? 0)), (backup.counters["max_rss_kb"] ?? 0) / 1024,
                       (backup.counters["own_rss_kb"] ?? 0) / 1024,
                       ByteCount.format(manifestBytes), load, Self.loadAverage()))

            load = Self.loadAverage()
            let into = "restored_\(count)"
            var stepLine = ""
            let restore = try await tsbackupRestore(repository: backup.repository, id: backup.id, into: into, binary: tsbackup) { report in
                stepLine = report.steps.sorted { $0.seconds > $1.seconds }.prefix(6).map { String(format: "%@ %.1f", $0.name, $0.seconds) }.joined(separator: ", ")
            }
            let restoredRows = try await rowsThroughRoots(into, chunks: count)
            log(String(format: "    tsbackup restore --jobs 2: %.2f s, verified, peak RSS %.0f MB, rows through the roots %lld of %lld (load %@ before, %@ after)",
                       restore["seconds"] ?? 0, (restore["max_rss_kb"] ?? 0) / 1024, restoredRows, rows, load, Self.loadAverage()))
            log("    restore steps: " + stepLine)
            try await dropDatabase(into)

            var measurement = Measurement(scenario: scenario, name: "\(count) chunks: tsbackup backup", seconds: [backup.counters["seconds"] ?? .nan])
            measurement.counters = ["max_rss_kb": [backup.counters["max_rss_kb"] ?? 0], "bytes": [backup.counters["bytes"] ?? 0], "manifest_bytes": [Double(manifestBytes)]]
            results.measurements.append(measurement)
            var restored = Measurement(scenario: scenario, name: "\(count) chunks: tsbackup restore", seconds: [restore["seconds"] ?? .nan])
            restored.counters = ["max_rss_kb": [restore["max_rss_kb"] ?? 0]]
            results.measurements.append(restored)
            results.findings.append(.init(
                scenario: scenario, name: "\(count) chunks", value: Double(count),
                text: String(format: "pg_dump -Fc %@; tsbackup backup %.1f s (peak RSS %.0f MB, manifest %@), restore %.1f s verified (peak RSS %.0f MB), rows %@",
                             pgDumpFailure.map { "failed (\($0))" } ?? String(format: "ok in %.1f s", pgDumpSeconds),
                             backup.counters["seconds"] ?? 0, (backup.counters["max_rss_kb"] ?? 0) / 1024, ByteCount.format(manifestBytes),
                             restore["seconds"] ?? 0, (restore["max_rss_kb"] ?? 0) / 1024, restoredRows == rows ? "identical" : "DIFFERENT")))
            try? FileManager.default.removeItem(atPath: backup.repository)
            try await dropDatabase(database)
        }
    }
}

/// Hands out 1, 2, 3, ... to concurrent takers.
final class NextNumber: Sendable {
    private let value = Mutex(1)

    func take() -> Int {
        value.withLock { value in
            defer { value += 1 }
            return value
        }
    }
}

extension Bench {
    /// Rows of every hypertable counted through its root, in windows of at most 1,000 hourly
    /// chunks: one count over all chunks of a hypertable would lock them all in one transaction,
    /// past the default lock table.
    func rowsThroughRoots(_ database: String, chunks: Int) async throws -> Int64 {
        try await cluster.withSuperuser(database: database) { session in
            var total: Int64 = 0
            let share = chunks / ChunkScalePoints.hypertables(chunks: chunks) + 1
            for table in 1...ChunkScalePoints.hypertables(chunks: chunks) {
                var start = 0
                while start < share {
                    total += try await session.value(PostgresQuery(unsafeSQL: """
                        SELECT count(*) FROM public.metrics_\(table)
                        WHERE time >= timestamptz '\(SampleData.epoch)' + make_interval(hours => \(start))
                          AND time < timestamptz '\(SampleData.epoch)' + make_interval(hours => \(start + 1_000))
                        """), as: Int64.self)
                    start += 1_000
                }
            }
            return total
        }
    }
}

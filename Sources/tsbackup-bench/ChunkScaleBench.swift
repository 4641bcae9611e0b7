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
/// bounded time: hypertables of at most ``chunksPerHypertable`` hourly chunks filled one after
/// the other, two rows per chunk, inserted in statements of at most 500 chunks each (one
/// transaction must not lock more chunks than the lock table holds), the hypertables split over
/// two connections, with fsync and autovacuum off while loading (both are reload-time settings).
///
/// The points share one database that grows from one point to the next (20,000 chunks, then
/// 30,000 more for 50,000): the layout of a smaller count is a prefix of a larger one's, so a
/// run builds the largest point's chunks once, not the sum of all points' chunks. The build
/// grows faster than the chunk count: every new chunk makes TimescaleDB 2.19's
/// `ts_chunk_copy_referencing_fk` scan `pg_constraint` without an index (54% of a chunk
/// creation's CPU at 7,000 chunks, perf, 2026-11-27), and `pg_constraint` gains a CHECK
/// constraint per chunk.
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

    /// Hypertables holding `chunks` chunks: full ones, then the rest in the last.
    static func hypertables(chunks: Int) -> Int {
        max(1, (chunks + chunksPerHypertable - 1) / chunksPerHypertable)
    }
    static let chunksPerStatement = 500
    /// Connections building hypertables at once.
    static let builders = 2
    /// The one database every point grows.
    static let database = "scale_chunks"

    /// What every hypertable refers to; run first.
    static let setup = [
        "CREATE TABLE public.sites (id integer PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO public.sites SELECT s, 'site-' || s FROM generate_series(1, 4) s",
    ]

    /// Hourly chunks of hypertable `table` (1-based) when the database holds `chunks`: hours
    /// 0 ..< share, the hypertables filled in order.
    static func share(of table: Int, chunks: Int) -> Int {
        min(chunksPerHypertable, max(0, chunks - (table - 1) * chunksPerHypertable))
    }

    /// The statements that take hypertable `table` from `existing` hourly chunks (0: it does
    /// not exist yet) to its share of `chunks`.
    static func statements(table: Int, existing: Int, chunks: Int) -> [String] {
        let name = "public.metrics_\(table)"
        let share = Self.share(of: table, chunks: chunks)
        var statements: [String] = []
        if existing == 0 {
            statements += [
                """
                CREATE TABLE IF NOT EXISTS \(name) (
                    time timestamptz NOT NULL,
                    site_id integer NOT NULL,
                    value double precision NOT NULL
                )
                """,
                "SELECT create_hypertable('\(name)', 'time', chunk_time_interval => interval '1 hour', if_not_exists => true)",
                "CREATE INDEX IF NOT EXISTS metrics_\(table)_site_time_idx ON \(name) (site_id, time DESC)",
            ]
        }
        var start = existing
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

/// What `--scale-chunks` runs at each point (all by default).
struct ScaleSteps: OptionSet, Sendable {
    let rawValue: Int
    static let pgDump = ScaleSteps(rawValue: 1)
    static let backup = ScaleSteps(rawValue: 2)
    static let restore = ScaleSteps(rawValue: 4)
    static let all: ScaleSteps = [.pgDump, .backup, .restore]
}

extension Bench {
    /// Hourly chunks each `metrics_N` hypertable of the scale database holds now (from the
    /// catalog; a statement adds 500 chunks at once or none, so they are hours 0 ..< n).
    func existingScaleChunks() async throws -> [Int: Int] {
        let exists = try await cluster.withSuperuser {
            try await $0.value(PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_database WHERE datname = '\(ChunkScalePoints.database)'"), as: Int64.self)
        }
        guard exists > 0 else { return [:] }
        let rows = try await cluster.withSuperuser(database: ChunkScalePoints.database) {
            try await $0.rows(PostgresQuery(unsafeSQL: """
                SELECT h.table_name, (SELECT count(*) FROM _timescaledb_catalog.chunk c WHERE c.hypertable_id = h.id AND NOT c.dropped)
                FROM _timescaledb_catalog.hypertable h WHERE h.schema_name = 'public' AND h.table_name LIKE 'metrics\\_%'
                """), as: (String, Int64).self)
        }
        var result: [Int: Int] = [:]
        for (name, chunks) in rows {
            if let table = Int(name.dropFirst("metrics_".count)) { result[table] = Int(chunks) }
        }
        return result
    }

    /// Grows the scale database to `count` chunks (creating it first if needed); returns what
    /// it built and how long that took.
    func buildScaleChunks(_ count: Int) async throws -> (chunks: Int, seconds: Double) {
        let database = ChunkScalePoints.database
        let existing = try await existingScaleChunks()
        let hypertables = ChunkScalePoints.hypertables(chunks: count)
        let missing = (1...hypertables).reduce(0) { $0 + max(0, ChunkScalePoints.share(of: $1, chunks: count) - (existing[$1] ?? 0)) }
        if existing.values.reduce(0, +) > count {
            throw SandboxError("the scale database already holds \(existing.values.reduce(0, +)) chunks, more than \(count); run the points in ascending order or drop \(database)")
        }
        guard missing > 0 else { return (0, 0) }
        log("  creating \(missing) more chunks (to \(count) over \(hypertables) hypertables) on \(ChunkScalePoints.builders) connections (fsync and autovacuum off while loading) ... load \(Self.loadAverage())")
        let seconds = try await timed {
            try await cluster.withSuperuser { session in
                try await session.execute("ALTER SYSTEM SET fsync = off")
                try await session.execute("ALTER SYSTEM SET autovacuum = off")
                try await session.execute("SELECT pg_reload_conf()")
            }
            if existing.isEmpty {
                try await cluster.createDatabase(database)
                try await cluster.withSuperuser(database: database) { session in
                    for statement in ChunkScalePoints.setup { try await session.execute(statement) }
                }
            }
            // Each builder takes the next hypertable not yet taken, so they finish together.
            let cluster = self.cluster
            let next = NextNumber()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<ChunkScalePoints.builders {
                    group.addTask {
                        try await cluster.withSuperuser(database: database) { session in
                            try await session.execute("SET synchronous_commit = off")
                            while true {
                                let table = next.take()
                                guard table <= hypertables else { break }
                                for statement in ChunkScalePoints.statements(table: table, existing: existing[table] ?? 0, chunks: count) {
                                    try await session.execute(statement)
                                }
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
        }
        return (missing, seconds)
    }

    /// At each chunk count, in ascending order: grow the data, `pg_dump -Fc` (expected to fail
    /// past the lock limit; recorded either way), `tsbackup backup` (peak RSS), `tsbackup
    /// restore --jobs 2` (verified; peak RSS), and the root-level row count of the restore
    /// against the source. With `keepSource` the scale database stays for the next run.
    func scaleChunkScenario(_ counts: [Int], steps: ScaleSteps = .all, keepSource: Bool = false) async throws {
        let scenario = "chunk scale, default lock settings"
        let locks = try await cluster.withSuperuser {
            try await $0.row("SELECT current_setting('max_locks_per_transaction'), current_setting('max_connections')", as: (String, String).self)
        }
        log("\n== Chunk scale on max_locks_per_transaction = \(locks.0), max_connections = \(locks.1)")
        let database = ChunkScalePoints.database
        for count in counts.sorted() {
            let (builtChunks, buildSeconds) = try await buildScaleChunks(count)
            let built = builtChunks == 0 ? "already built" : String(format: "%d chunks built in %.1f s", builtChunks, buildSeconds)
            let (bytes, chunks) = try await cluster.withSuperuser(database: database) {
                try await $0.row("SELECT pg_database_size(current_database()), (SELECT count(*) FROM _timescaledb_catalog.chunk)", as: (Int64, Int64).self)
            }
            let rows = try await rowsThroughRoots(database, chunks: count)
            if rows != Int64(ChunkScalePoints.rows(chunks: count)) { log("    WARNING: \(rows) rows through the roots, \(ChunkScalePoints.rows(chunks: count)) inserted") }
            results.datasets["chunk scale: \(count)"] = "\(chunks) chunks over \(ChunkScalePoints.hypertables(chunks: count)) hypertables, \(rows) rows, \(ByteCount.format(bytes)) database, \(built)"
            log("    \(chunks) chunks, \(rows) hypertable rows, \(ByteCount.format(bytes)), \(built) (load \(Self.loadAverage()))")
            if builtChunks > 0 {
                results.measurements.append(Measurement(scenario: scenario, name: "\(count) chunks: build \(builtChunks) chunks", seconds: [buildSeconds]))
            }

            var pgDumpFailure: String?
            var pgDumpSeconds = Double.nan
            if steps.contains(.pgDump) {
                let dump = work + "/\(database).pgdump"
                let load = Self.loadAverage()
                var pgDumpResult: ProcessResult?
                pgDumpSeconds = try await timed {
                    pgDumpResult = try await ProcessRunner.run("/usr/bin/time", ["-f", "TSBACKUP_MAX_RSS_KB=%M", pgBin + "/pg_dump", "--format=custom", "--file=\(dump)", "--no-password", database],
                                                               environment: environment)
                }
                pgDumpFailure = pgDumpResult!.succeeded ? nil
                    : pgDumpResult!.standardError.split(separator: "\n").first { $0.contains("error:") }.map(String.init) ?? pgDumpResult!.statusDescription
                log(String(format: "    pg_dump -Fc: %@ after %.2f s (load %@ before, %@ after)", pgDumpFailure.map { "FAILED: \($0)" } ?? "ok, \(ByteCount.format(FileSystem.size(of: dump)))",
                           pgDumpSeconds, load, Self.loadAverage()))
                try? FileManager.default.removeItem(atPath: dump)
                var measurement = Measurement(scenario: scenario, name: "\(count) chunks: pg_dump -Fc (\(pgDumpFailure == nil ? "ok" : "failed"))", seconds: [pgDumpSeconds])
                measurement.counters = ["max_rss_kb": [maxRSS(pgDumpResult!.standardError) ?? 0]]
                results.measurements.append(measurement)
            }
            guard steps.contains(.backup) else { continue }

            var load = Self.loadAverage()
            let backup = try await tsbackupBackup(database, [])
            let manifestPath = "\(backup.repository)/backups/\(backup.id)/manifest.json"
            let manifestBytes = FileSystem.size(of: manifestPath)
            log(String(format: "    tsbackup backup: %.2f s, %@, peak RSS %.0f MB (tsbackup itself %.1f MB), manifest %@ (load %@ before, %@ after)",
                       backup.counters["seconds"] ?? 0, ByteCount.format(Int64(backup.counters["bytes"] ?? 0)), (backup.counters["max_rss_kb"] ?? 0) / 1024,
                       (backup.counters["own_rss_kb"] ?? 0) / 1024,
                       ByteCount.format(manifestBytes), load, Self.loadAverage()))
            var measurement = Measurement(scenario: scenario, name: "\(count) chunks: tsbackup backup", seconds: [backup.counters["seconds"] ?? .nan])
            measurement.counters = ["max_rss_kb": [backup.counters["max_rss_kb"] ?? 0], "bytes": [backup.counters["bytes"] ?? 0], "manifest_bytes": [Double(manifestBytes)]]
            results.measurements.append(measurement)
            let dumpText = !steps.contains(.pgDump) ? "not run" : pgDumpFailure.map { "failed (\($0))" } ?? String(format: "ok in %.1f s", pgDumpSeconds)
            guard steps.contains(.restore) else {
                results.findings.append(.init(
                    scenario: scenario, name: "\(count) chunks", value: Double(count),
                    text: String(format: "pg_dump -Fc %@; tsbackup backup %.1f s (peak RSS %.0f MB, manifest %@); restore not run", dumpText,
                                 backup.counters["seconds"] ?? 0, (backup.counters["max_rss_kb"] ?? 0) / 1024, ByteCount.format(manifestBytes))))
                try? FileManager.default.removeItem(atPath: backup.repository)
                continue
            }

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

            var restored = Measurement(scenario: scenario, name: "\(count) chunks: tsbackup restore", seconds: [restore["seconds"] ?? .nan])
            restored.counters = ["max_rss_kb": [restore["max_rss_kb"] ?? 0]]
            results.measurements.append(restored)
            results.findings.append(.init(
                scenario: scenario, name: "\(count) chunks", value: Double(count),
                text: String(format: "pg_dump -Fc %@; tsbackup backup %.1f s (peak RSS %.0f MB, manifest %@), restore %.1f s verified (peak RSS %.0f MB), rows %@",
                             dumpText,
                             backup.counters["seconds"] ?? 0, (backup.counters["max_rss_kb"] ?? 0) / 1024, ByteCount.format(manifestBytes),
                             restore["seconds"] ?? 0, (restore["max_rss_kb"] ?? 0) / 1024, restoredRows == rows ? "identical" : "DIFFERENT")))
            try? FileManager.default.removeItem(atPath: backup.repository)
        }
        if !keepSource { try await dropDatabase(database) }
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
    /// past the default lock table. A session per hypertable: the server keeps a cache entry for
    /// every chunk a session plans over, and one session for all 50,000 chunks grew to 760 MB.
    func rowsThroughRoots(_ database: String, chunks: Int) async throws -> Int64 {
        var total: Int64 = 0
        for table in 1...ChunkScalePoints.hypertables(chunks: chunks) {
            let share = ChunkScalePoints.share(of: table, chunks: chunks)
            total += try await cluster.withSuperuser(database: database) { session in
                var rows: Int64 = 0
                var start = 0
                while start < share {
                    rows += try await session.value(PostgresQuery(unsafeSQL: """
                        SELECT count(*) FROM public.metrics_\(table)
                        WHERE time >= timestamptz '\(SampleData.epoch)' + make_interval(hours => \(start))
                          AND time < timestamptz '\(SampleData.epoch)' + make_interval(hours => \(start + 1_000))
                        """), as: Int64.self)
                    start += 1_000
                }
                return rows
            }
        }
        return total
    }
}

import Foundation
import PostgresNIO
import TSBackup
import TSBackupSandbox

/// Runs every scenario against one durable sandbox cluster, side by side with the raw tools.
final class Bench {
    let cluster: SandboxCluster
    let tsbackup: String
    let pgBin = "/usr/lib/postgresql/15/bin"
    let work: String
    let repetitions: Int
    let scaleRepetitions: Int
    let full: Bool
    var results: BenchResults
    let log: (String) -> Void

    init(cluster: SandboxCluster, tsbackup: String, work: String, full: Bool, repetitions: Int,
         results: BenchResults, log: @escaping (String) -> Void) {
        self.cluster = cluster
        self.tsbackup = tsbackup
        self.work = work
        self.full = full
        self.repetitions = repetitions
        self.scaleRepetitions = full ? repetitions : 1
        self.results = results
        self.log = log
    }

    var environment: [String: String?] {
        ["PGHOST": "127.0.0.1", "PGPORT": String(cluster.port), "PGUSER": SandboxCluster.superuser,
         "PGPASSWORD": cluster.superuserPassword, "PGDATABASE": "postgres", "PGOPTIONS": nil]
    }

    // MARK: Scenarios

    func run() async throws {
        let base = full
            ? SampleData.Options(devices: 50, days: 60, readingsPerDay: 288, chunkInterval: "1 day", events: 200_000, eventsPerChunk: 20_000, sensors: 50, spacePartitions: 4)
            : SampleData.Options(devices: 20, days: 60, readingsPerDay: 96, chunkInterval: "1 day", events: 50_000, eventsPerChunk: 5_000, sensors: 20, spacePartitions: 2)
        try await createDataset("base", base)
        let backups = try await backupScenario(database: "base")
        try await restoreScenario(database: "base", customDump: backups.customDump, repository: backups.repository, id: backups.id)
        endToEnd()
        try await dropDatabase("base")
        try await scaleScenarios()
    }

    struct BaseBackups {
        var customDump: String
        var repository: String
        var id: String
    }

    func backupScenario(database: String) async throws -> BaseBackups {
        let scenario = "backup"
        log("\n== Backup (\(repetitions) runs each)")
        let custom = work + "/base.pgdump"
        let plain = try await repeatRuns(scenario, "pg_dump -Fc", repetitions) {
            try await self.pgDump(database, ["--format=custom", "--file=\(custom)"], output: custom, keep: true)
        }
        var pgDumpDirectory: [Int?: Measurement] = [:]
        for level in [0, 1, nil] as [Int?] {
            let label = "pg_dump -Fd -j2" + (level.map { " -Z\($0)" } ?? " (default -Z)")
            let out = work + "/base.dir"
            pgDumpDirectory[level] = try await repeatRuns(scenario, label, repetitions) {
                try await self.pgDump(database, ["--format=directory", "--jobs=2", "--file=\(out)"] + (level.map { ["--compress=\($0)"] } ?? []), output: out, keep: false)
            }
        }
        var keptRepository = ""
        var keptID = ""
        let tsDefault = try await repeatRuns(scenario, "tsbackup backup (default: -Fd -j2)", repetitions) {
            let run = try await self.tsbackupBackup(database, [])
            keptRepository = run.repository
            keptID = run.id
            return run.counters
        }
        let tsZ0 = try await repeatRuns(scenario, "tsbackup backup -j2 --compress 0", repetitions) {
            try await self.tsbackupBackup(database, ["--compress", "0"], keep: false).counters
        }
        let tsCustom = try await repeatRuns(scenario, "tsbackup backup --format custom", repetitions) {
            try await self.tsbackupBackup(database, ["--format", "custom"], keep: false).counters
        }
        let tsChecksums = try await repeatRuns(scenario, "tsbackup backup --checksums", repetitions) {
            try await self.tsbackupBackup(database, ["--checksums"], keep: false).counters
        }
        ratio(scenario, "tsbackup default / pg_dump -Fd -j2 (same settings)", tsDefault, pgDumpDirectory[nil]!)
        ratio(scenario, "tsbackup --compress 0 / pg_dump -Fd -j2 -Z0", tsZ0, pgDumpDirectory[0]!)
        ratio(scenario, "tsbackup --format custom / pg_dump -Fc", tsCustom, plain)
        ratio(scenario, "tsbackup --checksums / pg_dump -Fd -j2", tsChecksums, pgDumpDirectory[nil]!)
        ratio(scenario, "tsbackup default / pg_dump -Fc (what the documentation implies)", tsDefault, plain)
        return BaseBackups(customDump: custom, repository: keptRepository, id: keptID)
    }

    func restoreScenario(database: String, customDump: String, repository: String, id: String) async throws {
        let scenario = "restore"
        log("\n== Restore (\(repetitions) runs each)")
        let source = try await digests(database)
        var documentedSame = true
        var tsbackupSame = true
        let documented = try await repeatRuns(scenario, "documented procedure (serial pg_restore -Fc)", repetitions) {
            let into = "documented_\(UUID().uuidString.prefix(6).lowercased())"
            let walBefore = try await self.walSyncs()
            let seconds = try await self.documentedRestore(customDump, into: into)
            let walAfter = try await self.walSyncs()
            if documentedSame { documentedSame = try await self.digests(into) == source }
            try await self.dropDatabase(into)
            return ["seconds": seconds, "wal_sync": Double(walAfter.0 - walBefore.0), "wal_bytes": Double(walAfter.1 - walBefore.1)]
        }
        let restored = try await repeatRuns(scenario, "tsbackup restore (phased, -j2, verified)", repetitions) {
            let into = "tsrestore_\(UUID().uuidString.prefix(6).lowercased())"
            let walBefore = try await self.walSyncs()
            var counters = try await self.tsbackupRestore(repository: repository, id: id, into: into)
            let walAfter = try await self.walSyncs()
            if tsbackupSame { tsbackupSame = try await self.digests(into) == source }
            try await self.dropDatabase(into)
            counters["wal_sync"] = Double(walAfter.0 - walBefore.0)
            counters["wal_bytes"] = Double(walAfter.1 - walBefore.1)
            return counters
        }
        ratio(scenario, "speedup: documented / tsbackup restore (including verification)", documented, restored, inverse: true)
        if let procedure = restored.medianCounter("procedure_seconds") {
            results.findings.append(.init(scenario: scenario, name: "speedup: documented / tsbackup procedure only (preflight and verification excluded)",
                                          value: documented.median / procedure, text: String(format: "%.2fx (%.2f s vs %.2f s)", documented.median / procedure, documented.median, procedure)))
        }
        let walDocumented = documented.medianCounter("wal_sync") ?? 0
        let walTS = restored.medianCounter("wal_sync") ?? 0
        results.findings.append(.init(scenario: scenario, name: "WAL syncs (pg_stat_wal.wal_sync, median)", value: walTS,
                                      text: String(format: "documented %.0f, tsbackup %.0f", walDocumented, walTS)))
        results.findings.append(.init(scenario: scenario, name: "identical content (md5 of every table's ordered rows vs the source)",
                                      value: documentedSame && tsbackupSame ? 1 : 0,
                                      text: "documented: \(documentedSame ? "identical" : "DIFFERENT"), tsbackup: \(tsbackupSame ? "identical" : "DIFFERENT")"))
        try? FileManager.default.removeItem(atPath: customDump)
        try? FileManager.default.removeItem(atPath: repository)
    }

    func endToEnd() {
        func median(_ name: String) -> Double {
            results.measurements.first { $0.name == name }?.median ?? .nan
        }
        let documented = median("pg_dump -Fc") + median("documented procedure (serial pg_restore -Fc)")
        let tsbackup = median("tsbackup backup (default: -Fd -j2)") + median("tsbackup restore (phased, -j2, verified)")
        results.findings.append(.init(scenario: "end-to-end", name: "backup + restore, sum of medians: documented / tsbackup",
                                      value: documented / tsbackup,
                                      text: String(format: "documented %.2f s, tsbackup %.2f s: %.2fx", documented, tsbackup, documented / tsbackup)))
    }

    func scaleScenarios() async throws {
        log("\n== Scale (\(scaleRepetitions) run\(scaleRepetitions == 1 ? "" : "s") each\(full ? "" : ", quick mode"))")
        // Chunk count grows, rows stay small: one chunk per hour of one device.
        let chunkDays = full ? [42, 125, 210] : [10, 25, 50]
        for days in chunkDays {
            let options = SampleData.Options(devices: 2, days: days, readingsPerDay: 24, chunkInterval: "1 hour",
                                             events: 100, eventsPerChunk: 100, sensors: 1, spacePartitions: 2)
            try await scalePoint("chunks", name: "\(days * 24) chunks", x: Double(days * 24), options: options)
        }
        // Data grows, chunks stay few and large (30-day chunks).
        let sizes = full ? [(100, 96), (100, 384), (100, 1_440)] : [(20, 96), (20, 192), (20, 576)]
        for (devices, perDay) in sizes {
            let options = SampleData.Options(devices: devices, days: 60, readingsPerDay: perDay, chunkInterval: "30 days",
                                             events: 1_000, eventsPerChunk: 1_000, sensors: 2, spacePartitions: 2)
            try await scalePoint("size", name: "\(devices * 60 * perDay) rows", x: Double(devices * 60 * perDay), options: options)
        }
        // Wide rows: a 1 kB text column on every reading.
        let wide = SampleData.Options(devices: 10, days: 30, readingsPerDay: full ? 288 : 48, chunkInterval: "7 days",
                                      events: 1_000, eventsPerChunk: 1_000, sensors: 2, spacePartitions: 2, noteLength: 1_000)
        try await scalePoint("wide rows", name: "\(10 * 30 * (full ? 288 : 48)) rows x 1 kB", x: Double(10 * 30 * (full ? 288 : 48)), options: wide)
    }

    /// The data-heavy case (the "size" axis' 2.3 M-row point: few, large chunks): tsbackup's
    /// default backup against `pg_dump -Fc` and the compression levels a user may pick, in one
    /// run, runs interleaved so a change in the machine's load hits every variant alike.
    func defaultsScenario() async throws {
        let scenario = "default speed"
        let database = "heavy"
        let options = SampleData.Options(devices: 100, days: 60, readingsPerDay: 384, chunkInterval: "30 days",
                                         events: 1_000, eventsPerChunk: 1_000, sensors: 2, spacePartitions: 2)
        try await createDataset(database, options, label: "data-heavy: 2304000 rows")
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let out = work + "/heavy.out"
        typealias Variant = (name: String, run: () async throws -> [String: Double])
        let variants: [Variant] = [
            ("pg_dump -Fc", { try await self.pgDump(database, ["--format=custom", "--file=\(out)"], output: out, keep: false) }),
            ("pg_dump -Fd -j\(cores) -Z0 (no compression)", { try await self.pgDump(database, ["--format=directory", "--jobs=\(cores)", "--compress=0", "--file=\(out)"], output: out, keep: false) }),
            ("tsbackup backup (default: zstd:\(Backup.defaultZstdLevel))", { try await self.tsbackupBackup(database, [], keep: false).counters }),
            ("tsbackup backup --compress zstd:3", { try await self.tsbackupBackup(database, ["--compress", "zstd:3"], keep: false).counters }),
            ("tsbackup backup --compress zstd:6", { try await self.tsbackupBackup(database, ["--compress", "zstd:6"], keep: false).counters }),
            ("tsbackup backup --compress 2 (gzip, the old default)", { try await self.tsbackupBackup(database, ["--compress", "2"], keep: false).counters }),
            ("tsbackup backup --compress 4 (gzip)", { try await self.tsbackupBackup(database, ["--compress", "4"], keep: false).counters }),
        ]
        log("\n== Default speed (\(repetitions) interleaved runs each, \(cores) cores)")
        var measured = variants.map { Measurement(scenario: scenario, name: $0.name) }
        for _ in 0..<repetitions {
            for (index, variant) in variants.enumerated() {
                var counters = try await variant.run()
                measured[index].seconds.append(counters.removeValue(forKey: "seconds") ?? .nan)
                for (key, value) in counters { measured[index].counters[key, default: []].append(value) }
            }
        }
        let baseline = measured[0]
        let baselineBytes = baseline.medianCounter("bytes") ?? 1
        for measurement in measured {
            let bytes = measurement.medianCounter("bytes") ?? 0
            let (low, high) = measurement.spread
            log("  " + measurement.name.padding(toLength: 56, withPad: " ", startingAt: 0)
                + String(format: " median %7.2f s (%.2f-%.2f)  %@  %.2fx faster than -Fc at %.2fx its size",
                         measurement.median, low, high, ByteCount.format(Int64(bytes)), baseline.median / measurement.median, bytes / baselineBytes))
            results.measurements.append(measurement)
            results.findings.append(.init(scenario: scenario, name: measurement.name, value: baseline.median / measurement.median,
                                          text: String(format: "%.2f s, %.2fx faster than pg_dump -Fc, %.2fx its size", measurement.median,
                                                       baseline.median / measurement.median, bytes / baselineBytes)))
        }
        try await defaultsRestores(database)
        try await dropDatabase(database)
    }

    /// The restore of the default backup (zstd data files, decompressed into scratch space
    /// first) against that of the old default (`--compress 2`, gzip read by pg_restore), on the
    /// same data, interleaved, each verified and compared with the source by md5.
    func defaultsRestores(_ database: String) async throws {
        let scenario = "default speed: restore"
        let source = try await digests(database)
        let zstd = try await tsbackupBackup(database, [])
        let gzip = try await tsbackupBackup(database, ["--compress", "2"])
        defer {
            try? FileManager.default.removeItem(atPath: zstd.repository)
            try? FileManager.default.removeItem(atPath: gzip.repository)
        }
        let manifestData = try Data(contentsOf: URL(fileURLWithPath: "\(zstd.repository)/backups/\(zstd.id)/manifest.json"))
        let manifest = try JSONOutput.decode(BackupManifest.self, from: manifestData)
        if let packed = manifest.fileCompression {
            let toc = manifest.files.filter { $0.path.hasPrefix(manifest.archive + "/") && !$0.path.hasSuffix(".zst") }.reduce(Int64(0)) { $0 + $1.bytes }
            log("  default backup: \(packed.files) data files, \(ByteCount.format(packed.plainBytes)) as pg_dump wrote them (compressed as pg_dump finished each; plus \(ByteCount.format(toc)) of TOC), \(ByteCount.format(packed.bytes)) stored; compression phase \(String(format: "%.2f", manifest.phaseSeconds?["compression"] ?? 0)) s")
            results.findings.append(.init(scenario: scenario, name: "uncompressed staging bytes of the default backup", value: Double(packed.plainBytes),
                                          text: "\(ByteCount.format(packed.plainBytes)) staged uncompressed, \(ByteCount.format(packed.bytes)) stored"))
        }
        log("\n== Default speed: restore of the default backup (zstd) vs the old default (--compress 2), \(repetitions) interleaved runs each, verified")
        typealias Variant = (name: String, run: () async throws -> [String: Double])
        func restore(_ run: BackupRun) -> () async throws -> [String: Double] {
            return {
                let into = "heavy_restore_\(UUID().uuidString.prefix(6).lowercased())"
                var decompress = 0.0
                var counters = try await self.tsbackupRestore(repository: run.repository, id: run.id, into: into) { report in
                    decompress = report.steps.filter { $0.name.hasPrefix("decompress") }.reduce(0) { $0 + $1.seconds }
                }
                counters["decompress_seconds"] = decompress
                // 1 when the restored database is identical to the source (read back below).
                counters["identical"] = try await self.digests(into) == source ? 1 : 0
                try await self.dropDatabase(into)
                return counters
            }
        }
        let variants: [Variant] = [("tsbackup restore of the default backup (zstd)", restore(zstd)),
                                   ("tsbackup restore of a --compress 2 backup (gzip)", restore(gzip))]
        var measured = variants.map { Measurement(scenario: scenario, name: $0.name) }
        for _ in 0..<repetitions {
            for (index, variant) in variants.enumerated() {
                var counters = try await variant.run()
                measured[index].seconds.append(counters.removeValue(forKey: "seconds") ?? .nan)
                for (key, value) in counters { measured[index].counters[key, default: []].append(value) }
            }
        }
        let same = measured.allSatisfy { $0.counters["identical"]?.allSatisfy { $0 == 1 } ?? false }
        for measurement in measured {
            let (low, high) = measurement.spread
            log("  " + measurement.name.padding(toLength: 56, withPad: " ", startingAt: 0)
                + String(format: " median %7.2f s (%.2f-%.2f), decompress step %.2f s", measurement.median, low, high, measurement.medianCounter("decompress_seconds") ?? 0))
            results.measurements.append(measurement)
        }
        let ratio = measured[0].median / measured[1].median
        log(String(format: "  zstd restore / gzip restore: %.2fx the time; restored databases identical to the source: %@", ratio, same ? "yes" : "NO"))
        results.findings.append(.init(scenario: scenario, name: "restore time: default (zstd) / --compress 2 (gzip)", value: ratio,
                                      text: String(format: "%.2f s vs %.2f s (%.2fx), identical to the source: %@", measured[0].median, measured[1].median, ratio, same ? "yes" : "no")))
    }

    /// Where a backup's time goes per chunk: at each chunk count, `pg_dump -Fc`, tsbackup's
    /// default backup (whose format is chosen per database), `--format directory` (the default
    /// before the choice) and, with TSBACKUP_BENCH_BEFORE=<binary>, an older tsbackup's default,
    /// run interleaved (one run of each per round, so the machine's load hits all alike), with
    /// the phases tsbackup records in its manifest (`phase_seconds`), the manifest's size, the
    /// chosen format and the peak RSS.
    func chunkCostScenario(_ counts: [Int]) async throws {
        let scenario = "chunk costs"
        log("\n== Per-chunk costs (\(repetitions) interleaved runs each)")
        let before = ProcessInfo.processInfo.environment["TSBACKUP_BENCH_BEFORE"].flatMap { $0.isEmpty ? nil : $0 }
        for count in counts {
            let database = "chunks_\(count)"
            let days = max(1, count / 24)
            let options = SampleData.Options(devices: 2, days: days, readingsPerDay: 24, chunkInterval: "1 hour",
                                             events: 100, eventsPerChunk: 100, sensors: 1, spacePartitions: 2)
            try await createDataset(database, options, label: "chunk costs: \(days * 24) hourly chunks")
            let chunks = try await cluster.withSuperuser(database: database) {
                try await $0.value("SELECT count(*) FROM _timescaledb_catalog.chunk", as: Int64.self)
            }
            let dump = work + "/\(database).pgdump"
            var phases: [String: [Double]] = [:]
            var chosen: Set<String> = []
            typealias Variant = (name: String, run: () async throws -> [String: Double])
            var variants: [Variant] = [
                ("pg_dump -Fc", { try await self.pgDump(database, ["--format=custom", "--file=\(dump)"], output: dump, keep: false) }),
                ("tsbackup backup (default)", {
                    let run = try await self.tsbackupBackup(database, [])
                    let path = "\(run.repository)/backups/\(run.id)/manifest.json"
                    let data = try Data(contentsOf: URL(fileURLWithPath: path))
                    let manifest = try JSONOutput.decode(BackupManifest.self, from: data)
                    for (name, seconds) in manifest.phaseSeconds ?? [:] { phases[name, default: []].append(seconds) }
                    phases["manifest bytes", default: []].append(Double(data.count))
                    chosen.insert(manifest.format.rawValue + (manifest.formatChoice.map { " (\($0.chosenBy): \($0.reason))" } ?? ""))
                    let readStart = ContinuousClock.now
                    _ = try JSONOutput.decode(BackupManifest.self, from: data)
                    let read = ContinuousClock.now - readStart
                    phases["manifest read seconds", default: []].append(Double(read.components.attoseconds) / 1e18 + Double(read.components.seconds))
                    try? FileManager.default.removeItem(atPath: run.repository)
                    return run.counters
                }),
                ("tsbackup backup --format directory", { try await self.tsbackupBackup(database, ["--format", "directory"], keep: false).counters }),
            ]
            if let before {
                variants.append(("tsbackup backup (before: \(before))", { try await self.tsbackupBackup(database, [], keep: false, binary: before).counters }))
            }
            var measured = variants.map { Measurement(scenario: scenario, name: "\(chunks) chunks: \($0.name)") }
            for round in 1...repetitions {
                log("  \(chunks) chunks, round \(round) of \(repetitions)")
                for (index, variant) in variants.enumerated() {
                    let load = Self.loadAverage()
                    var counters = try await variant.run()
                    measured[index].seconds.append(counters.removeValue(forKey: "seconds") ?? .nan)
                    for (key, value) in counters { measured[index].counters[key, default: []].append(value) }
                    log(String(format: "    %@: %.2f s, %@, peak RSS %.1f MB (tsbackup itself %.1f MB) (load %@ before, %@ after)", variant.name, measured[index].seconds.last ?? 0,
                               ByteCount.format(Int64(counters["bytes"] ?? 0)), (counters["max_rss_kb"] ?? 0) / 1024, (counters["own_rss_kb"] ?? 0) / 1024,
                               load, Self.loadAverage()))
                }
            }
            let plain = measured[0]
            for measurement in measured {
                let (low, high) = measurement.spread
                log("  " + measurement.name.padding(toLength: 60, withPad: " ", startingAt: 0)
                    + String(format: " median %7.2f s (%.2f-%.2f)  x%.2f of pg_dump -Fc  %@  peak RSS %.1f MB (tsbackup itself %.1f MB)", measurement.median, low, high,
                             measurement.median / plain.median, ByteCount.format(Int64(measurement.medianCounter("bytes") ?? 0)),
                             (measurement.medianCounter("max_rss_kb") ?? 0) / 1024, (measurement.medianCounter("own_rss_kb") ?? 0) / 1024))
                results.measurements.append(measurement)
            }
            let breakdown = phases.sorted { $0.key < $1.key }.map { name, values in
                name == "manifest bytes" ? "\(name) \(Int(Measurement.median(values)))" : String(format: "%@ %.2f", name, Measurement.median(values))
            }.joined(separator: ", ")
            log("    default's phases (medians): " + breakdown)
            log("    default's format: " + chosen.sorted().joined(separator: "; "))
            let backup = measured[1]
            results.findings.append(.init(scenario: scenario, name: "\(chunks) chunks", value: backup.median / plain.median,
                                          text: String(format: "backup %.2f s vs pg_dump -Fc %.2f s (x%.2f), --format directory %.2f s, peak RSS %.0f MB; format %@; ",
                                                       backup.median, plain.median, backup.median / plain.median, measured[2].median,
                                                       (backup.medianCounter("max_rss_kb") ?? 0) / 1024, chosen.sorted().joined(separator: "; ")) + breakdown))
            try await dropDatabase(database)
        }
    }

    func scalePoint(_ axis: String, name: String, x: Double, options: SampleData.Options) async throws {
        let database = "scale_\(UUID().uuidString.prefix(6).lowercased())"
        let dataBytes = try await createDataset(database, options, label: "\(axis): \(name)")
        let scenario = "scale: \(axis)"
        let dump = work + "/\(database).pgdump"
        let pgDump = try await repeatRuns(scenario, "\(name): pg_dump -Fc", scaleRepetitions) {
            try await self.pgDump(database, ["--format=custom", "--file=\(dump)"], output: dump, keep: true)
        }
        var repository = ""
        var id = ""
        let backup = try await repeatRuns(scenario, "\(name): tsbackup backup", scaleRepetitions) {
            let run = try await self.tsbackupBackup(database, [])
            repository = run.repository
            id = run.id
            return run.counters
        }
        let documented = try await repeatRuns(scenario, "\(name): documented restore", scaleRepetitions) {
            let into = "documented_\(UUID().uuidString.prefix(6).lowercased())"
            let seconds = try await self.documentedRestore(dump, into: into)
            try await self.dropDatabase(into)
            return ["seconds": seconds]
        }
        let restore = try await repeatRuns(scenario, "\(name): tsbackup restore", scaleRepetitions) {
            let into = "tsrestore_\(UUID().uuidString.prefix(6).lowercased())"
            let counters = try await self.tsbackupRestore(repository: repository, id: id, into: into)
            try await self.dropDatabase(into)
            return counters
        }
        let peak = max(backup.medianCounter("max_rss_kb") ?? 0, restore.medianCounter("max_rss_kb") ?? 0)
        results.findings.append(.init(
            scenario: scenario, name: name, value: x,
            text: ByteCount.format(dataBytes) + String(format: " database; backup %.2f s (pg_dump -Fc %.2f s, x%.2f); restore %.2f s (documented %.2f s, speedup %.2fx); peak RSS %.0f MB",
                         backup.median, pgDump.median, backup.median / pgDump.median,
                         restore.median, documented.median, documented.median / restore.median, peak / 1024)))
        try? FileManager.default.removeItem(atPath: dump)
        try? FileManager.default.removeItem(atPath: repository)
        try await dropDatabase(database)
    }

    // MARK: Operations

    @discardableResult
    func createDataset(_ database: String, _ options: SampleData.Options, label: String? = nil) async throws -> Int64 {
        log("  creating dataset \(label ?? database) ...")
        try await cluster.createDatabase(database)
        try await cluster.withSuperuser(database: database) { try await SampleData(options).load(into: $0) }
        let (bytes, chunks) = try await cluster.withSuperuser(database: database) {
            try await $0.row("SELECT pg_database_size(current_database()), (SELECT count(*) FROM _timescaledb_catalog.chunk)", as: (Int64, Int64).self)
        }
        let expected = SampleData(options).expected
        results.datasets[label ?? database] = "\(expected.conditionsRows + expected.eventsRows + expected.readingsRows) rows, \(chunks) chunks, \(ByteCount.format(bytes)) database"
        return bytes
    }

    /// Runs `body` `count` times; `body` returns counters, of which "seconds" is the timing.
    func repeatRuns(_ scenario: String, _ name: String, _ count: Int, _ body: () async throws -> [String: Double]) async throws -> Measurement {
        var measurement = Measurement(scenario: scenario, name: name)
        for _ in 0..<count {
            var counters = try await body()
            measurement.seconds.append(counters.removeValue(forKey: "seconds") ?? .nan)
            for (key, value) in counters { measurement.counters[key, default: []].append(value) }
        }
        let (low, high) = measurement.spread
        var line = "  " + name.padding(toLength: max(62, name.count), withPad: " ", startingAt: 0)
            + String(format: " median %7.2f s  (%.2f-%.2f)", measurement.median, low, high)
        if let bytes = measurement.medianCounter("bytes") { line += "  " + ByteCount.format(Int64(bytes)) }
        if let wal = measurement.medianCounter("wal_sync") { line += String(format: "  wal_sync %.0f", wal) }
        if let rss = measurement.medianCounter("max_rss_kb") { line += String(format: "  rss %.0f MB", rss / 1024) }
        log(line)
        results.measurements.append(measurement)
        return measurement
    }

    func ratio(_ scenario: String, _ name: String, _ a: Measurement, _ b: Measurement, inverse: Bool = false) {
        let value = inverse ? a.median / b.median : a.median / b.median
        results.findings.append(.init(scenario: scenario, name: name, value: value,
                                      text: String(format: "%.2fx (%.2f s vs %.2f s)", value, a.median, b.median)))
    }

    func timed(_ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func check(_ result: ProcessResult, _ what: String) throws {
        guard result.succeeded else {
            throw SandboxError("\(what) failed (\(result.statusDescription)): \(result.standardError.suffix(1500)) \(result.standardOutput.suffix(1500))")
        }
    }

    func pgDump(_ database: String, _ options: [String], output: String, keep: Bool) async throws -> [String: Double] {
        try? FileManager.default.removeItem(atPath: output)
        var result: ProcessResult?
        let seconds = try await timed {
            result = try await ProcessRunner.run("/usr/bin/time", ["-f", "TSBACKUP_MAX_RSS_KB=%M", pgBin + "/pg_dump"] + options + ["--no-password", database],
                                                 environment: environment)
        }
        try check(result!, "pg_dump")
        let bytes = FileSystem.size(of: output)
        if !keep { try? FileManager.default.removeItem(atPath: output) }
        var counters = ["seconds": seconds, "bytes": Double(bytes)]
        counters["max_rss_kb"] = maxRSS(result!.standardError)
        return counters
    }

    struct BackupRun {
        var repository: String
        var id: String
        var counters: [String: Double]
    }

    /// The real tsbackup binary, under GNU time for its peak memory.
    func tsbackupBackup(_ database: String, _ options: [String], keep: Bool = true, binary: String? = nil) async throws -> BackupRun {
        let repository = work + "/repo-\(UUID().uuidString.prefix(8))"
        var result: ProcessResult?
        // GNU time's peak is the largest of tsbackup and its children (pg_dump, pg_restore);
        // tsbackup's own peak is read from /proc while it runs.
        let own = ProcessPeak(marker: repository)
        let watcher = Task { await own.watch() }
        let seconds = try await timed {
            result = try await ProcessRunner.run("/usr/bin/time", ["-f", "TSBACKUP_MAX_RSS_KB=%M", binary ?? tsbackup, "backup", "--db",
                                                                   cluster.url(database: database), "--repo", repository, "--json"] + options,
                                                 environment: environment)
        }
        watcher.cancel()
        _ = await watcher.value
        try check(result!, "tsbackup backup")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result!.standardOutput.utf8))
        var counters: [String: Double] = ["seconds": seconds, "bytes": Double(summary.bytes)]
        counters["max_rss_kb"] = maxRSS(result!.standardError)
        if let peak = await own.peakKB { counters["own_rss_kb"] = peak }
        if !keep { try? FileManager.default.removeItem(atPath: repository) }
        return BackupRun(repository: repository, id: summary.id, counters: counters)
    }

    func tsbackupRestore(repository: String, id: String, into: String, binary: String? = nil,
                         onReport: (Restore.Report) -> Void = { _ in }) async throws -> [String: Double] {
        var result: ProcessResult?
        let seconds = try await timed {
            result = try await ProcessRunner.run("/usr/bin/time", ["-f", "TSBACKUP_MAX_RSS_KB=%M", binary ?? tsbackup, "restore", id, "--repo", repository,
                                                                   "--target", cluster.url(database: "postgres"), "--into", into, "--jobs", "2", "--json"],
                                                 environment: environment)
        }
        try check(result!, "tsbackup restore")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result!.standardOutput.utf8))
        onReport(report)
        let procedure = report.steps.filter { $0.name != "preflight" && !$0.name.hasPrefix("verify against the manifest") }.reduce(0) { $0 + $1.seconds }
        var counters: [String: Double] = ["seconds": seconds, "procedure_seconds": procedure]
        counters["max_rss_kb"] = maxRSS(result!.standardError)
        return counters
    }

    /// The procedure as TimescaleDB documents it: new database, extension, pre_restore, serial
    /// pg_restore, post_restore.
    func documentedRestore(_ dump: String, into: String) async throws -> Double {
        try await timed {
            try await cluster.withSuperuser { try await $0.execute("CREATE DATABASE \(into)") }
            try await cluster.withSuperuser(database: into) { session in
                try await session.execute("CREATE EXTENSION timescaledb")
                try await session.execute("SELECT timescaledb_pre_restore()")
            }
            var env = environment
            env["PGDATABASE"] = into
            let result = try await ProcessRunner.run(pgBin + "/pg_restore", ["--dbname=\(into)", "--no-password", dump], environment: env)
            try check(result, "pg_restore")
            try await cluster.withSuperuser(database: into) { try await $0.execute("SELECT timescaledb_post_restore()") }
        }
    }

    func maxRSS(_ stderr: String) -> Double? {
        guard let line = stderr.split(separator: "\n").last(where: { $0.hasPrefix("TSBACKUP_MAX_RSS_KB=") }) else { return nil }
        return Double(line.dropFirst("TSBACKUP_MAX_RSS_KB=".count))
    }

    /// Cluster-wide WAL sync count and bytes; a counter machine noise cannot move.
    func walSyncs() async throws -> (Int64, Int64) {
        try await cluster.withSuperuser { try await $0.row("SELECT wal_sync, wal_bytes::int8 FROM pg_stat_wal", as: (Int64, Int64).self) }
    }

    func dropDatabase(_ name: String) async throws {
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)") }
    }

    /// md5 of each user table's rows in a fixed order, independent of tsbackup's own hashing.
    func digests(_ database: String) async throws -> [String: String] {
        try await cluster.withSuperuser(database: database) { session in
            try await TableContent.prepare(session)
            var result: [String: String] = [:]
            for table in ["public.devices", "public.conditions", "public.events", "iot.readings"] {
                result[table] = try await session.value(
                    PostgresQuery(unsafeSQL: "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \(table) t"),
                    as: String.self)
            }
            return result
        }
    }
}

/// The peak resident memory (VmHWM) of the `tsbackup` process whose command line holds
/// `marker`, polled from /proc while it runs: its own peak, without its children's.
actor ProcessPeak {
    let marker: String
    private(set) var peakKB: Double?

    init(marker: String) { self.marker = marker }

    func watch() async {
        var pid: String?
        while !Task.isCancelled {
            if pid == nil { pid = find() }
            if let pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
               let kb = Double(line.split(separator: " ").dropFirst().first ?? "") {
                peakKB = max(peakKB ?? 0, kb)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func find() -> String? {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.allSatisfy(\.isNumber) {
            guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.first?.hasSuffix("/tsbackup") == true, arguments.contains(marker) { return entry }
        }
        return nil
    }
}

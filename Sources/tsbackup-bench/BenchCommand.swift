import ArgumentParser
import Foundation
import PostgresNIO
import TSBackup
import TSBackupSandbox

/// tsbackup against the documented TimescaleDB procedure and raw pg_dump/pg_restore, measured
/// side by side in one run on one throwaway cluster. Prints ratios of medians; asserts nothing.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tsbackup-bench",
        abstract: "Benchmark tsbackup against pg_dump/pg_restore and the documented restore procedure.",
        discussion: "--quick (default) takes a few minutes with small data; --full uses 5,000+ chunks and 1 GB+ of data for release notes."
    )

    @Flag(help: "Small data, scale points run once.") var quick = false
    @Flag(help: "Large data (>= 5,000 chunks, >= 1 GB), every point repeated.") var full = false
    @Option(help: "Runs per measurement (at least 3).") var repetitions = 3
    @Option(help: "Directory for the JSON results.") var output = "bench/results"
    @Flag(help: "Only the S3 throughput comparison with `aws s3 cp --recursive` (moto on loopback).") var s3Only = false
    @Flag(help: "Only the default-speed comparison on the data-heavy data set (backup defaults vs pg_dump -Fc and compression levels).") var defaultsOnly = false
    @Option(parsing: .upToNextOption, help: "Only the per-chunk cost profile, at these chunk counts (backup phases, manifest size, peak RSS).") var chunkCosts: [Int] = []
    @Flag(help: "Only `tsbackup serve`: GET /api/backups with 1,000 entries under wrk (listing cache off and on), idle RSS, schedule due-to-start latency.") var serve = false
    @Flag(help: "Only point-in-time recovery against pgBackRest 2.45 and pg_basebackup -Ft -z: base backup time and size, recovery to a time, per-segment push and fetch (an archiving cluster of --pitr-size-mb).") var pitr = false
    @Option(help: "PITR: the database size to load, in MB (1,080 hourly chunks whatever the size; 1200 for the issue's >= 1 GB).") var pitrSizeMb = 1200
    @Option(help: "PITR: MB of WAL written after the base backups, replayed by every recovery.") var pitrWalMb = 256
    @Option(help: "PITR: real segments pushed and fetched per round in the per-segment comparison.") var pitrSegments = 8
    @Flag(help: "PITR: only the per-segment wal-push/wal-fetch vs archive-push/archive-get comparison, on a small archiving cluster (with TSBACKUP_BENCH_BEFORE=<binary>, that tsbackup too).") var pitrSegmentsOnly = false
    @Option(help: "Only the restore comparison at this many hourly chunks: the documented procedure against tsbackup restore --jobs 2 (and TSBACKUP_BENCH_BEFORE=<binary>), interleaved, verified.") var restoreChunks: Int?
    @Option(parsing: .upToNextOption, help: "Only the chunk-count points past pg_dump's lock limit (e.g. 20000 50000), on a cluster with PostgreSQL's default lock settings: pg_dump -Fc, tsbackup backup and verified restore, peak RSS.") var scaleChunks: [Int] = []
    @Option(help: "Scale points: keep the cluster (and the scale database) in this directory, and reuse them when it already holds them, so a later run re-measures without rebuilding the chunks.") var keepCluster: String?
    @Option(parsing: .upToNextOption, help: "Scale points: the steps to run at each point, of pg_dump, backup, restore (restore needs backup).") var scaleSteps: [String] = ["pg_dump", "backup", "restore"]
    @Option(help: "The tsbackup executable to measure (default: the one beside this benchmark).") var tsbackup: String?
    @Flag(help: "Instead of benchmarks: the corruption campaign (byte flips and truncations, each checked by `tsbackup verify`) on local and S3, plain and encrypted repositories.") var corruption = false
    @Option(help: "Corruption campaign: byte flips per repository kind and encryption.") var flips = 200
    @Option(help: "Corruption campaign: truncations per repository kind and encryption.") var truncations = 50
    @Option(help: "Corruption campaign: the random seed (the same seed repeats the same changes).") var seed: UInt64 = 14
    @Option(help: "Instead of benchmarks: the kill campaign with this many SIGKILLs of tsbackup at random moments, each followed by the next run and the invariants' checks.") var chaos: Int?
    @Option(help: "Kill campaign: stop after this many minutes even if fewer kills landed.") var chaosMinutes: Double = 45

    /// The chunk-count points past pg_dump's lock limit that `--full` adds to its curve.
    static let fullScaleChunkPoints = [20_000, 50_000]

    /// PostgreSQL's defaults where the lock table's size comes from. The lock table is
    /// max_locks_per_transaction x (max_connections + worker slots + ...): the sandbox's 160
    /// worker slots let pg_dump lock 20,000 chunks (measured), so the defaults of PostgreSQL (8)
    /// and TimescaleDB (16 background workers) too.
    static let defaultLockSettings = ["max_connections": "100", "max_worker_processes": "8", "timescaledb.max_background_workers": "16",
                                      "shared_buffers": "'256MB'"]

    func validate() throws {
        if quick && full { throw ValidationError("Choose --quick or --full.") }
        if pitrSizeMb < 50 || pitrWalMb < 16 || pitrSegments < 1 { throw ValidationError("--pitr-size-mb must be at least 50, --pitr-wal-mb at least 16, --pitr-segments at least 1.") }
        if repetitions < 3 { throw ValidationError("--repetitions must be at least 3: a median of fewer runs says little on a shared machine.") }
        if keepCluster != nil && scaleChunks.isEmpty { throw ValidationError("--keep-cluster goes with --scale-chunks.") }
        if let unknown = scaleSteps.first(where: { !["pg_dump", "backup", "restore"].contains($0) }) {
            throw ValidationError("--scale-steps takes pg_dump, backup and restore, not \(unknown).")
        }
        if scaleSteps.contains("restore") && !scaleSteps.contains("backup") { throw ValidationError("--scale-steps restore needs backup too.") }
    }

    func run() async throws {
        let tsbackup = try self.tsbackup.map { path in
            guard FileManager.default.isExecutableFile(atPath: path) else { throw ValidationError("--tsbackup \(path) is not an executable file.") }
            return URL(fileURLWithPath: path).standardizedFileURL.path
        } ?? siblingExecutable("tsbackup")
        if let chaos {
            let clean = try await ChaosRun(tsbackup: tsbackup, kills: chaos, minutes: chaosMinutes, seed: seed, log: { text in
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
            }).run()
            if !clean { throw ExitCode(1) }
            return
        }
        if corruption {
            let clean = try await CorruptionRun(tsbackup: tsbackup, flips: flips, truncations: truncations, seed: seed, log: { text in
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
            }).run()
            if !clean { throw ExitCode(1) }
            return
        }
        let mode = serve ? "serve" : pitrSegmentsOnly ? "pitr-segments" : pitr ? "pitr" : s3Only ? "s3" : defaultsOnly ? "defaults" : !chunkCosts.isEmpty ? "chunk-costs"
            : restoreChunks != nil ? "restore-chunks" : !scaleChunks.isEmpty ? "scale-chunks" : full ? "full" : "quick"
        let buildKind = tsbackup.contains("/release/") ? "release" : "debug"
        say("tsbackup benchmark, \(mode) mode, \(buildKind) build of \(tsbackup), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        let started = Date()
        if s3Only {
            try await runS3(started: started, buildKind: buildKind)
            return
        }
        if pitr || pitrSegmentsOnly {
            try await runPITR(tsbackup: tsbackup, started: started, buildKind: buildKind)
            return
        }
        // The chunk-count points past the lock limit run where pg_dump has PostgreSQL's defaults.
        let settings = scaleChunks.isEmpty ? ["max_locks_per_transaction": "512", "shared_buffers": "'256MB'"] : Self.defaultLockSettings
        if let keepCluster {
            let directory = URL(fileURLWithPath: keepCluster).standardizedFileURL.path
            let cluster = try await SandboxCluster.kept(at: directory, .init(durable: true, settings: settings))
            say("kept cluster \(directory) (port \(cluster.port) while this runs)")
            do {
                try await measure(on: cluster, tsbackup: tsbackup, mode: mode, started: started, buildKind: buildKind)
            } catch {
                try? await cluster.stopKeepingDirectory()
                throw error
            }
            try await cluster.stopKeepingDirectory()
            return
        }
        try await SandboxCluster.with(.init(durable: true, settings: settings)) { cluster in
            try await measure(on: cluster, tsbackup: tsbackup, mode: mode, started: started, buildKind: buildKind)
        }
    }

    /// The scenarios that run on a cluster of their own.
    func measure(on cluster: SandboxCluster, tsbackup: String, mode: String, started: Date, buildKind: String) async throws {
        let versions = try await cluster.withSuperuser {
            try await $0.row("SELECT current_setting('server_version'), (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb')",
                             as: (String, String).self)
        }
        let pgDump = try await PostgresTools.locate("pg_dump", minimumMajor: 15)
        let results = BenchResults(
            mode: mode, startedAt: started, cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryBytes: ProcessInfo.processInfo.physicalMemory, postgres: versions.0, timescaledb: versions.1,
            pgDump: pgDump.version, tsbackupVersion: TSBackupVersion.current, tsbackupBuild: buildKind, repetitions: repetitions)
        let work = cluster.directory + "/bench"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let bench = Bench(cluster: cluster, tsbackup: tsbackup, work: work, full: full, repetitions: repetitions,
                          results: results, log: say)
        if serve {
            try await bench.serveScenario()
        } else if defaultsOnly {
            try await bench.defaultsScenario()
        } else if let restoreChunks {
            try await bench.restoreChunkScenario(restoreChunks)
        } else if !scaleChunks.isEmpty {
            var steps: ScaleSteps = []
            if scaleSteps.contains("pg_dump") { steps.insert(.pgDump) }
            if scaleSteps.contains("backup") { steps.insert(.backup) }
            if scaleSteps.contains("restore") { steps.insert(.restore) }
            try await bench.scaleChunkScenario(scaleChunks, steps: steps, keepSource: keepCluster != nil)
        } else if !chunkCosts.isEmpty {
            try await bench.chunkCostScenario(chunkCosts)
        } else {
            try await bench.run()
            if full {
                // The chunk-count curve past pg_dump's lock limit, on a second cluster with
                // PostgreSQL's default lock settings (this one has 512 locks per transaction).
                let points = Self.fullScaleChunkPoints
                try await SandboxCluster.with(.init(durable: true, settings: Self.defaultLockSettings)) { defaults in
                    let work = defaults.directory + "/bench"
                    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
                    let past = Bench(cluster: defaults, tsbackup: tsbackup, work: work, full: full, repetitions: repetitions,
                                     results: bench.results, log: say)
                    try await past.scaleChunkScenario(points)
                    bench.results = past.results
                }
            }
        }
        report(bench.results)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let stamp = ISO8601DateFormatter().string(from: started).replacingOccurrences(of: ":", with: "")
        let path = "\(output)/bench-\(mode)-\(stamp).json"
        try Data(try JSONOutput.encode(bench.results).utf8).write(to: URL(fileURLWithPath: path))
        say("\nAll figures: \(path)  (total \(Int(Date().timeIntervalSince(started))) s)")
    }

    /// The S3 comparison alone: no PostgreSQL cluster needed.
    func runS3(started: Date, buildKind: String) async throws {
        var results = BenchResults(
            mode: "s3", startedAt: started, cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryBytes: ProcessInfo.processInfo.physicalMemory, postgres: "", timescaledb: "", pgDump: "",
            tsbackupVersion: TSBackupVersion.current, tsbackupBuild: buildKind, repetitions: repetitions)
        try await S3Bench(repetitions: repetitions, full: full, log: say).run(into: &results)
        report(results)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let stamp = ISO8601DateFormatter().string(from: started).replacingOccurrences(of: ":", with: "")
        let path = "\(output)/bench-s3-\(stamp).json"
        try Data(try JSONOutput.encode(results).utf8).write(to: URL(fileURLWithPath: path))
        say("\nAll figures: \(path)  (total \(Int(Date().timeIntervalSince(started))) s)")
    }

    /// The point-in-time recovery comparison, on an archiving cluster of its own.
    func runPITR(tsbackup: String, started: Date, buildKind: String) async throws {
        var results = BenchResults(
            mode: "pitr", startedAt: started, cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryBytes: ProcessInfo.processInfo.physicalMemory, postgres: "15", timescaledb: PostgresInstallation.installedTimescaleDBVersion() ?? "",
            pgDump: "", tsbackupVersion: TSBackupVersion.current, tsbackupBuild: buildKind, repetitions: repetitions)
        let before = ProcessInfo.processInfo.environment["TSBACKUP_BENCH_BEFORE"].flatMap { $0.isEmpty ? nil : $0 }
        let bench = PITRBench(tsbackup: tsbackup, sizeMB: pitrSizeMb, walMB: pitrWalMb, pushSegments: pitrSegments,
                              repetitions: repetitions, before: before, log: say)
        if pitrSegmentsOnly {
            try await bench.runSegmentsOnly(into: &results)
        } else {
            try await bench.run(into: &results)
        }
        report(results)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let stamp = ISO8601DateFormatter().string(from: started).replacingOccurrences(of: ":", with: "")
        let path = "\(output)/bench-pitr-\(stamp).json"
        try Data(try JSONOutput.encode(results).utf8).write(to: URL(fileURLWithPath: path))
        say("\nAll figures: \(path)  (total \(Int(Date().timeIntervalSince(started))) s)")
    }

    func report(_ results: BenchResults) {
        say("\n== Findings (ratios of medians measured in this run)")
        var table = TextTable(header: ["SCENARIO", "FIGURE", "VALUE"])
        for finding in results.findings {
            table.add([finding.scenario, finding.name, finding.text])
        }
        say(table.render())
        say("\nDatasets")
        for (name, description) in results.datasets.sorted(by: { $0.key < $1.key }) {
            say("  \(name): \(description)")
        }
    }

    func say(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

}

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
    @Flag(help: "Instead of benchmarks: the corruption campaign (byte flips and truncations, each checked by `tsbackup verify`) on local and S3, plain and encrypted repositories.") var corruption = false
    @Option(help: "Corruption campaign: byte flips per repository kind and encryption.") var flips = 200
    @Option(help: "Corruption campaign: truncations per repository kind and encryption.") var truncations = 50
    @Option(help: "Corruption campaign: the random seed (the same seed repeats the same changes).") var seed: UInt64 = 14
    @Option(help: "Instead of benchmarks: the kill campaign with this many SIGKILLs of tsbackup at random moments, each followed by the next run and the invariants' checks.") var chaos: Int?
    @Option(help: "Kill campaign: stop after this many minutes even if fewer kills landed.") var chaosMinutes: Double = 45

    func validate() throws {
        if quick && full { throw ValidationError("Choose --quick or --full.") }
        if repetitions < 3 { throw ValidationError("--repetitions must be at least 3: a median of fewer runs says little on a shared machine.") }
    }

    func run() async throws {
        let tsbackup = try siblingExecutable("tsbackup")
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
        let mode = defaultsOnly ? "defaults" : !chunkCosts.isEmpty ? "chunk-costs" : full ? "full" : "quick"
        let buildKind = tsbackup.contains("/release/") ? "release" : "debug"
        say("tsbackup benchmark, \(mode) mode, \(buildKind) build of \(tsbackup), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        let started = Date()
        if s3Only {
            try await runS3(started: started, buildKind: buildKind)
            return
        }
        try await SandboxCluster.with(.init(durable: true, settings: ["max_locks_per_transaction": "512", "shared_buffers": "'256MB'"])) { cluster in
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
            if defaultsOnly {
                try await bench.defaultsScenario()
            } else if !chunkCosts.isEmpty {
                try await bench.chunkCostScenario(chunkCosts)
            } else {
                try await bench.run()
            }
            report(bench.results)
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            let stamp = ISO8601DateFormatter().string(from: started).replacingOccurrences(of: ":", with: "")
            let path = "\(output)/bench-\(mode)-\(stamp).json"
            try Data(try JSONOutput.encode(bench.results).utf8).write(to: URL(fileURLWithPath: path))
            say("\nAll figures: \(path)  (total \(Int(Date().timeIntervalSince(started))) s)")
        }
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

import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Wall time of one `tsbackup wal-push` process per real 16 MB segment (what archive_command
/// costs PostgreSQL per segment), into a local repository (plain, raw-key encrypted, passphrase
/// encrypted) and into moto S3, with the stored size ratio. Prints figures, asserts only correctness.
///
/// Off by default: `TSBACKUP_BENCH=1 swift test --filter WALPushBenchmark` (release build:
/// `swift build -c release --build-tests` and `--configuration release`). `TSBACKUP_BENCH_SEGMENTS`
/// sets the number of segments (default 12).
@Suite("WAL push benchmark", .enabled(if: ProcessInfo.processInfo.environment["TSBACKUP_BENCH"] != nil))
struct WALPushBenchmark {
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func line(_ label: String, _ seconds: [Double], stored: Int64? = nil, plain: Int64) -> String {
        var text = label.padding(toLength: 44, withPad: " ", startingAt: 0)
            + String(format: " median %7.1f ms  min %7.1f  max %7.1f", median(seconds) * 1000, seconds.min()! * 1000, seconds.max()! * 1000)
        if let stored { text += String(format: "  stored %5.1f%% of %d MB", Double(stored) * 100 / Double(plain), plain >> 20) }
        return text
    }

    /// The binary measured: TSBACKUP_BENCH_BINARY (e.g. a release build), else the one beside the tests.
    static var binary: String { ProcessInfo.processInfo.environment["TSBACKUP_BENCH_BINARY"] ?? CLI.executable }

    /// Times `arguments` once per segment; returns the seconds of each run.
    static func time(_ segments: [String], _ arguments: (String) -> [String], environment: [String: String]) async throws -> [Double] {
        var seconds: [Double] = []
        for segment in segments {
            let start = ContinuousClock.now
            let result = try await ProcessRunner.run(binary, arguments(segment), environment: environment.mapValues { Optional($0) })
            let elapsed = ContinuousClock.now - start
            #expect(result.exitCode == 0, "\(result.standardError)")
            seconds.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        return seconds
    }

    @Test("wal-push per segment: local, encrypted, S3")
    func perSegment() async throws {
        let count = Int(ProcessInfo.processInfo.environment["TSBACKUP_BENCH_SEGMENTS"] ?? "") ?? 12
        let scratch = try ScratchDirectory("walbench")
        defer { scratch.remove() }
        // Real segments: TimescaleDB sample rows written with segments kept in pg_wal.
        try await SandboxCluster.with(SandboxCluster.Options(settings: ["wal_keep_size": "'2GB'", "max_wal_size": "'4GB'"])) { cluster in
            let database = uniqueDatabaseName("walbench")
            try await cluster.createDatabase(database)
            try await cluster.withSuperuser(database: database) { session in
                try await SampleData(SampleData.Options(devices: 40, days: 30, readingsPerDay: 96, chunkInterval: "1 day",
                                                        events: 1_000, eventsPerChunk: 100, sensors: 4, spacePartitions: 2)).load(into: session)
            }
            var names: [String] = []
            try await cluster.withSuperuser(database: database) { session in
                while names.count < count + 1 {
                    try await session.execute("INSERT INTO public.conditions SELECT time + interval '1 year' * (random() * 5)::int, device_id, temperature + random(), humidity FROM public.conditions LIMIT 50000")
                    let current = try await session.value("SELECT pg_walfile_name(pg_current_wal_lsn())", as: String.self)
                    names = try FileManager.default.contentsOfDirectory(atPath: cluster.dataDirectory + "/pg_wal")
                        .filter { WALFileName($0)?.isSegment == true && $0 < current }.sorted()
                }
            }
            var segments: [String] = []
            for name in names.suffix(count) {
                let path = scratch.path + "/" + name
                try FileManager.default.copyItem(atPath: cluster.dataDirectory + "/pg_wal/" + name, toPath: path)
                segments.append(path)
            }
            try await measure(segments, cluster: cluster, scratch: scratch)
        }
    }

    func measure(_ segments: [String], cluster: SandboxCluster, scratch: ScratchDirectory) async throws {
        let plain = Int64(segments.count) * (16 << 20)
        var report: [String] = ["wal-push, one process per 16 MB segment, \(segments.count) real segments (\(ProcessInfo.processInfo.activeProcessorCount) cores), \(Self.binary):"]

        let version = try await Self.time(Array(segments.prefix(5)), { _ in ["--version"] }, environment: [:])
        report.append(Self.line("tsbackup --version (process start floor)", version, plain: plain))

        let local = scratch.path + "/local"
        let plainTimes = try await Self.time(segments, { ["wal-push", $0, "--repo", local] }, environment: [:])
        report.append(Self.line("local repository", plainTimes, stored: FileSystem.size(of: local + "/wal"), plain: plain))

        let rawKey = scratch.path + "/raw.key"
        try Data((String(repeating: "3c", count: 32) + "\n").utf8).write(to: URL(fileURLWithPath: rawKey))
        chmod(rawKey, 0o600)
        let rawTimes = try await Self.time(segments, { ["wal-push", $0, "--repo", scratch.path + "/raw", "--encryption-key-file", rawKey] }, environment: [:])
        report.append(Self.line("local, encrypted (raw 256-bit key)", rawTimes, stored: FileSystem.size(of: scratch.path + "/raw/wal"), plain: plain))

        let passphrase = scratch.path + "/pass.key"
        try Data("correct horse battery staple\n".utf8).write(to: URL(fileURLWithPath: passphrase))
        chmod(passphrase, 0o600)
        let passTimes = try await Self.time(segments, { ["wal-push", $0, "--repo", scratch.path + "/pass", "--encryption-key-file", passphrase] }, environment: [:])
        report.append(Self.line("local, encrypted (passphrase, scrypt)", passTimes, stored: FileSystem.size(of: scratch.path + "/pass/wal"), plain: plain))

        let s3 = try await S3Sandbox.make("walbench")
        defer { s3.remove() }
        let s3Times = try await Self.time(segments, { ["wal-push", $0, "--repo", s3.repository] }, environment: s3.environment())
        report.append(Self.line("S3 (moto on loopback)", s3Times, plain: plain))

        let fetchTimes = try await Self.time(segments, { ["wal-fetch", ($0 as NSString).lastPathComponent, $0 + ".fetched", "--repo", local] }, environment: [:])
        report.append(Self.line("wal-fetch, local repository", fetchTimes, plain: plain))

        if FileManager.default.isExecutableFile(atPath: "/usr/bin/pgbackrest") {
            for compress in ["lz4", "zst"] {
                let (times, stored) = try await Self.pgbackrest(segments, cluster: cluster, scratch: scratch, compress: compress)
                report.append(Self.line("pgbackrest archive-push (\(compress))", times, stored: stored, plain: plain))
            }
        } else {
            report.append("pgbackrest is not installed (apt-get install pgbackrest): no comparison")
        }
        print(report.joined(separator: "\n"))
    }

    /// `pgbackrest archive-push` of the same segments into a stanza on a local repository, made
    /// with stanza-create against the running cluster the segments came from.
    static func pgbackrest(_ segments: [String], cluster: SandboxCluster, scratch: ScratchDirectory, compress: String) async throws -> ([Double], Int64) {
        let repo = scratch.path + "/pgbr-\(compress)"
        let config = scratch.path + "/pgbackrest-\(compress).conf"
        try """
            [global]
            repo1-path=\(repo)
            compress-type=\(compress)
            log-level-console=warn
            log-level-file=off
            lock-path=\(scratch.path)/pgbr-lock-\(compress)
            spool-path=\(scratch.path)/pgbr-spool-\(compress)

            [bench]
            pg1-path=\(cluster.dataDirectory)
            pg1-port=\(cluster.port)
            pg1-socket-path=\(cluster.directory)
            pg1-user=postgres

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let create = try await ProcessRunner.run("/usr/bin/pgbackrest", ["--config=\(config)", "--stanza=bench", "stanza-create"])
        #expect(create.exitCode == 0, "\(create.standardError) \(create.standardOutput)")
        var seconds: [Double] = []
        for segment in segments {
            let start = ContinuousClock.now
            let result = try await ProcessRunner.run("/usr/bin/pgbackrest", ["--config=\(config)", "--stanza=bench", "archive-push", segment])
            let elapsed = ContinuousClock.now - start
            #expect(result.exitCode == 0, "\(result.standardError) \(result.standardOutput)")
            seconds.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        return (seconds, FileSystem.size(of: repo + "/archive"))
    }
}

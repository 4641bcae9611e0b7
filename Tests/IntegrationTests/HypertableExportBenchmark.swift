import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Throughput of export-hypertable and import-hypertable next to COPY run by hand (psql piped
/// into gzip / zstd, and back), on the same cluster in the same run. Prints figures, asserts
/// only correctness: timings on a shared machine are not pass/fail material.
///
/// Off by default; `TSBACKUP_BENCH=1 swift test --filter HypertableExportBenchmark` (or
/// scripts/bench-hypertable-export.sh). `TSBACKUP_BENCH_DAYS` scales the data (default 60 days
/// = 230,400 rows in public.conditions).
@Suite("HypertableExport benchmark", .enabled(if: ProcessInfo.processInfo.environment["TSBACKUP_BENCH"] != nil))
struct HypertableExportBenchmark {
    struct Figure {
        var label: String
        var seconds: [Double]
        var rows: Int64
        var bytes: Int64
        var median: Double { seconds.sorted()[seconds.count / 2] }
        var line: String {
            label.padding(toLength: 46, withPad: " ", startingAt: 0)
                + String(format: " median %6.2f s  %9.0f rows/s  %6.1f MB/s", median, Double(rows) / median, Double(bytes) / 1_000_000 / median)
                + "   (runs: " + seconds.map { String(format: "%.2f", $0) }.joined(separator: ", ") + ")"
        }
    }

    @Test("export and import throughput next to hand-run COPY")
    func throughput() async throws {
        let environment = ProcessInfo.processInfo.environment
        let days = Int(environment["TSBACKUP_BENCH_DAYS"] ?? "") ?? 60
        let repetitions = Int(environment["TSBACKUP_BENCH_RUNS"] ?? "") ?? 3
        let options = SampleData.Options(devices: 40, days: days, readingsPerDay: 96, chunkInterval: "1 day",
                                         events: 1_000, eventsPerChunk: 100, sensors: 4, spacePartitions: 2)
        let (cluster, database) = try await makeSampleDatabase("hx_bench", options: options)
        let scratch = try ScratchDirectory("hx-bench")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let rows = Int64(SampleData(options).expected.conditionsRows)
        let env = ["PGPASSWORD": cluster.superuserPassword, "PGHOST": "127.0.0.1", "PGPORT": String(cluster.port),
                   "PGUSER": SandboxCluster.superuser, "PGDATABASE": database]
        let psql = try await PostgresTools.locate("psql", minimumMajor: 15).path

        func timed(_ body: () async throws -> Void) async throws -> Double {
            let start = ContinuousClock.now
            try await body()
            let elapsed = ContinuousClock.now - start
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
        func shell(_ script: String, database db: String = database) async throws {
            var e = env
            e["PGDATABASE"] = db
            let result = try await ProcessRunner.run("sh", ["-c", script], environment: e.mapValues { Optional($0) })
            #expect(result.exitCode == 0, "\(script): \(result.standardError)")
        }

        var exportRuns: [Double] = [], ids: [String] = []
        var rawBytes: Int64 = 0, storedBytes: Int64 = 0
        for _ in 0..<repetitions {
            var manifest: HypertableManifest?
            exportRuns.append(try await timed {
                let result: ProcessResult
                (result, manifest) = try await exportHypertable(cluster, database, table: "public.conditions", repository: repository, ["--jobs", "2"])
                #expect(result.exitCode == 0, "\(result.standardError)")
            })
            let m = try #require(manifest)
            #expect(m.rowCount == rows)
            ids.append(m.id)
            rawBytes = m.rawDataBytes
            storedBytes = m.totalFileBytes
        }

        var gzipRuns: [Double] = [], zstdRuns: [Double] = []
        for i in 0..<repetitions {
            gzipRuns.append(try await timed {
                try await shell("'\(psql)' -X -q -c 'COPY (SELECT * FROM public.conditions) TO STDOUT' | gzip -c -6 > '\(scratch.path)/hand\(i).copy.gz'")
            })
            zstdRuns.append(try await timed {
                try await shell("'\(psql)' -X -q -c 'COPY (SELECT * FROM public.conditions) TO STDOUT' | zstd -q -c -3 > '\(scratch.path)/hand\(i).copy.zst'")
            })
        }

        let handRows = try await ProcessRunner.run("sh", ["-c", "gzip -dc '\(scratch.path)/hand0.copy.gz' | wc -l"])
        #expect(Int64(handRows.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) == rows)

        var importRuns: [Double] = [], loadRuns: [Double] = []
        for id in ids {
            let target = uniqueDatabaseName("hx_bench_dst")
            try await cluster.createDatabase(target)
            try await cluster.withSuperuser(database: target) { session in
                try await session.execute("CREATE TABLE public.devices (id integer PRIMARY KEY, name text NOT NULL UNIQUE, location text NOT NULL, installed_at timestamptz NOT NULL)")
                try await session.execute("INSERT INTO public.devices SELECT d, 'device-' || d, 'x', now() FROM generate_series(1, \(options.devices)) d")
            }
            var report: HypertableImport.Report?
            importRuns.append(try await timed {
                let result: ProcessResult
                (result, report) = try await importHypertable(cluster, id, into: target, repository: repository, ["--jobs", "2"])
                #expect(result.exitCode == 0, "\(result.standardError)")
            })
            #expect(report?.rows == rows)
            loadRuns.append(report?.loadSeconds ?? 0)
        }

        // By hand: the same table with its indexes and foreign key, then one COPY from the gzip file.
        var handImportRuns: [Double] = []
        for i in 0..<repetitions {
            let target = uniqueDatabaseName("hx_bench_hand")
            try await cluster.createDatabase(target)
            try await cluster.withSuperuser(database: target) { session in
                for statement in [
                    "CREATE TABLE public.devices (id integer PRIMARY KEY, name text NOT NULL UNIQUE, location text NOT NULL, installed_at timestamptz NOT NULL)",
                    "INSERT INTO public.devices SELECT d, 'device-' || d, 'x', now() FROM generate_series(1, \(options.devices)) d",
                    "CREATE TABLE public.conditions (time timestamptz NOT NULL, device_id integer NOT NULL REFERENCES public.devices (id), temperature double precision NOT NULL, humidity double precision, battery smallint NOT NULL DEFAULT 100, note text)",
                    "SELECT create_hypertable('public.conditions', 'time', chunk_time_interval => interval '1 day')",
                    "CREATE INDEX conditions_device_time_idx ON public.conditions (device_id, time DESC)",
                ] { try await session.execute(statement) }
            }
            handImportRuns.append(try await timed {
                try await shell("gzip -dc '\(scratch.path)/hand\(i).copy.gz' | '\(psql)' -X -q -v ON_ERROR_STOP=1 -c 'COPY public.conditions FROM STDIN'", database: target)
            })
            #expect(try await orderedRowsDigest(cluster, target, "public.conditions").0 == rows)
        }

        let figures = [
            Figure(label: "export-hypertable (--jobs 2, zstd, + hash)", seconds: exportRuns, rows: rows, bytes: rawBytes),
            Figure(label: "by hand: psql COPY TO STDOUT | gzip -6", seconds: gzipRuns, rows: rows, bytes: rawBytes),
            Figure(label: "by hand: psql COPY TO STDOUT | zstd -3", seconds: zstdRuns, rows: rows, bytes: rawBytes),
            Figure(label: "import-hypertable total (--jobs 2, verified)", seconds: importRuns, rows: rows, bytes: rawBytes),
            Figure(label: "import-hypertable load phase only", seconds: loadRuns, rows: rows, bytes: rawBytes),
            Figure(label: "by hand: gzip -dc | psql COPY FROM STDIN", seconds: handImportRuns, rows: rows, bytes: rawBytes),
        ]
        print("""

            HypertableExport benchmark: public.conditions, \(rows) rows, \(ByteCount.format(rawBytes)) COPY text, \
            stored \(ByteCount.format(storedBytes)) by export-hypertable; \(repetitions) runs each; MB/s = uncompressed COPY text
            \(figures.map(\.line).joined(separator: "\n"))

            """)
    }
}

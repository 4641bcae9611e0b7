import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

@Suite("the sandbox cluster harness")
struct SandboxClusterTests {
    @Test("a stopped cluster leaves no directory and no server behind")
    func stopCleansUp() async throws {
        let (directory, settings) = try await SandboxCluster.with { cluster in
            let listening = try await cluster.withSuperuser { try await $0.value("SELECT inet_server_addr()::text", as: String.self) }
            #expect(listening.hasPrefix("127.0.0.1"))
            #expect(FileManager.default.fileExists(atPath: cluster.dataDirectory + "/PG_VERSION"))
            return (cluster.directory, cluster.settings())
        }
        #expect(!FileManager.default.fileExists(atPath: directory))
        await #expect(throws: TSBackupError.self) { try await DatabaseSession.connect(settings) }
    }

    @Test("a cluster whose owner is killed with SIGKILL is stopped and deleted by its watchdog")
    func watchdogCleansUpAfterKill() async throws {
        let demo = URL(fileURLWithPath: CLI.executable).deletingLastPathComponent().appendingPathComponent("tsbackup-demo").path
        let script = """
            set -u
            work=$(mktemp -d); out="$work/out"; mkfifo "$work/in"
            "$DEMO" --sandbox-only --days 2 < "$work/in" > "$out" 2>&1 &
            pid=$!
            exec 3> "$work/in"
            for i in $(seq 1 2400); do grep -q 'keeps running' "$out" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            sed -n 's/.*data directory \\([^,]*\\), port \\([0-9]*\\).*/dir=\\1 port=\\2/p' "$out"
            dir=$(sed -n 's/.*data directory \\([^,]*\\),.*/\\1/p' "$out")
            [ -d "$dir" ] && echo "before=present"
            kill -9 "$pid"
            exec 3>&-
            for i in $(seq 1 2400); do [ -d "$dir" ] || break; sleep 0.25; done
            [ -d "$dir" ] && echo "after=present" || echo "after=gone"
            rm -rf "$work"
            """
        let result = try await ProcessRunner.run("bash", ["-c", script], environment: ["DEMO": demo])
        let output = result.standardOutput
        #expect(output.contains("before=present"), "\(output) \(result.standardError)")
        #expect(output.contains("after=gone"), "\(output)")
        let port = try #require(output.split(separator: " ").first { $0.hasPrefix("port=") }.flatMap { Int($0.dropFirst(5).prefix { $0.isNumber }) })
        let refused = ConnectionSettings(host: "127.0.0.1", port: port, user: "postgres", password: nil, database: "postgres", sslMode: .disable)
        await #expect(throws: TSBackupError.self) { try await DatabaseSession.connect(refused) }
    }

    @Test("sample data is deterministic and has the documented shape")
    func sampleDataShape() async throws {
        let (cluster, database) = try await makeSampleDatabase("shape")
        let expected = SampleData(.small).expected
        let counts = try await cluster.withSuperuser(database: database) { session in
            try await session.row(
                """
                SELECT (SELECT count(*) FROM public.devices), (SELECT count(*) FROM public.conditions),
                       (SELECT count(*) FROM public.events), (SELECT count(*) FROM iot.readings),
                       (SELECT count(*) FROM public.conditions_daily)
                """, as: (Int64, Int64, Int64, Int64, Int64).self)
        }
        #expect(counts.0 == Int64(expected.devices))
        #expect(counts.1 == Int64(expected.conditionsRows))
        #expect(counts.2 == Int64(expected.eventsRows))
        #expect(counts.3 == Int64(expected.readingsRows))
        #expect(counts.4 == Int64(expected.devices * SampleData.Options.small.days))

        // A second database from the same options holds exactly the same rows.
        let (_, twin) = try await makeSampleDatabase("twin")
        let digest = { (db: String) in
            try await cluster.withSuperuser(database: db) { session in
                try await session.value(
                    "SELECT md5(string_agg(c::text, ',' ORDER BY time, device_id)) FROM public.conditions c", as: String.self)
            }
        }
        #expect(try await digest(database) == digest(twin))

        let foreignKeys = try await cluster.withSuperuser(database: database) { session in
            try await session.value(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.conditions'::regclass AND contype = 'f'", as: Int64.self)
        }
        #expect(foreignKeys == 1)
    }

    @Test("the chunk-count knob reaches thousands of chunks")
    func manyChunks() async throws {
        let options = SampleData.Options(devices: 1, days: 50, readingsPerDay: 24, chunkInterval: "1 hour",
                                         events: 10, eventsPerChunk: 10, sensors: 1, spacePartitions: 2)
        let (cluster, database) = try await makeSampleDatabase("many", options: options)
        let chunks = try await cluster.withSuperuser(database: database) {
            try await $0.value("SELECT count(*) FROM show_chunks('public.conditions')", as: Int64.self)
        }
        #expect(chunks == 50 * 24)
    }
}

import ArgumentParser
import Foundation
import PostgresNIO
import TSBackup
import TSBackupSandbox

/// Starts a sandbox cluster with sample data, runs the real `tsbackup` binary against it, shows
/// the result, and removes the cluster again.
@main
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tsbackup-demo",
        abstract: "Run tsbackup against a throwaway TimescaleDB cluster filled with sample data, with a local and an encrypted S3 repository."
    )

    @Option(help: "Devices in the sample data.") var devices = 10
    @Option(help: "Days of readings (one chunk per day of public.conditions).") var days = 30
    @Flag(help: "Leave the cluster running until you press Enter, to look around with psql.") var keep = false
    @Flag(name: .customLong("sandbox-only"), help: "Only start the cluster with sample data (implies --keep); run no tsbackup command.")
    var sandboxOnly = false

    func run() async throws {
        let tsbackup = try siblingExecutable("tsbackup")
        step("Starting a throwaway PostgreSQL 15 + TimescaleDB cluster on 127.0.0.1")
        try await SandboxCluster.with { cluster in
            say("  data directory \(cluster.directory), port \(cluster.port)")
            step("Creating database \"demo\" with sample data (\(devices) devices, \(days) days)")
            try await cluster.createDatabase("demo")
            let summary = try await cluster.withSuperuser(database: "demo") { session in
                try await SampleData(.init(devices: devices, days: days)).load(into: session)
            }
            say("  \(summary.conditionsRows) rows in public.conditions, \(summary.eventsRows) in public.events, \(summary.readingsRows) in iot.readings")

            let url = cluster.url(database: "demo")
            let environment = ["PGPASSWORD": cluster.superuserPassword]
            let repository = cluster.directory + "/repository"
            if !sandboxOnly {
                try await show(tsbackup, ["inspect", "--db", url], environment: environment)
                try await show(tsbackup, ["backup", "--db", url, "--repo", repository, "--checksums", "--label", "demo"], environment: environment)
                try await show(tsbackup, ["list", "--repo", repository], environment: environment)
                let id = try LocalRepository.open(repository, create: false).entries().last?.id ?? "none"
                try await show(tsbackup, ["verify", id, "--repo", repository], environment: environment)
                try await show(tsbackup, ["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"),
                                          "--into", "demo_restored"], environment: environment)
                try await s3Demo(tsbackup, cluster: cluster, environment: environment)
                try await serviceDemo(tsbackup, cluster: cluster)
                try await pitrDemo(tsbackup)
            }
            if keep || sandboxOnly {
                say("\nThe cluster keeps running: PGPASSWORD=\(cluster.superuserPassword) psql '\(url)'")
                say("Press Enter to stop it and delete its directory.")
                _ = readLine()
            }
            step("Stopping the cluster and deleting its directory")
        }
        say("\nDemo finished.")
    }

    /// The same backup into an encrypted repository on a throwaway S3 endpoint (moto_server on
    /// loopback, every request signed), then a restore from it that verifies against the manifest.
    func s3Demo(_ tsbackup: String, cluster: SandboxCluster, environment: [String: String]) async throws {
        step("Starting a throwaway S3 endpoint (moto_server on 127.0.0.1, signature checking on)")
        try await MotoServer.with { moto in
            let bucket = "tsbackup-demo"
            try await moto.client(bucket: bucket, create: true).shutdown()
            say("  endpoint \(moto.endpoint.absoluteString), bucket \(bucket), access key \(moto.credentials.accessKeyId) (the secret stays in the environment)")
            let work = moto.directory + "/demo"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            // A raw 256-bit key, readable only by its owner, like `openssl rand -hex 32`.
            let keyFile = work + "/encryption.key"
            let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
            chmod(keyFile, 0o600)
            var s3Environment = environment.merging(moto.environment()) { $1 }
            s3Environment["TSBACKUP_ENCRYPTION_KEY_FILE"] = keyFile
            s3Environment["TSBACKUP_SCRATCH_DIR"] = work
            let repository = "s3://\(bucket)/demo"
            say("  AWS_ENDPOINT_URL_S3=\(moto.endpoint.absoluteString) TSBACKUP_ENCRYPTION_KEY_FILE=\(keyFile)")
            try await show(tsbackup, ["backup", "--db", cluster.url(database: "demo"), "--repo", repository, "--label", "demo-s3"], environment: s3Environment)
            try await show(tsbackup, ["list", "--repo", repository], environment: s3Environment)
            let listed = try await ProcessRunner.run(tsbackup, ["list", "--repo", repository, "--json"], environment: s3Environment)
            struct Row: Decodable { var id: String }
            let id = (try? JSONOutput.decode([Row].self, from: Data(listed.standardOutput.utf8)))?.last?.id ?? "none"
            try await show(tsbackup, ["verify", id, "--repo", repository], environment: s3Environment)
            step("Without the key the repository refuses to open (exit 3)")
            var noKey = s3Environment
            noKey["TSBACKUP_ENCRYPTION_KEY_FILE"] = ""
            let refused = try await ProcessRunner.run(tsbackup, ["list", "--repo", repository], environment: noKey)
            say("  \(refused.statusDescription): \(refused.standardError.trimmingCharacters(in: .whitespacesAndNewlines))")
            try await show(tsbackup, ["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"),
                                      "--into", "demo_restored_s3"], environment: s3Environment)
        }
    }

    /// `tsbackup serve` with the sample database: a per-second schedule takes a backup, retention
    /// follows it, a scheduled restore rehearsal restores it into a scratch database, verifies and
    /// drops it; the dashboard URL is printed, then the service is stopped (SIGTERM).
    func serviceDemo(_ tsbackup: String, cluster: SandboxCluster) async throws {
        step("tsbackup serve: the backup service with a schedule, retention, a restore rehearsal, metrics and a dashboard")
        let work = cluster.directory + "/service"
        try FileManager.default.createDirectory(atPath: work + "/run", withIntermediateDirectories: true)
        let token = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let hash = try await ProcessRunner.run(tsbackup, ["serve", "hash-token"], input: token + "\n").standardOutput
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let port = try SandboxCluster.freeLoopbackPort()
        let server = "host: 127.0.0.1, port: \(cluster.port), user: postgres, password_env: DEMO_PGPASSWORD"
        let config = """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(work)/repository}
            state_file: \(work)/state.sqlite
            rehearsal_targets:
              sandbox: {\(server)}
            databases:
              demo:
                host: 127.0.0.1
                port: \(cluster.port)
                user: postgres
                password_env: DEMO_PGPASSWORD
                dbname: demo
                schedule: {cron: "*/15 * * * * *", time_zone: UTC}   # every 15 seconds, for the demo
                retention: {keep_last: 2, keep_daily: 7}
                rehearsal: {target: sandbox, schedule: {cron: "*/20 * * * * *"}}
            tokens:
              - {name: demo-operator, sha256: \(hash), role: operator}

            """
        try config.write(toFile: work + "/serve.yaml", atomically: true, encoding: .utf8)
        say(config.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        let service = try await BackgroundProcess.start(name: "serve", command: [tsbackup, "serve", "--config", work + "/serve.yaml"],
                                                        environment: ["DEMO_PGPASSWORD": cluster.superuserPassword], directory: work + "/run")
        do {
            try await service.waitForPort(port, timeout: .seconds(60))
            let base = "http://127.0.0.1:\(port)"
            say("  listening on \(base); waiting for the scheduled backup and the scheduled rehearsal (a few seconds to a minute)")
            /// Only a skipped rehearsal's flag; any other report (or none) decodes to nil.
            struct Report: Decodable {
                enum Key: String, CodingKey { case nothing_to_rehearse }
                var nothing_to_rehearse: Bool?
                init(from decoder: any Decoder) throws {
                    nothing_to_rehearse = (try? decoder.container(keyedBy: Key.self)).flatMap { try? $0.decodeIfPresent(Bool.self, forKey: .nothing_to_rehearse) } ?? nil
                }
            }
            struct Job: Decodable { var id: Int; var kind: String; var state: String; var requested_by: String; var entry_id: String?; var report: Report? }
            var jobs: [Job] = []
            let deadline = ContinuousClock.now + .seconds(300)
            while ContinuousClock.now < deadline {
                let listed = try await LocalHTTP.request(base + "/api/jobs?database=demo", bearer: token)
                jobs = (try? JSONDecoder().decode([Job].self, from: Data(listed.body.utf8))) ?? []
                // A rehearsal the schedule fires before the first backup exists fails (nothing to
                // rehearse); wait for one that was queued after a backup finished.
                if rehearsalAfterBackup(jobs.map { ($0.id, $0.kind, $0.requested_by, $0.state) }) != nil { break }
                try await Task.sleep(for: .seconds(1))
            }
            _ = try await LocalHTTP.request(base + "/api/schedules/demo/pause", method: "POST", bearer: token)
            for job in jobs.reversed() {
                say("  job \(job.id): \(job.kind) by \(job.requested_by): \(job.report?.nothing_to_rehearse == true ? "skipped, no backup to rehearse yet" : job.state)\(job.entry_id.map { " (\($0))" } ?? "")")
            }
            let metrics = try await LocalHTTP.request(base + "/metrics", bearer: token).body
            for line in metrics.split(separator: "\n") where line.hasPrefix("tsbackup_last_") && line.contains("\"demo\"") {
                say("  \(line)")
            }
            say("\n  Dashboard: \(base)/dashboard  (sign in with the token \(token))")
            say("  Metrics:   \(base)/metrics (Authorization: Bearer, an operator's or viewer's token)    API: \(base)/openapi.json")
            guard rehearsalAfterBackup(jobs.map { ($0.id, $0.kind, $0.requested_by, $0.state) }) == "finished" else {
                throw ValidationError("the service did not finish a scheduled backup and a rehearsal; its log:\n\(service.log().suffix(3000))")
            }
        } catch {
            await service.stop()
            throw error
        }
        step("Stopping the service (SIGTERM: it stops taking work and exits)")
        await service.stop()
    }

    /// The state of the first scheduled rehearsal that ended after the first scheduled backup
    /// finished (job ids grow in queue order); nil while there is none.
    func rehearsalAfterBackup(_ jobs: [(id: Int, kind: String, by: String, state: String)]) -> String? {
        guard let backup = jobs.filter({ $0.kind == "backup" && $0.by == "scheduler" && $0.state == "finished" }).map(\.id).min() else { return nil }
        return jobs.filter { $0.kind == "rehearsal" && $0.by == "scheduler" && $0.id > backup && ["finished", "failed"].contains($0.state) }
            .min { $0.id < $1.id }?.state
    }

    /// Point-in-time recovery: a cluster archiving through `tsbackup wal-push`, a base backup, two
    /// writes, and a recovery to a time between them, with its verification report.
    func pitrDemo(_ tsbackup: String) async throws {
        step("Point-in-time recovery: a second throwaway cluster with archive_command = 'tsbackup wal-push %p --repo ...'")
        let scratch = NSTemporaryDirectory() + "tsbackup-demo-pitr-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scratch + "/repo", withIntermediateDirectories: true)
        chmod(scratch, 0o755)
        try SandboxCluster.handToPostgres(scratch + "/repo")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pgdata = scratch + "/recovered"
        try await SandboxCluster.with(.init(archiving: .init(tsbackup: tsbackup, repository: scratch + "/repo"))) { cluster in
            let environment = ["PGPASSWORD": cluster.superuserPassword]
            try await cluster.createDatabase("shop")
            try await cluster.withSuperuser(database: "shop") { session in
                try await session.execute("CREATE TABLE orders (t timestamptz NOT NULL DEFAULT clock_timestamp(), item text)")
                try await session.execute("SELECT create_hypertable('orders', 't')")
            }
            try await show(tsbackup, ["base-backup", "--db", cluster.url(database: "postgres"), "--repo", scratch + "/repo"], environment: environment)
            let (target, segment): (Date, String) = try await cluster.withSuperuser(database: "shop") { session in
                try await session.execute("INSERT INTO orders (item) VALUES ('first write: kept')")
                try await Task.sleep(for: .milliseconds(1500))
                let between = try await session.value("SELECT clock_timestamp()", as: Date.self)
                try await Task.sleep(for: .milliseconds(1500))
                try await session.execute("INSERT INTO orders (item) VALUES ('second write: after the target, must be gone')")
                return (between, try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self))
            }
            say("  wrote two rows 3 s apart; the target is the moment between them")
            // The archiver runs asynchronously: wait (bounded) until the switched segment is in.
            for _ in 0..<300 {
                let archived = try await cluster.withSuperuser { try await $0.value(
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self) }
                if archived >= segment { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            try await show(tsbackup, ["list", "--repo", scratch + "/repo"], environment: environment)
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let port = try SandboxCluster.freeLoopbackPort()
            try await show(tsbackup, ["recover", "--repo", scratch + "/repo", "--to-time", iso.string(from: target),
                                      "--pgdata", pgdata, "--port", String(port)], environment: environment)
            var settings = cluster.settings(database: "shop")
            settings.port = port
            let rows = try await DatabaseSession.with(settings) { try await $0.values("SELECT item FROM orders ORDER BY t", as: String.self) }
            say("  rows in the recovered cluster: \(rows)")
            let pgctl = cluster.binDirectory + "/pg_ctl"
            _ = getuid() == 0 ? try await ProcessRunner.run("runuser", ["-u", "postgres", "--", pgctl, "-D", pgdata, "-m", "fast", "-w", "stop"], workingDirectory: "/")
                              : try await ProcessRunner.run(pgctl, ["-D", pgdata, "-m", "fast", "-w", "stop"])
        }
    }

    /// Runs the real tsbackup binary, echoing the command and its output.
    func show(_ tsbackup: String, _ arguments: [String], environment: [String: String]) async throws {
        step("tsbackup " + arguments.joined(separator: " "))
        let result = try await ProcessRunner.run(tsbackup, arguments, environment: environment)
        say(result.standardOutput, terminator: "")
        if !result.standardError.isEmpty { say(result.standardError, terminator: "") }
        guard result.succeeded else {
            throw ValidationError("tsbackup \(arguments[0]) failed (\(result.statusDescription))")
        }
    }

    func step(_ text: String) {
        say("\n==> \(text)")
    }

    /// Unbuffered, so the demo reads well when piped or logged.
    func say(_ text: String, terminator: String = "\n") {
        FileHandle.standardOutput.write(Data((text + terminator).utf8))
    }

}

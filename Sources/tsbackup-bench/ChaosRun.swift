import Crypto
import Foundation
import PostgresNIO
import TSBackup
import TSBackupSandbox

/// `tsbackup-bench --chaos N`: the kill campaign of issue 14. On its own throwaway clusters and a
/// moto S3 server (signature checking on), it SIGKILLs the real tsbackup at a random moment
/// within each operation's measured duration, runs the same operation again (the next run), and
/// checks the invariants after it:
///
/// - every entry that lists as complete passes `tsbackup verify`;
/// - no database is in TimescaleDB's restore mode (`timescaledb.restoring` set on a database);
/// - no database is left that the harness did not create and no output named;
/// - every WAL file the server marked archived (`archive_status/*.done`) is in the archive and
///   `tsbackup wal-fetch` returns it byte for byte;
/// - the next run succeeds, leaves no incomplete entry behind, and its output is searched for
///   what it cleaned up.
///
/// Kills go round-robin over the operations; a kill that comes after the process already ended
/// counts as "ended first", not as a kill, and the loop goes on until `kills` kills landed or the
/// time bound is reached. Prints a table per operation; returns whether there was no violation.
struct ChaosRun {
    var tsbackup: String
    var kills: Int
    var minutes: Double
    var seed: UInt64
    var log: @Sendable (String) -> Void

    func run() async throws -> Bool {
        let campaign = ChaosCampaign(tsbackup: tsbackup, seed: seed, log: log)
        return try await campaign.run(kills: kills, minutes: minutes)
    }
}

enum ChaosOperation: String, CaseIterable, Sendable {
    case backupLocal = "backup (local)"
    case backupS3 = "backup (S3)"
    case restore = "restore"
    case exportHypertable = "export-hypertable"
    case importHypertable = "import-hypertable"
    case walPush = "wal-push (archiver)"
    case baseBackup = "base-backup"
    case recover = "recover"
    case serveBackup = "serve (backup job)"
    case serveRestore = "serve (restore job)"
}

actor ChaosCampaign {
    struct Stats {
        var kills = 0
        var endedFirst = 0
        var nextRuns = 0
        var nextFailed = 0
        var violations: [String] = []
        var cleanupMessages = 0
        var cleanupSamples: [String] = []
        var leftovers: [String] = []
    }

    let tsbackup: String
    let log: @Sendable (String) -> Void
    var random: SplitMix64
    var stats: [ChaosOperation: Stats] = [:]
    var measured: [ChaosOperation: Double] = [:]
    var verified: Set<String> = []
    var walChecked: Set<String> = []
    var counter = 0
    /// The standard output of the run the last kill landed on: an import's report, when the
    /// kill came after the import had printed it.
    var killedOutput = ""

    // Set up in run().
    var source: SandboxCluster!
    var target: SandboxCluster!
    var moto: MotoServer!
    var work = ""
    var scratch = ""
    var environment: [String: String] = [:]
    var targetEnvironment: [String: String] = [:]
    var restoreID = ""
    var exportID = ""
    var serveBackupID = ""
    var servePort = 0
    var serveTokens: [String: String] = [:]
    var serveRun = 0

    var repoLocal: String { work + "/repo-local" }
    let repoS3 = "s3://tsbackup-chaos/backups"
    var repoWAL: String { work + "/repo-wal" }
    var repoServe: String { work + "/repo-serve" }

    init(tsbackup: String, seed: UInt64, log: @escaping @Sendable (String) -> Void) {
        self.tsbackup = tsbackup
        self.random = SplitMix64(seed: seed)
        self.log = log
    }

    func run(kills: Int, minutes: Double) async throws -> Bool {
        let started = ContinuousClock.now
        let bound = started + .seconds(minutes * 60)
        work = try makeWorkDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        log("kill campaign: \(kills) kills, at most \(Int(minutes)) minutes, \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load), \(tsbackup)")
        moto = try await MotoServer.start()
        do {
            try await setUp()
            var round = 0
            let operations = ChaosOperation.allCases
            var landed = 0
            var stoppedByTime = false
            while landed < kills {
                if ContinuousClock.now > bound { stoppedByTime = true; break }
                let operation = operations[round % operations.count]
                round += 1
                do {
                    try await cycle(operation)
                } catch {
                    violation(operation, "the harness failed around this kill: \(error)")
                }
                landed = stats.values.reduce(0) { $0 + $1.kills }
                if round % operations.count == 0 {
                    log("  \(landed)/\(kills) kills, \(Int((ContinuousClock.now - started).seconds)) s, violations so far \(stats.values.reduce(0) { $0 + $1.violations.count })")
                }
            }
            // The end: every repository listed and verified once more.
            for operation in [ChaosOperation.backupLocal, .backupS3, .baseBackup, .serveBackup] {
                await checkRepository(operation, final: true)
            }
            await tearDown()
            let load2 = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
            return report(seconds: (ContinuousClock.now - started).seconds, stoppedByTime: stoppedByTime, load: "\(load) at start, \(load2) at the end")
        } catch {
            await tearDown()
            throw error
        }
    }

    // MARK: Set-up

    func setUp() async throws {
        chmod(work, 0o755)
        scratch = work + "/scratch"
        for directory in [scratch, repoWAL, work + "/tmp"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try SandboxCluster.handToPostgres(repoWAL)
        source = try await SandboxCluster.start(.init(archiving: .init(tsbackup: tsbackup, repository: repoWAL)))
        target = try await SandboxCluster.start()
        try await source.createDatabase("chaos")
        let data = SampleData(.init(devices: 6, days: 21, readingsPerDay: 96, chunkInterval: "1 day", events: 2_000, eventsPerChunk: 200, sensors: 6, spacePartitions: 2))
        try await source.withSuperuser(database: "chaos") { session in
            try await data.load(into: session)
            try await session.execute("CREATE TABLE public.walfill (id bigserial PRIMARY KEY, payload text)")
        }
        try await target.createDatabase("chaos_import")
        let admin = try await moto.client(bucket: "tsbackup-chaos", create: true)
        try? await admin.shutdown()

        var env = ProcessInfo.processInfo.environment
        for key in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "TSBACKUP_REPO", "TSBACKUP_ENCRYPTION_KEY_FILE"] { env[key] = nil }
        env.merge(moto.environment()) { $1 }
        env["PGPASSWORD"] = source.superuserPassword
        env["TSBACKUP_SCRATCH_DIR"] = scratch
        env["TMPDIR"] = work + "/tmp"
        environment = env
        // Restores and imports connect to the target only, with its password.
        targetEnvironment = env
        targetEnvironment["PGPASSWORD"] = target.superuserPassword

        // Warm-up: every operation once, unkilled, to measure it (and to have something to restore).
        log("warm-up: each operation once, measured")
        for operation in ChaosOperation.allCases {
            let outcome = try await runNext(operation, tag: "warmup")
            guard outcome.succeeded else {
                throw SandboxLikeError("warm-up \(operation.rawValue) failed (\(outcome.status)): \(outcome.text.suffix(1500))")
            }
            log(String(format: "  %@: %.1f s", operation.rawValue, outcome.seconds))
            if operation == .backupLocal, let id = Self.jsonID(outcome.output) { restoreID = id }
            if operation == .exportHypertable, let id = Self.jsonID(outcome.output) { exportID = id }
            await afterNext(operation, outcome, tag: "warmup")
        }
    }

    func tearDown() async {
        await stopService()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? [] where name.hasPrefix("recovered-") {
            await stopServer(work + "/" + name)
        }
        await source?.stop()
        await target?.stop()
        await moto?.stop()
    }

    // MARK: One kill

    func cycle(_ operation: ChaosOperation) async throws {
        counter += 1
        let tag = "k\(counter)"
        let fraction = Double(random.next() % 1_000_000) / 1_000_000
        let delay = fraction * (measured[operation] ?? 1)
        let killed: Bool
        killedOutput = ""
        switch operation {
        case .walPush:
            killed = try await killArchiverPush(delay: delay)
        case .serveBackup, .serveRestore:
            killed = try await killService(operation, tag: tag, delay: delay)
        default:
            let (arguments, directory) = command(operation, tag: tag)
            let child = try await spawn(arguments, directory: directory, tag: tag)
            killed = await killAfter(child, delay: delay)
            if !killed {
                let exit = await child.wait(timeout: .seconds(600)).exit
                await afterNext(operation, exit, tag: tag)
            }
        }
        if killed {
            stats[operation, default: Stats()].kills += 1
            await afterKill(operation, tag: tag)
        } else {
            stats[operation, default: Stats()].endedFirst += 1
        }
        // The next run of the same operation, then the invariants.
        let next = try await runNext(operation, tag: tag + "n")
        stats[operation, default: Stats()].nextRuns += 1
        if !next.succeeded {
            stats[operation, default: Stats()].nextFailed += 1
            violation(operation, "the run after the kill failed (\(next.status)): \(next.text.singleLine(limit: 700))")
        } else if next.seconds > 0 {
            // The duration the next kill is drawn from: the latest unkilled run.
            measured[operation] = next.seconds
        }
        noteCleanup(operation, next.text)
        await afterNext(operation, next, tag: tag + "n")
        await checkInvariants(operation, nextOutput: next.text)
    }

    /// Sleeps `delay` seconds unless the child ends first; then SIGKILLs it. Returns whether the
    /// kill landed on a running process.
    func killAfter(_ child: ChaosChild, delay: Double) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(delay)
        while ContinuousClock.now < deadline {
            // Ended: the kill came too late.
            if child.ended || child.pid <= 0 { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        if child.ended || child.pid <= 0 { return false }
        kill(child.pid, SIGKILL)
        killedOutput = await child.wait(timeout: .seconds(60)).exit.output
        return true
    }

    // MARK: Commands

    func command(_ operation: ChaosOperation, tag: String) -> ([String], String) {
        let db = source.url(database: "chaos")
        switch operation {
        case .backupLocal:
            return (["backup", "--db", db, "--repo", repoLocal, "--jobs", "2", "--label", tag, "--json"], work)
        case .backupS3:
            return (["backup", "--db", db, "--repo", repoS3, "--jobs", "2", "--label", tag, "--json"], work)
        case .restore:
            return (["restore", restoreID, "--repo", repoLocal, "--target", target.url(database: "postgres"), "--into", "chaos_r_\(tag)", "--jobs", "2", "--json"], work)
        case .exportHypertable:
            return (["export-hypertable", "--db", db, "--table", "public.conditions", "--repo", repoLocal, "--jobs", "2", "--json"], work)
        case .importHypertable:
            return (["import-hypertable", exportID, "--repo", repoLocal, "--target", target.url(database: "chaos_import"), "--as", "public.imp_\(tag)", "--jobs", "2", "--json"], work)
        case .baseBackup:
            return (["base-backup", "--db", source.url(database: "postgres"), "--repo", repoWAL, "--label", tag, "--json"], work)
        case .recover:
            let port = (try? SandboxCluster.freeLoopbackPort()) ?? 0
            // --archive-mode off: a killed run's server, left running until the next recover
            // stops it, must not archive its new timeline into the source's archive meanwhile.
            return (["recover", "--repo", repoWAL, "--to-latest", "--pgdata", work + "/recovered-\(tag)", "--port", String(port), "--stop-after", "--archive-mode", "off", "--json"], work)
        case .walPush, .serveBackup, .serveRestore:
            return ([], work)
        }
    }

    func childEnvironment(_ env: [String: String]) -> [String: String?] {
        var result: [String: String?] = env.mapValues { Optional($0) }
        for key in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "TSBACKUP_REPO", "TSBACKUP_ENCRYPTION_KEY_FILE"] where env[key] == nil {
            result[key] = .some(nil)
        }
        return result
    }

    func spawn(_ arguments: [String], directory: String, tag: String) async throws -> ChaosChild {
        let toTarget = arguments.first == "restore" || arguments.first == "import-hypertable"
        return try await ChaosChild.spawn(tsbackup, arguments, environment: childEnvironment(toTarget ? targetEnvironment : environment), directory: directory,
                                          pidFile: work + "/tmp/\(tag).pid")
    }

    /// One unkilled run of `operation` (the warm-up and the run after each kill).
    func runNext(_ operation: ChaosOperation, tag: String) async throws -> ChaosChild.Exit {
        switch operation {
        case .walPush:
            return try await walPushNext()
        case .serveBackup, .serveRestore:
            return try await serviceNext(operation, tag: tag)
        default:
            let (arguments, directory) = command(operation, tag: tag)
            let (exit, hung) = await (try await spawn(arguments, directory: directory, tag: tag)).wait(timeout: .seconds(900))
            if hung { violation(operation, "the run after the kill hung (killed after 900 s)") }
            return exit
        }
    }

    /// What the harness tidies after a run that finished: restored databases and imported tables
    /// (named in the run's report), recovered directories.
    func afterNext(_ operation: ChaosOperation, _ exit: ChaosChild.Exit, tag: String) async {
        switch operation {
        case .restore:
            if exit.succeeded { await dropDatabase(target, "chaos_r_\(tag)") }
        case .serveRestore:
            break
        case .importHypertable:
            if exit.succeeded {
                _ = try? await target.withSuperuser(database: "chaos_import") { try await $0.execute("DROP TABLE IF EXISTS public.\(quoteIdentifier("imp_" + tag)) CASCADE") }
            }
        case .recover:
            // The next recover stops the server a killed one left (its record in $TMPDIR); one
            // still running now is a leftover.
            if let pgdata = killedRecoverData {
                killedRecoverData = nil
                if Self.postmasterRuns(pgdata) {
                    stats[operation, default: Stats()].leftovers.append("\(tag): the killed recover's server was still running after the next recover (stopped by the harness)")
                } else {
                    log("  \(tag): the killed recover's server was stopped by the next recover")
                }
            }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? [] where name.hasPrefix("recovered-") {
                await stopServer(work + "/" + name)
                try? FileManager.default.removeItem(atPath: work + "/" + name)
            }
            removeOtherTimelines()
        default:
            break
        }
    }

    /// The data directory of a killed recover whose server was running when it was killed: the
    /// next recover must stop it (checked in ``afterNext(_:_:tag:)``).
    var killedRecoverData: String?

    /// What a kill left: a killed recover's server is left for the next recover to stop (it
    /// proves the server is that run's from the record the run kept in $TMPDIR).
    func afterKill(_ operation: ChaosOperation, tag: String) async {
        if operation == .recover {
            let pgdata = work + "/recovered-\(tag)"
            if Self.postmasterRuns(pgdata) {
                killedRecoverData = pgdata
                log("  \(tag): the killed recover's server runs; left to the next recover")
            }
            removeOtherTimelines()
        }
    }

    /// Whether the postmaster named by `pgdata/postmaster.pid` is a live process.
    static func postmasterRuns(_ pgdata: String) -> Bool {
        guard let text = try? String(contentsOfFile: pgdata + "/postmaster.pid", encoding: .utf8),
              let pid = Int32(text.split(separator: "\n").first.map(String.init) ?? "") else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    // MARK: wal-push, killed under the archiver

    /// Writes some WAL, switches segments and SIGKILLs the `tsbackup wal-push` the archiver
    /// starts, `delay` seconds after it was first seen.
    func killArchiverPush(delay: Double) async throws -> Bool {
        let seen = walPushProcesses()
        try await source.withSuperuser(database: "chaos") { session in
            try await session.execute("INSERT INTO public.walfill (payload) SELECT md5(g::text) FROM generate_series(1, 20000) g")
            try await session.execute("SELECT pg_switch_wal()")
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let pid = walPushProcesses().subtracting(seen).first {
                let killAt = ContinuousClock.now + .seconds(delay)
                while ContinuousClock.now < killAt {
                    if kill(pid, 0) != 0 { return false }
                    try? await Task.sleep(for: .milliseconds(2))
                }
                return kill(pid, SIGKILL) == 0
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    /// Pids of running `tsbackup wal-push ... --repo <repoWAL>` processes.
    func walPushProcesses() -> Set<pid_t> {
        var pids: Set<pid_t> = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { continue }
            let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if words.count > 2, words[0].hasSuffix("tsbackup"), words[1] == "wal-push", words.contains(repoWAL) {
                pids.insert(pid)
            }
        }
        return pids
    }

    /// The next "run" of wal-push: a new segment switched and waited for until the server has
    /// archived it (the archiver retries the killed push first). Its output is what the pushes
    /// wrote to the server log meanwhile.
    func walPushNext() async throws -> ChaosChild.Exit {
        let started = ContinuousClock.now
        let logBefore = source.serverLog().utf8.count
        let segment = try await source.withSuperuser(database: "chaos") { session in
            try await session.execute("INSERT INTO public.walfill (payload) SELECT md5(g::text) FROM generate_series(1, 20000) g")
            return try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
        }
        let deadline = ContinuousClock.now + .seconds(300)
        var archived = false
        while ContinuousClock.now < deadline {
            let last = try await source.withSuperuser { try await $0.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self) }
            if last >= segment { archived = true; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let seconds = (ContinuousClock.now - started).seconds
        let logText = String(decoding: Array(source.serverLog().utf8.dropFirst(logBefore)), as: UTF8.self)
        // Measure one push alone for the kill delay: the archiver's pushes are not timed by PostgreSQL.
        let pushSeconds = try await timeOnePush()
        return ChaosChild.Exit(exitCode: archived ? 0 : 1, signal: nil, output: "", error: archived ? logText : "segment \(segment) not archived within 300 s; server log: \(logText.suffix(1500))",
                               seconds: archived ? pushSeconds : seconds)
    }

    /// Times `tsbackup wal-push` of an archived segment (a repeated push: read, compress, compare),
    /// as the server's user: the duration the archiver's push is killed within.
    func timeOnePush() async throws -> Double {
        let done = (try? FileManager.default.contentsOfDirectory(atPath: source.dataDirectory + "/pg_wal/archive_status")) ?? []
        guard let name = done.filter({ $0.hasSuffix(".done") && $0.count == 29 }).sorted().last?.dropLast(5) else { return 0.3 }
        let started = ContinuousClock.now
        let result = try await source.runAsOwner("/usr/bin/env", ["-C", source.dataDirectory, try archivingExecutable(), "wal-push", "pg_wal/\(name)", "--repo", repoWAL])
        return result.succeeded ? (ContinuousClock.now - started).seconds : 0.3
    }

    func archivingExecutable() throws -> String {
        let copy = source.directory + "/tsbackup"
        return FileManager.default.fileExists(atPath: copy) ? copy : tsbackup
    }

    // MARK: The service

    func serviceConfig() throws -> String {
        if serveTokens.isEmpty {
            serveTokens = ["alice": "alice-\(UUID().uuidString)", "olga": "olga-\(UUID().uuidString)"]
            try FileManager.default.createDirectory(atPath: work + "/serve", withIntermediateDirectories: true)
        }
        func hex(_ token: String) -> String { SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined() }
        servePort = try SandboxCluster.freeLoopbackPort()
        let yaml = """
            listen: {host: 127.0.0.1, port: \(servePort)}
            repository: {url: \(repoServe)}
            state_file: \(work)/serve/state.sqlite
            jobs: {max_concurrent: 2}
            databases:
              metrics: {host: 127.0.0.1, port: \(source.port), user: postgres, dbname: chaos, password_env: CHAOS_PGPASSWORD, backup_jobs: 2}
            tokens:
              - {name: alice, sha256: \(hex(serveTokens["alice"]!)), role: owner, databases: [metrics]}
              - {name: olga, sha256: \(hex(serveTokens["olga"]!)), role: operator}

            """
        let path = work + "/serve/serve.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    var service: ChaosChild?

    func startService() async throws -> ChaosChild {
        serveRun += 1
        let config = try serviceConfig()
        var env = environment
        env["CHAOS_PGPASSWORD"] = source.superuserPassword
        env["PGPASSWORD"] = nil
        let child = try await ChaosChild.spawn(tsbackup, ["serve", "--config", config], environment: childEnvironment(env), directory: work + "/serve",
                                               pidFile: work + "/serve/run\(serveRun).pid")
        let deadline = ContinuousClock.now + .seconds(120)
        while !canConnect(port: servePort) {
            if child.ended || ContinuousClock.now > deadline {
                if child.pid > 0 { kill(child.pid, SIGKILL) }
                let text = await child.wait(timeout: .seconds(30)).exit.error
                throw SandboxLikeError("tsbackup serve did not start: \(text.suffix(1500))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        service = child
        return child
    }

    /// SIGTERM and wait (hang guard); returns its output.
    @discardableResult
    func stopService() async -> ChaosChild.Exit? {
        guard let child = service else { return nil }
        service = nil
        kill(child.pid, SIGTERM)
        let (exit, hung) = await child.wait(timeout: .seconds(300))
        if hung { violation(.serveBackup, "tsbackup serve did not exit within 300 s of SIGTERM") }
        return exit
    }

    func api(_ method: String, _ path: String, as who: String, body: String? = nil) async throws -> (Int, Any?) {
        let headers = work + "/serve/headers-\(who)"
        try "Authorization: Bearer \(serveTokens[who]!)\nContent-Type: application/json\n".write(toFile: headers, atomically: true, encoding: .utf8)
        chmod(headers, 0o600)
        var arguments = ["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H", "@" + headers, "--max-time", "120"]
        if let body { arguments += ["--data", body] }
        arguments.append("http://127.0.0.1:\(servePort)" + path)
        let result = try await ProcessRunner.run("curl", arguments)
        let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.last ?? "") ?? 0
        let text = lines.dropLast().joined(separator: "\n")
        return (status, try? JSONSerialization.jsonObject(with: Data(text.utf8)))
    }

    /// Queues the operation's job; returns its id.
    func submitJob(_ operation: ChaosOperation, tag: String) async throws -> Int {
        if operation == .serveBackup {
            let (status, json) = try await api("POST", "/api/databases/metrics/backups", as: "alice", body: "{\"label\": \"\(tag)\"}")
            guard let id = (json as? [String: Any])?["id"] as? Int else { throw SandboxLikeError("POST backups: \(status) \(String(describing: json))") }
            return id
        }
        let body = "{\"database\": \"metrics\", \"backup_id\": \"\(serveBackupID)\", \"into\": \"chaos_sr_\(tag)\"}"
        let (status, json) = try await api("POST", "/api/restore-requests", as: "alice", body: body)
        guard let request = (json as? [String: Any])?["id"] as? Int else { throw SandboxLikeError("POST restore-requests: \(status) \(String(describing: json))") }
        let (approved, view) = try await api("POST", "/api/restore-requests/\(request)/approve", as: "olga")
        guard let job = ((view as? [String: Any])?["job"] as? [String: Any])?["id"] as? Int else {
            throw SandboxLikeError("approve: \(approved) \(String(describing: view))")
        }
        return job
    }

    func jobState(_ id: Int) async throws -> [String: Any] {
        let (_, json) = try await api("GET", "/api/jobs/\(id)", as: "olga")
        return json as? [String: Any] ?? [:]
    }

    func waitForJob(_ id: Int, timeout: Duration = .seconds(900)) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let job = try await jobState(id)
            if let state = job["state"] as? String, ["finished", "failed", "interrupted", "cancelled"].contains(state) { return job }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw SandboxLikeError("job \(id) did not end within \(timeout)")
    }

    var killedJob: Int?

    /// Starts the service, queues a job, SIGKILLs the service `delay` seconds later.
    func killService(_ operation: ChaosOperation, tag: String, delay: Double) async throws -> Bool {
        let child = try await startService()
        let started = ContinuousClock.now
        let job = try await submitJob(operation, tag: tag)
        let killAt = started + .seconds(delay)
        while ContinuousClock.now < killAt {
            let record = try await jobState(job)
            if let state = record["state"] as? String, ["finished", "failed", "interrupted"].contains(state) {
                await stopService()
                killedJob = nil
                // The job ended before the kill: a finished restore's database is its result,
                // named in its report; tidied here as the CLI restore's is (afterNext).
                if operation == .serveRestore, state == "finished", let database = (record["report"] as? [String: Any])?["database"] as? String {
                    await dropDatabase(source, database)
                }
                return false
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(child.pid, SIGKILL)
        _ = await child.wait(timeout: .seconds(60))
        service = nil
        killedJob = job
        return true
    }

    /// The next run: the service started again; the killed job must end as interrupted (not
    /// running, not finished-looking); a new job of the same kind must finish. Output: the
    /// service's log and its own audit of what it cleaned up.
    func serviceNext(_ operation: ChaosOperation, tag: String) async throws -> ChaosChild.Exit {
        let began = ContinuousClock.now
        _ = try await startService()
        var problems: [String] = []
        var killedReport = ""
        if let killed = killedJob {
            // Interrupted if it was running; a job still queued at the kill runs after the
            // restart (by design) and may finish: then its report names what it created.
            let job = try await waitForJob(killed, timeout: .seconds(300))
            // Without its parameters: the database name asked for is not a report naming it.
            if let data = try? JSONSerialization.data(withJSONObject: job.filter { $0.key != "parameters" }) { killedReport = String(decoding: data, as: UTF8.self) }
            killedJob = nil
        }
        let jobStarted = ContinuousClock.now
        let id = try await submitJob(operation, tag: tag)
        let job = try await waitForJob(id)
        let jobSeconds = (ContinuousClock.now - jobStarted).seconds
        if job["state"] as? String != "finished" {
            problems.append("job \(id) ended \(job["state"] as? String ?? "?"): \(job["error"] as? String ?? "")")
        }
        let (_, audit) = try await api("GET", "/api/audit?actor=service&limit=20", as: "olga")
        let auditText = (audit as? [[String: Any]] ?? []).map { "\($0["action"] ?? "") \($0["outcome"] ?? "") \($0["target"] ?? "") \($0["detail"] ?? "")" }.joined(separator: "\n")
        // The new job's own report (its restore's warnings name what its preflight dropped).
        var nextReport = ""
        if let data = try? JSONSerialization.data(withJSONObject: job.filter { $0.key != "parameters" }) { nextReport = String(decoding: data, as: UTF8.self) }
        if operation == .serveBackup, serveBackupID.isEmpty || tag == "warmup" {
            if let result = job["entry_id"] as? String { serveBackupID = result }
        }
        if operation == .serveRestore {
            if let database = (job["parameters"] as? [String: Any])?["into"] as? String { await dropDatabase(source, database) }
            else { await dropDatabase(source, "chaos_sr_\(tag)") }
        }
        let exit = await stopService()
        if serveBackupID.isEmpty { serveBackupID = try await newestComplete(repoServe) ?? "" }
        let text = (exit?.error ?? "") + "\n" + (exit?.output ?? "") + "\naudit:\n" + auditText + "\nkilled job:\n" + killedReport + "\nnext job:\n" + nextReport
        return ChaosChild.Exit(exitCode: problems.isEmpty ? 0 : 1, signal: nil, output: "", error: problems.joined(separator: "; ") + "\n" + text,
                               seconds: problems.isEmpty ? jobSeconds : (ContinuousClock.now - began).seconds)
    }

    // MARK: Invariants

    func checkInvariants(_ operation: ChaosOperation, nextOutput: String) async {
        await checkRepository(operation, final: false)
        for cluster in [source!, target!] {
            await checkRestoreMode(operation, cluster)
            await checkDatabases(operation, cluster, nextOutput: nextOutput)
        }
        await checkWAL(operation)
        checkScratch(operation)
        if operation == .importHypertable { await checkImportTables(operation, nextOutput: nextOutput) }
    }

    func repository(for operation: ChaosOperation) -> String {
        switch operation {
        case .backupLocal, .restore, .exportHypertable, .importHypertable: return repoLocal
        case .backupS3: return repoS3
        case .walPush, .baseBackup, .recover: return repoWAL
        case .serveBackup, .serveRestore: return repoServe
        }
    }

    func tsbackupRun(_ arguments: [String]) async throws -> ProcessResult {
        try await ProcessRunner.run(tsbackup, arguments, environment: environment.mapValues { Optional($0) })
    }

    /// Lists the operation's repository: no entry may be incomplete after the next run, and
    /// every complete entry not verified before must verify. Keeps the newest few entries.
    func checkRepository(_ operation: ChaosOperation, final: Bool) async {
        let repo = repository(for: operation)
        guard FileManager.default.fileExists(atPath: repo) || repo.hasPrefix("s3://") else { return }
        do {
            let list = try await tsbackupRun(["list", "--repo", repo, "--json"])
            guard list.succeeded, let rows = try JSONSerialization.jsonObject(with: Data(list.standardOutput.utf8)) as? [[String: Any]] else {
                violation(operation, "tsbackup list --repo \(repo) failed: \(list.standardError.singleLine(limit: 400))")
                return
            }
            var complete: [String] = []
            for row in rows {
                guard let id = row["id"] as? String, let state = row["state"] as? String else { continue }
                if state == "complete" {
                    complete.append(id)
                    let key = repo + "|" + id
                    if !verified.contains(key) || final {
                        let verify = try await tsbackupRun(["verify", id, "--repo", repo])
                        if verify.succeeded {
                            verified.insert(key)
                        } else {
                            violation(operation, "entry \(id) lists as complete in \(repo) but fails verify: \((verify.standardOutput + " " + verify.standardError).singleLine(limit: 600))")
                        }
                    }
                } else if state == "incomplete" && !(operation == .walPush || operation == .recover || operation == .restore || operation == .importHypertable) {
                    violation(operation, "entry \(id) in \(repo) is still incomplete after the next run (nothing cleaned it up)")
                } else if state == "incomplete" {
                    violation(operation, "entry \(id) in \(repo) is incomplete (this operation does not write entries)")
                }
            }
            // Keep the repository small: the newest four complete entries and the fixtures.
            if !final {
                let keep: Set<String> = [restoreID, exportID, serveBackupID]
                for id in complete.dropLast(4) where !keep.contains(id) {
                    _ = try await tsbackupRun(["delete", id, "--repo", repo, "--yes"])
                }
            }
        } catch {
            violation(operation, "listing \(repo) failed: \(error)")
        }
    }

    func checkRestoreMode(_ operation: ChaosOperation, _ cluster: SandboxCluster) async {
        do {
            let rows = try await cluster.withSuperuser { session in
                try await session.values("""
                    SELECT d.datname FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                    WHERE s.setrole = 0 AND EXISTS (SELECT 1 FROM unnest(s.setconfig) c WHERE c ILIKE 'timescaledb.restoring=%' AND c NOT ILIKE '%=off')
                    """, as: String.self)
            }
            for database in rows {
                violation(operation, "database \(database) is left in TimescaleDB's restore mode (timescaledb.restoring set)")
            }
        } catch {
            violation(operation, "could not check restore mode: \(error)")
        }
    }

    /// Databases beyond the fixtures: each must have been named by the next run's output (then
    /// it is a leftover, dropped by the harness) or it is a violation.
    func checkDatabases(_ operation: ChaosOperation, _ cluster: SandboxCluster, nextOutput: String) async {
        let expected: Set<String> = ["postgres", "template0", "template1", "chaos", "chaos_import"]
        do {
            let names = try await cluster.withSuperuser { try await $0.values("SELECT datname FROM pg_database", as: String.self) }
            for name in names where !expected.contains(name) {
                if Self.mentions(name, in: nextOutput) {
                    stats[operation, default: Stats()].leftovers.append("database \(name) left, named by the next run")
                } else {
                    violation(operation, "database \(name) is left on \(cluster === source ? "the source" : "the target") cluster and no output named it")
                }
                await dropDatabase(cluster, name)
            }
        } catch {
            violation(operation, "could not list databases: \(error)")
        }
    }

    /// Whether `text` names `name` as a whole identifier: not as a part of a longer one (the
    /// next run's `chaos_r_k43n` does not name the killed run's `chaos_r_k43`).
    static func mentions(_ name: String, in text: String) -> Bool {
        func isIdentifierByte(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F || byte == 0x24 || byte >= 0x80
        }
        let haystack = Array(text.utf8), needle = Array(name.utf8)
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        var start = 0
        while start + needle.count <= haystack.count {
            if haystack[start] == needle[0], Array(haystack[start..<(start + needle.count)]) == needle {
                let before = start == 0 ? nil : haystack[start - 1]
                let after = start + needle.count == haystack.count ? nil : haystack[start + needle.count]
                if !(before.map(isIdentifierByte) ?? false) && !(after.map(isIdentifierByte) ?? false) { return true }
            }
            start += 1
        }
        return false
    }

    func checkImportTables(_ operation: ChaosOperation, nextOutput: String) async {
        do {
            let tables = try await target.withSuperuser(database: "chaos_import") {
                try await $0.values("SELECT relname::text FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace AND relname LIKE 'imp\\_%'", as: String.self)
            }
            for table in tables {
                if Self.mentions(table, in: nextOutput) {
                    stats[operation, default: Stats()].leftovers.append("table \(table) left, named by the next run")
                } else if Self.mentions(table, in: killedOutput) {
                    // The kill landed after the import had printed its report (stdout, only after
                    // the check through the root) and ended its claim: a complete import whose
                    // process had not exited yet, named by its own report.
                    stats[operation, default: Stats()].leftovers.append("table \(table) imported and reported before the kill landed")
                } else {
                    violation(operation, "table public.\(table) (a killed import's) is left in the target database and no output named it")
                }
                _ = try? await target.withSuperuser(database: "chaos_import") { try await $0.execute("DROP TABLE IF EXISTS public.\(quoteIdentifier(table)) CASCADE") }
            }
        } catch {
            violation(operation, "could not list imported tables: \(error)")
        }
    }

    /// Every file the server marked archived and still holds is fetched back and compared.
    func checkWAL(_ operation: ChaosOperation) async {
        let status = source.dataDirectory + "/pg_wal/archive_status"
        let done = ((try? FileManager.default.contentsOfDirectory(atPath: status)) ?? []).filter { $0.hasSuffix(".done") }.map { String($0.dropLast(5)) }
        for name in done.sorted() where !walChecked.contains(name) {
            let path = source.dataDirectory + "/pg_wal/" + name
            guard let original = FileManager.default.contents(atPath: path) else { continue }
            let destination = work + "/tmp/fetched-" + name
            defer { try? FileManager.default.removeItem(atPath: destination) }
            do {
                let fetch = try await tsbackupRun(["wal-fetch", name, destination, "--repo", repoWAL])
                if !fetch.succeeded {
                    violation(operation, "WAL file \(name) is marked archived (.done) but wal-fetch fails (\(fetch.statusDescription)): \(fetch.standardError.singleLine(limit: 300))")
                } else if FileManager.default.contents(atPath: destination) != original {
                    // A recycled segment changes under us: only a file still marked done counts.
                    if FileManager.default.fileExists(atPath: status + "/" + name + ".done"), FileManager.default.contents(atPath: path) == original {
                        violation(operation, "WAL file \(name) fetched back from the archive differs from the server's copy")
                    }
                }
                walChecked.insert(name)
            } catch {
                violation(operation, "wal-fetch \(name) could not run: \(error)")
            }
        }
    }

    /// The scratch directory (TSBACKUP_SCRATCH_DIR) should hold nothing once the next run ended.
    func checkScratch(_ operation: ChaosOperation) {
        let left = (try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? []
        for name in left {
            stats[operation, default: Stats()].leftovers.append("scratch \(name) left after the next run (removed by the harness)")
            try? FileManager.default.removeItem(atPath: scratch + "/" + name)
        }
        // A killed restore's list directory in $TMPDIR (removed by a defer that SIGKILL skips):
        // the next restore removes it once its owner is provably gone, and says so.
        let tmp = work + "/tmp"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? [] where name.hasPrefix("tsbackup-restore-") && !name.hasSuffix(".lock") {
            stats[operation, default: Stats()].leftovers.append("$TMPDIR/\(name) left after the next run (removed by the harness)")
            try? FileManager.default.removeItem(atPath: tmp + "/" + name)
            try? FileManager.default.removeItem(atPath: tmp + "/" + name + ".lock")
        }
    }

    static let cleanupPhrases = ["previous run", "left behind", "left by", "interrupted", "were removed", "was removed", "removed", "dropped", "stale", "repo.gc", "cleaned"]

    func noteCleanup(_ operation: ChaosOperation, _ text: String) {
        let lines = text.split(separator: "\n").map(String.init).filter { line in
            let lower = line.lowercased()
            return Self.cleanupPhrases.contains { lower.contains($0) }
        }
        guard !lines.isEmpty else { return }
        stats[operation, default: Stats()].cleanupMessages += 1
        if stats[operation, default: Stats()].cleanupSamples.count < 3 {
            stats[operation, default: Stats()].cleanupSamples.append(lines[0].singleLine(limit: 300))
        }
    }

    func violation(_ operation: ChaosOperation, _ text: String) {
        stats[operation, default: Stats()].violations.append(text)
        log("  VIOLATION [\(operation.rawValue)] \(text)")
    }

    // MARK: Helpers

    func dropDatabase(_ cluster: SandboxCluster, _ name: String) async {
        _ = try? await cluster.withSuperuser { try await $0.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)") }
    }

    func stopServer(_ pgdata: String) async {
        guard FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") else { return }
        _ = try? await source.runAsOwner("/usr/lib/postgresql/15/bin/pg_ctl", ["-D", pgdata, "-m", "immediate", "-w", "-t", "60", "stop"])
    }

    /// A recovered server promotes to a new timeline and, keeping the source's archive_command,
    /// archives its history file into the same archive; a later `--to-latest` would then follow
    /// that copy's timeline. The harness removes other timelines' files after each recover, as
    /// an operator would keep a recovered copy from archiving into the primary's repository.
    func removeOtherTimelines() {
        let base = repoWAL + "/wal"
        for system in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            let directory = base + "/" + system
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
            for timeline in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where timeline != "00000001" {
                try? FileManager.default.removeItem(atPath: directory + "/" + timeline)
            }
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/00000001")) ?? [] where file.contains(".history") {
                try? FileManager.default.removeItem(atPath: directory + "/00000001/" + file)
            }
        }
    }

    func newestComplete(_ repo: String) async throws -> String? {
        let list = try await tsbackupRun(["list", "--repo", repo, "--json"])
        let rows = (try? JSONSerialization.jsonObject(with: Data(list.standardOutput.utf8))) as? [[String: Any]] ?? []
        return rows.filter { $0["state"] as? String == "complete" }.compactMap { $0["id"] as? String }.last
    }

    static func json(_ text: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    static func jsonID(_ text: String) -> String? {
        json(text)?["id"] as? String
    }

    func makeWorkDirectory() throws -> String {
        var template = Array("/tmp/tsbackup-chaos-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SandboxLikeError("mkdtemp failed") }
        return String(cString: made)
    }

    // MARK: Report

    func report(seconds: Double, stoppedByTime: Bool, load: String) -> Bool {
        var table = TextTable(header: ["OPERATION", "KILLS", "ENDED FIRST", "NEXT RUNS", "NEXT FAILED", "VIOLATIONS", "CLEANUP MESSAGES", "LEFTOVERS"])
        var totals = Stats()
        for operation in ChaosOperation.allCases {
            let s = stats[operation] ?? Stats()
            table.add([operation.rawValue, String(s.kills), String(s.endedFirst), String(s.nextRuns), String(s.nextFailed),
                       String(s.violations.count), String(s.cleanupMessages), String(s.leftovers.count)])
            totals.kills += s.kills
            totals.endedFirst += s.endedFirst
            totals.nextRuns += s.nextRuns
            totals.nextFailed += s.nextFailed
            totals.violations += s.violations
            totals.cleanupMessages += s.cleanupMessages
            totals.leftovers += s.leftovers
        }
        table.add(["total", String(totals.kills), String(totals.endedFirst), String(totals.nextRuns), String(totals.nextFailed),
                   String(totals.violations.count), String(totals.cleanupMessages), String(totals.leftovers.count)])
        log("\n== Kill campaign (SIGKILL at a random moment within the operation's measured duration; then the same operation again and the invariants)")
        log(table.render())
        log("\n\(totals.kills) kills in \(Int(seconds)) s\(stoppedByTime ? " (stopped by the time bound)" : ""); load average \(load); \(totals.violations.count) violations")
        log("\nCleanup messages seen (first of each operation):")
        for operation in ChaosOperation.allCases {
            for sample in stats[operation]?.cleanupSamples.prefix(2) ?? [] { log("  [\(operation.rawValue)] \(sample)") }
        }
        let leftovers = ChaosOperation.allCases.flatMap { op in (stats[op]?.leftovers ?? []).map { "[\(op.rawValue)] \($0)" } }
        if !leftovers.isEmpty {
            log("\nLeftovers (not invariant violations):")
            for line in Dictionary(grouping: leftovers, by: { String($0.prefix(60)) }).values.map({ $0[0] + ($0.count > 1 ? " (x\($0.count))" : "") }).sorted() { log("  \(line)") }
        }
        if !totals.violations.isEmpty {
            log("\nViolations:")
            for operation in ChaosOperation.allCases {
                for text in stats[operation]?.violations ?? [] { log("  [\(operation.rawValue)] \(text)") }
            }
        }
        return totals.violations.isEmpty
    }
}

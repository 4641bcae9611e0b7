import Foundation
import PostgresNIO

/// The `recover` use case: a new cluster as it was at a point in time, from a base backup and
/// the archived WAL, started, promoted and proven.
///
/// Steps: pick the newest complete base backup that ends before the target (refusing a target
/// outside the recoverable window, naming it); lay down the data directory from the backup's tar
/// (never into an existing non-empty directory); check it with `pg_verifybackup`; write
/// `recovery.signal` and the recovery settings (`restore_command` running this binary's
/// `wal-fetch`); start the server, wait for promotion; then verify (``RecoveryVerification``).
public enum Recover {
    public enum Target: Sendable, Equatable {
        case time(Date)
        case lsn(WALPosition)
        case latest

        var description: String {
            switch self {
            case .time(let date): "time \(Recover.timestamp(date))"
            case .lsn(let lsn): "LSN \(lsn)"
            case .latest: "the end of the archived WAL"
            }
        }
    }

    /// What the recovered server does with its own WAL (pgBackRest's `--archive-mode`).
    public enum ArchiveMode: String, Sendable, CaseIterable {
        /// Archive as the base backup's configuration says: a copy that replaces the source
        /// continues the source's archive (on its new timeline).
        case preserve
        /// `archive_mode = off`: an inspection copy never writes its new timeline into the
        /// archive the source still uses.
        case off
    }

    public struct Request: Sendable {
        public var repository: RepositoryAccess
        public var target: Target
        public var pgdata: String
        public var port: Int = 5432
        /// Ranged GETs in flight feeding the unpack of a tar stored on S3 (see ``layDown``).
        public var jobs: Int = 2
        public var stopAfter = false
        public var amcheck = false
        public var archiveMode: ArchiveMode = .preserve
        /// The role the checks connect as (default: the one that took the base backup); its
        /// password comes from PGPASSWORD or ~/.pgpass, as for every libpq client.
        public var user: String?
        /// This program, which the server runs as `restore_command` (`tsbackup wal-fetch`).
        public var executable: String
        /// Hang guard for replay and promotion.
        public var promotionTimeout: Duration = .seconds(1800)
        public var schedulerWait: Duration = .seconds(30)
        /// Looks after the server this run starts (signals, records for the next run); the
        /// command shares it with its signal handler.
        public var serverGuard = RecoverServerGuard()
        /// Called at once with each warning (what the sweep of killed recovers did), which the
        /// report also lists.
        public var onWarning: (@Sendable (String) -> Void)?

        public init(repository: RepositoryAccess, target: Target, pgdata: String, executable: String) {
            self.repository = repository
            self.target = target
            self.pgdata = pgdata
            self.executable = executable
        }
    }

    public struct Report: Codable, Sendable {
        public var ok: Bool
        public var baseBackup: String
        public var target: String
        public var pgdata: String
        public var port: Int
        public var connection: String
        public var steps: [Step]
        public var checks: [Restore.Report.Check]
        /// Where replay stopped, as the server reports it.
        public var lastReplayedCommit: Date?
        public var replayLSN: String?
        public var timeline: Int?
        public var serverRunning: Bool
        /// What this run tidied or found of recovers that were killed (their servers).
        public var warnings: [String] = []

        public struct Step: Codable, Sendable {
            public var name: String
            public var seconds: Double
        }

        enum CodingKeys: String, CodingKey {
            case ok
            case baseBackup = "base_backup"
            case target, pgdata, port, connection, steps, checks
            case lastReplayedCommit = "last_replayed_commit"
            case replayLSN = "replay_lsn"
            case timeline
            case serverRunning = "server_running"
            case warnings
        }

    }

    public static func run(_ request: Request) async throws -> Report {
        // Servers of recovers killed outright (SIGKILL) first: one may hold the port.
        let warnings = await RecoverServerGuard.sweep(parent: request.serverGuard.parent)
        for warning in warnings { request.onWarning?(warning) }
        try checkTargetDirectory(request.pgdata)
        var steps: [Report.Step] = []
        func timed<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
            let start = ContinuousClock.now
            let result = try await body()
            let elapsed = ContinuousClock.now - start
            steps.append(.init(name: name, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
            return result
        }
        return try await request.repository.with(create: false) { repository in
            let (entry, base) = try await timed("choose base backup") {
                try await choose(repository: repository, target: request.target)
            }
            let bin = "/usr/lib/postgresql/\(base.server.majorVersion)/bin"
            guard FileManager.default.isExecutableFile(atPath: bin + "/pg_ctl") else {
                throw TSBackupError(.precondition, "PostgreSQL \(base.server.majorVersion) server programs are not installed in \(bin); the base backup \(base.id) was taken from PostgreSQL \(base.server.version) and can only be recovered by that major version. Install postgresql-\(base.server.majorVersion) and run recover again.")
            }
            try await timed("lay down data directory") {
                try await layDown(entry: entry, base: base, repository: repository, pgdata: request.pgdata, jobs: request.jobs)
            }
            try await timed("pg_verifybackup") {
                try await verifyBackup(bin: bin, pgdata: request.pgdata)
            }
            let logFile = request.pgdata + "/tsbackup-recover.log"
            try await timed("write recovery settings") {
                try writeRecoverySettings(request, repository: repository)
            }
            try await timed("replay and promote") {
                // Recorded before it starts, so neither a signal nor a SIGKILL leaves it unnoticed.
                try request.serverGuard.willStart(pgdata: request.pgdata, bin: bin, port: request.port)
                do {
                    try await ServerControl.start(bin: bin, pgdata: request.pgdata, logFile: logFile,
                                                  environment: serverEnvironment(request).merging(request.serverGuard.serverEnvironment) { $1 })
                } catch {
                    request.serverGuard.didStart()
                    throw error
                }
                request.serverGuard.didStart()
                try await waitForPromotion(request, user: request.user ?? base.source.user, logFile: logFile)
            }
            var report = Report(ok: false, baseBackup: base.id, target: request.target.description, pgdata: request.pgdata,
                                port: request.port, connection: "postgres://\(request.user ?? base.source.user)@127.0.0.1:\(request.port)/postgres",
                                steps: [], checks: [], serverRunning: true, warnings: warnings)
            let verification = RecoveryVerification(base: base, target: request.target, settings: try settings(request, user: request.user ?? base.source.user),
                                                    logFile: logFile, amcheck: request.amcheck, schedulerWait: request.schedulerWait)
            let outcome = try await timed("verify") { try await verification.run() }
            report.checks = outcome.checks
            report.lastReplayedCommit = outcome.lastReplayedCommit
            report.replayLSN = outcome.replayLSN
            report.timeline = outcome.timeline
            report.ok = outcome.checks.allSatisfy(\.ok)
            if request.stopAfter || !report.ok {
                try await timed("stop server") { try await ServerControl.stop(bin: bin, pgdata: request.pgdata) }
                request.serverGuard.stopped()
                report.serverRunning = false
            }
            report.steps = steps
            return report
        }
    }

    // MARK: Choosing

    /// The complete base backups of the repository, oldest first.
    static func baseBackups(_ repository: any Repository) async throws -> [(RepositoryEntry, BaseBackupManifest)] {
        try await repository.entries().compactMap { entry in
            guard entry.state == .complete, let base = entry.base else { return nil }
            return (entry, base)
        }
    }

    static func choose(repository: any Repository, target: Target) async throws -> (RepositoryEntry, BaseBackupManifest) {
        let bases = try await baseBackups(repository)
        guard !bases.isEmpty else {
            throw TSBackupError(.notFound, "\(repository.location) holds no complete base backup, so there is nothing to recover from. Take one with `tsbackup base-backup --db URL --repo \(repository.location)` (archiving must be on).")
        }
        let window = try await RecoverableWindow.read(repository, bases: bases.map(\.1), withTimes: {
            if case .time = target { return true } else { return false }
        }())
        let chosen = try window.choose(target)
        return bases.first { $0.1.id == chosen.id }!
    }

    // MARK: The data directory

    static func checkTargetDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw TSBackupError(.usage, "--pgdata \(path) is a file. Give a new or empty directory for the recovered cluster.")
        }
        let contents = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        guard contents.isEmpty else {
            throw TSBackupError(.precondition, "--pgdata \(path) is not empty (\(contents.count) entr\(contents.count == 1 ? "y" : "ies")); recover never writes into an existing data directory. Give a new or empty directory.")
        }
    }

    static func verifyBackup(bin: String, pgdata: String) async throws {
        // WAL is fetched by the server during recovery, so pg_verifybackup checks files only (-n).
        let result = try await ServerControl.runAsServerUser(bin + "/pg_verifybackup", ["-n", "-q", pgdata])
        guard result.succeeded else {
            throw TSBackupError(.failed, "pg_verifybackup found the laid-down data directory \(pgdata) does not match PostgreSQL's backup_manifest: \(result.standardError.singleLine(limit: 600)). The server was not started; remove \(pgdata) and check the base backup with `tsbackup verify`.")
        }
    }

    /// `recovery.signal` and the settings recovery needs, appended to postgresql.auto.conf (read
    /// last, so they win). Secrets never go here: S3 credentials and the key file's path reach
    /// `wal-fetch` through the server's environment.
    static func writeRecoverySettings(_ request: Request, repository: any Repository) throws {
        func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
        func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        var lines = [
            "",
            "# written by tsbackup recover at \(timestamp(Date()))",
            "restore_command = \(quoted("\(shellQuoted(request.executable)) wal-fetch %f %p --repo \(shellQuoted(repository.location))"))",
            "recovery_target_action = 'promote'",
            "recovery_target_timeline = 'latest'",
            "port = \(request.port)",
        ]
        switch request.target {
        case .time(let date): lines.append("recovery_target_time = \(quoted(timestamp(date)))")
        case .lsn(let lsn): lines.append("recovery_target_lsn = \(quoted(lsn.description))")
        case .latest: break
        }
        if request.archiveMode == .off {
            // Read at server start only (it needs a restart to change): off from the first start,
            // so not even the promotion's .history file reaches the archive.
            lines.append("archive_mode = 'off'")
        }
        let auto = request.pgdata + "/postgresql.auto.conf"
        let existing = (try? String(contentsOfFile: auto, encoding: .utf8)) ?? ""
        try (existing + lines.joined(separator: "\n") + "\n").write(toFile: auto, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: request.pgdata + "/recovery.signal", contents: Data())
        try ServerControl.handFileToServerUser(auto)
        try ServerControl.handFileToServerUser(request.pgdata + "/recovery.signal")
    }

    /// What `wal-fetch` needs, inherited by the server: S3 settings and the key file.
    static func serverEnvironment(_ request: Request) -> [String: String?] {
        var environment: [String: String?] = [:]
        for (key, value) in request.repository.environment where key.hasPrefix("AWS_") || key == "TSBACKUP_S3_CONCURRENCY" {
            environment[key] = value
        }
        if let keyFile = request.repository.encryptionKeyFile {
            environment[EncryptionKeyFile.environmentVariable] = URL(fileURLWithPath: keyFile).standardizedFileURL.path
        }
        return environment
    }

    static func settings(_ request: Request, user: String) throws -> ConnectionSettings {
        var environment = ProcessInfo.processInfo.environment
        for key in ["PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE", "PGOPTIONS"] { environment[key] = nil }
        return try ConnectionSettings.resolve("postgres://\(user)@127.0.0.1:\(request.port)/postgres?sslmode=prefer", environment: environment)
    }

    /// Waits until the server has left recovery (promoted); a server that stopped (target not
    /// reached, WAL missing) is an error quoting its log.
    static func waitForPromotion(_ request: Request, user: String, logFile: String) async throws {
        let deadline = ContinuousClock.now + request.promotionTimeout
        let settings = try settings(request, user: user)
        while true {
            if !FileManager.default.fileExists(atPath: request.pgdata + "/postmaster.pid") {
                throw TSBackupError(.failed, "The recovered server stopped before it was promoted: \(logTail(logFile)). Nothing was promoted; \(request.pgdata) is kept for inspection (remove it before trying again).")
            }
            if let inRecovery = try? await DatabaseSession.with(settings, { try await $0.value("SELECT pg_is_in_recovery()", as: Bool.self) }), !inRecovery {
                return
            }
            if ContinuousClock.now >= deadline {
                throw TSBackupError(.failed, "The recovered server did not finish recovery within \(request.promotionTimeout.components.seconds) s: \(logTail(logFile)). It is still running on port \(request.port) with data in \(request.pgdata).")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    static func logTail(_ path: String) -> String {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n").filter { $0.contains("FATAL") || $0.contains("PANIC") || $0.contains("ERROR") || $0.contains("recovery") }
        return lines.suffix(4).joined(separator: " / ").singleLine(limit: 800)
    }

    /// `2026-11-27 09:30:00.123456+00`: what PostgreSQL reads as a timestamptz.
    /// Microseconds are written out exactly (DateFormatter would stop at milliseconds, moving a
    /// target by up to a millisecond).
    public static func timestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var seconds = date.timeIntervalSince1970.rounded(.down)
        var micros = Int(((date.timeIntervalSince1970 - seconds) * 1_000_000).rounded())
        if micros >= 1_000_000 {
            seconds += 1
            micros -= 1_000_000
        }
        return formatter.string(from: Date(timeIntervalSince1970: seconds)) + String(format: ".%06d+00", micros)
    }
}

/// Starting and stopping a server as its own OS user (`postgres` when this process is root:
/// PostgreSQL refuses to run as root).
enum ServerControl {
    static func runAsServerUser(_ executable: String, _ arguments: [String], environment: [String: String?] = [:]) async throws -> ProcessResult {
        if getuid() == 0 {
            return try await ProcessRunner.run("runuser", ["-u", "postgres", "--", executable] + arguments, environment: environment, workingDirectory: "/")
        }
        return try await ProcessRunner.run(executable, arguments, environment: environment)
    }

    static func start(bin: String, pgdata: String, logFile: String, environment: [String: String?]) async throws {
        if getuid() == 0, !FileManager.default.fileExists(atPath: logFile) {
            _ = FileManager.default.createFile(atPath: logFile, contents: Data(), attributes: [.posixPermissions: 0o600])
            try handFileToServerUser(logFile)
        }
        // -W: recovery may take long; promotion is waited for by polling, with the log at hand.
        let result = try await runAsServerUser(bin + "/pg_ctl", ["-D", pgdata, "-l", logFile, "-W", "start"], environment: environment)
        guard result.succeeded else {
            throw TSBackupError(.failed, "The recovered server did not start (\(result.statusDescription)): \(result.standardError.singleLine(limit: 300)) \(Recover.logTail(logFile)). \(pgdata) is kept for inspection.")
        }
        // Give the postmaster a moment to write its pid file before it is looked for.
        for _ in 0..<50 where !FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") {
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    static func stop(bin: String, pgdata: String) async throws {
        let result = try await runAsServerUser(bin + "/pg_ctl", ["-D", pgdata, "-m", "fast", "-w", "-t", "120", "stop"])
        guard result.succeeded || !FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") else {
            throw TSBackupError(.failed, "The recovered server did not stop (\(result.statusDescription)): \(result.standardError.singleLine(limit: 300)).")
        }
    }

    static func serverUser() -> (uid_t, gid_t)? {
        guard getuid() == 0, let user = getpwnam("postgres") else { return nil }
        return (user.pointee.pw_uid, user.pointee.pw_gid)
    }

    static func handFileToServerUser(_ path: String) throws {
        guard let (uid, gid) = serverUser() else { return }
        guard chown(path, uid, gid) == 0 else {
            throw TSBackupError(.failed, "Could not hand \(path) to the postgres user: \(String(cString: strerror(errno))).")
        }
    }

    static func handToServerUser(_ directory: String) async throws {
        guard getuid() == 0 else { return }
        guard getpwnam("postgres") != nil else {
            throw TSBackupError(.precondition, "recover runs as root but there is no `postgres` system user to own and run the recovered cluster. Create it (installing PostgreSQL does) or run recover as the user that should own the cluster.")
        }
        let result = try await ProcessRunner.run("chown", ["-R", "postgres:postgres", directory])
        guard result.succeeded else {
            throw TSBackupError(.failed, "Could not hand \(directory) to the postgres user: \(result.standardError.singleLine(limit: 300)).")
        }
    }
}

extension Recover.Report {
    /// Reports written before `warnings` existed still decode (with none).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        ok = try container.decode(Bool.self, forKey: .ok)
        baseBackup = try container.decode(String.self, forKey: .baseBackup)
        target = try container.decode(String.self, forKey: .target)
        pgdata = try container.decode(String.self, forKey: .pgdata)
        port = try container.decode(Int.self, forKey: .port)
        connection = try container.decode(String.self, forKey: .connection)
        steps = try container.decode([Step].self, forKey: .steps)
        checks = try container.decode([Restore.Report.Check].self, forKey: .checks)
        lastReplayedCommit = try container.decodeIfPresent(Date.self, forKey: .lastReplayedCommit)
        replayLSN = try container.decodeIfPresent(String.self, forKey: .replayLSN)
        timeline = try container.decodeIfPresent(Int.self, forKey: .timeline)
        serverRunning = try container.decode(Bool.self, forKey: .serverRunning)
        warnings = try container.decodeIfPresent([String].self, forKey: .warnings) ?? []
    }
}

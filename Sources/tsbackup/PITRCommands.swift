import ArgumentParser
import Foundation
import TSBackup

struct BaseBackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "base-backup",
        abstract: "Take a physical base backup of the whole cluster for point-in-time recovery.",
        discussion: """
            Checks first (wal_level, archive_mode, that archive_command is tsbackup wal-push and a \
            forced WAL switch reaches this repository, a replication-capable role, free space), \
            records every database's TimescaleDB version, hypertables and chunk counts, then \
            streams pg_basebackup's tar (zstd-compressed, with PostgreSQL's backup_manifest) into \
            the repository, hashing it as it goes, and writes the manifest last.
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var repository: RepositoryOptions
    @Option(help: "Compression threads for the stream (default 2).") var jobs: Int = 2
    @Option(help: "A label stored in the manifest.") var label: String?
    @Flag(help: "Print the manifest as JSON.") var json = false

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
    }

    func run() async throws {
        try await reportingErrors {
            var request = BaseBackup.Request(settings: try database.settings(), repository: try repository.resolved())
            request.jobs = jobs
            request.label = label
            request.archiveWait = try WaitSetting.seconds(WaitSetting.archive)
            let manifest = try await BaseBackup.run(request)
            if json {
                print(try JSONOutput.encode(manifest))
            } else {
                print("Base backup \(manifest.id) complete: \(ByteCount.format(manifest.totalFileBytes)) (cluster \(ByteCount.format(manifest.clusterBytes))), timeline \(manifest.timeline), WAL \(manifest.startLSN) to \(manifest.stopLSN), \(String(format: "%.1f", manifest.durationSeconds)) s.")
                for warning in manifest.warnings { printWarning(warning) }
            }
        }
    }
}

struct RecoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Bring back the whole cluster as it was at a point in time, as a new data directory, and prove it.",
        discussion: """
            Picks the newest base backup that ends before the target (refusing a target outside \
            the recoverable window, which it names), lays down the data directory (never into a \
            non-empty one; owned by postgres when run as root), checks it with pg_verifybackup, \
            writes recovery.signal and restore_command = 'tsbackup wal-fetch ...', starts the \
            server on --port, waits for promotion at the target, then verifies: replay stopped \
            at the target, and for every database with TimescaleDB: the library loaded at the \
            recorded version, catalog and extension versions equal, chunks and tables agree, \
            restore mode off, the scheduler running (--amcheck: B-tree indexes of hypertables \
            and chunks). --archive-mode off keeps an inspection copy from archiving its new \
            timeline into the source's archive. S3 settings and the key file reach wal-fetch through the server's \
            environment, never through postgresql.auto.conf.
            """)

    @OptionGroup var repository: RepositoryOptions
    @Option(name: .customLong("to-time"), help: "Recover to this time (e.g. '2026-11-27 09:30:00+00' or ISO 8601).") var toTime: String?
    @Option(name: .customLong("to-lsn"), help: "Recover to this WAL position (e.g. 0/3000028).") var toLSN: String?
    @Flag(name: .customLong("to-latest"), help: "Recover to the end of the archived WAL.") var toLatest = false
    @Option(help: "The new data directory (must not exist or be empty).") var pgdata: String
    @Option(help: "The port the recovered server listens on.") var port: Int = 5432
    @Option(help: "Ranged GETs in flight when the base backup's tar streams from S3 into tar (default 2); no effect with a local repository.") var jobs: Int = 2
    @Option(help: "The role the checks connect as (default: the one that took the base backup; password from PGPASSWORD or ~/.pgpass).") var user: String?
    @Flag(name: .customLong("stop-after"), help: "Stop the server once verified.") var stopAfter = false
    @Flag(help: "Also check the B-tree indexes of hypertables and chunks with amcheck.") var amcheck = false
    @Option(name: .customLong("archive-mode"), help: "preserve (default): the recovered server archives as the backed-up configuration says, into the same archive on its new timeline; off: archive_mode = off, for a copy that must not write into the source's archive.") var archiveMode: Recover.ArchiveMode = .preserve
    @Flag(help: "Print the report as JSON.") var json = false

    func validate() throws {
        let given = [toTime != nil, toLSN != nil, toLatest].filter { $0 }.count
        guard given == 1 else { throw ValidationError("Give exactly one of --to-time, --to-lsn or --to-latest.") }
        if let toTime, Self.parseTime(toTime) == nil {
            throw ValidationError("--to-time \(toTime) is not a time; give e.g. '2026-11-27 09:30:00+00' or 2026-11-27T09:30:00Z (without a zone it is UTC).")
        }
        if let toLSN, WALPosition(toLSN) == nil { throw ValidationError("--to-lsn \(toLSN) is not a WAL position; give e.g. 0/3000028.") }
        if !(1...65535).contains(port) { throw ValidationError("--port must be 1-65535.") }
        if jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
    }

    static func parseTime(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for format in ["yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXXXX", "yyyy-MM-dd'T'HH:mm:ss.SSSXXXXX", "yyyy-MM-dd'T'HH:mm:ssXXXXX",
                       "yyyy-MM-dd HH:mm:ss.SSSSSSxx", "yyyy-MM-dd HH:mm:ss.SSSSSSx", "yyyy-MM-dd HH:mm:ss.SSSSSSXXXXX",
                       "yyyy-MM-dd HH:mm:ssxx", "yyyy-MM-dd HH:mm:ssx", "yyyy-MM-dd HH:mm:ssXXXXX",
                       "yyyy-MM-dd HH:mm:ss.SSSSSS", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd'T'HH:mm:ss"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: trimmed) { return date }
        }
        return nil
    }

    func run() async throws {
        try await reportingErrors {
            let target: Recover.Target
            if let toTime, let date = Self.parseTime(toTime) {
                target = .time(date)
            } else if let toLSN, let lsn = WALPosition(toLSN) {
                target = .lsn(lsn)
            } else {
                target = .latest
            }
            let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            // restore_command runs once per segment: the slim `tsbackup-wal` installed beside
            // this binary when there is one (it hands S3 and encrypted archives back to this one).
            let slim = (me as NSString).deletingLastPathComponent + "/tsbackup-wal"
            let executable = FileManager.default.isExecutableFile(atPath: slim) ? slim : me
            var request = Recover.Request(repository: try repository.resolved(), target: target,
                                          pgdata: URL(fileURLWithPath: pgdata).standardizedFileURL.path, executable: executable)
            request.port = port
            request.jobs = jobs
            request.stopAfter = stopAfter
            request.amcheck = amcheck
            request.archiveMode = archiveMode
            request.user = user
            request.schedulerWait = try WaitSetting.seconds(WaitSetting.scheduler)
            let serverGuard = request.serverGuard
            request.onWarning = { printWarning($0) }
            let signals = RecoverSignals(serverGuard)
            defer { withExtendedLifetime(signals) {} }
            let report: Recover.Report
            do {
                report = try await Recover.run(request)
            } catch {
                // Interrupted: the signal handler stops the server, says so and exits.
                if serverGuard.signal != nil { await RecoverSignals.waitForHandler() }
                if let failure = error as? TSBackupError { printError(failure) }
                // The error named the server if one runs (kept for inspection): it is the user's now.
                serverGuard.handOver()
                throw (error as? TSBackupError).map { ExitCode($0.exitCode) } ?? error
            }
            if serverGuard.signal != nil { await RecoverSignals.waitForHandler() }
            if json {
                print(try JSONOutput.encode(report))
            } else {
                print(Self.render(report))
            }
            fflush(nil)
            // The report is out: the server it names is the user's (until then a kill leaves a
            // record, and the next recover stops the server).
            serverGuard.handOver()
            if !report.ok {
                let failed = report.checks.filter { !$0.ok }.map { "\($0.subject): \($0.check) expected \($0.expected), found \($0.actual)" }
                throw TSBackupError(.failed, "The recovered cluster in \(report.pgdata) did not verify (\(failed.joined(separator: "; "))). The server was stopped; the directory is kept for inspection. Remove it before recovering again.")
            }
        }
    }

    static func render(_ report: Recover.Report) -> String {
        var lines = ["Recovered from base backup \(report.baseBackup) to \(report.target) into \(report.pgdata)."]
        if let commit = report.lastReplayedCommit { lines.append("Last replayed commit: \(ISO8601DateFormatter().string(from: commit)); replay LSN \(report.replayLSN ?? "?"), timeline \(report.timeline.map(String.init) ?? "?").") }
        var steps = TextTable(header: ["STEP", "SECONDS"], indent: "  ")
        for step in report.steps { steps.add([step.name, String(format: "%.2f", step.seconds)]) }
        lines.append(steps.render())
        var checks = TextTable(header: ["SUBJECT", "CHECK", "EXPECTED", "ACTUAL", ""], indent: "  ")
        for check in report.checks { checks.add([check.subject, check.check, check.expected, check.actual, check.ok ? "ok" : "FAILED"]) }
        lines.append(checks.render())
        if report.ok {
            lines.append(report.serverRunning ? "Verified. The server is running: \(report.connection) (port \(report.port))." : "Verified. The server was stopped (--stop-after); start it with pg_ctl -D \(report.pgdata) start.")
        }
        return lines.joined(separator: "\n")
    }
}

struct ExpireCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expire",
        abstract: "Delete old base backups and the WAL no remaining base backup needs.",
        discussion: "Never deletes the newest base backup or its WAL. Runs under the repository's lock.")

    @OptionGroup var repository: RepositoryOptions
    @Option(name: .customLong("keep-base"), help: "Keep this many of the newest base backups (at least 1).") var keepBase: Int
    @Option(name: .customLong("older-than"), help: "Delete only base backups older than this (e.g. 7d, 36h, 90m, 2w).") var olderThan: String?
    @Flag(name: .customLong("dry-run"), help: "Say what would be deleted; delete nothing.") var dryRun = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if keepBase < 1 { throw ValidationError("--keep-base must be at least 1: the newest base backup and its WAL are never deleted.") }
        if let olderThan, Self.parseDuration(olderThan) == nil {
            throw ValidationError("--older-than \(olderThan) is not a duration; give a number with s, m, h, d or w (e.g. 7d).")
        }
    }

    static func parseDuration(_ text: String) -> TimeInterval? {
        guard let unit = text.last, let number = Double(text.dropLast()), number >= 0 else { return nil }
        switch unit {
        case "s": return number
        case "m": return number * 60
        case "h": return number * 3600
        case "d": return number * 86400
        case "w": return number * 604800
        default: return nil
        }
    }

    func run() async throws {
        try await reportingErrors {
            var request = Expire.Request(repository: try repository.resolved(), keepBase: keepBase)
            request.olderThan = olderThan.flatMap(Self.parseDuration)
            request.dryRun = dryRun
            let report = try await Expire.run(request)
            if json {
                print(try JSONOutput.encode(report))
                return
            }
            let verb = dryRun ? "Would delete" : "Deleted"
            print("\(verb) \(report.deletedBaseBackups.count) base backup\(report.deletedBaseBackups.count == 1 ? "" : "s")\(report.deletedBaseBackups.isEmpty ? "" : " (\(report.deletedBaseBackups.joined(separator: ", ")))") and \(report.walSegmentsDeleted) WAL file\(report.walSegmentsDeleted == 1 ? "" : "s")\(report.walKeptFrom.map { " before \($0)" } ?? ""); kept \(report.keptBaseBackups.joined(separator: ", ")).")
        }
    }
}

extension Recover.ArchiveMode: ExpressibleByArgument {}

import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// A cluster archiving its WAL through the built `tsbackup wal-push` into a local repository,
/// and recovered clusters that are always stopped afterwards.
struct PITRCluster {
    let cluster: SandboxCluster
    let scratch: String
    /// A local directory, or an s3:// URL.
    var repo: String
    /// What the CLI needs beside the password (S3 settings, the key file).
    var extraEnvironment: [String: String] = [:]
    var environment: [String: String] { extraEnvironment.merging(["PGPASSWORD": cluster.superuserPassword]) { $1 } }

    static func start(settings: [String: String] = [:], s3: S3Sandbox? = nil, keyFile: String? = nil) async throws -> PITRCluster {
        var template = Array("/tmp/tsbackup-pitr-XXXXXX".utf8CString)
        let scratch = String(cString: try #require(mkdtemp(&template)))
        // The server's user writes the archive and reads the recovered directories' parent.
        chmod(scratch, 0o755)
        try FileManager.default.createDirectory(atPath: scratch + "/repo", withIntermediateDirectories: true)
        try SandboxCluster.handToPostgres(scratch + "/repo")
        let repo = s3?.repository ?? scratch + "/repo"
        let cluster = try await SandboxCluster.start(SandboxCluster.Options(
            settings: settings, archiving: .init(tsbackup: CLI.executable, repository: repo, keyFile: keyFile,
                                                 environment: s3?.moto.environment(endpoint: nil) ?? [:])))
        var extra = s3?.environment() ?? [:]
        if let keyFile { extra["TSBACKUP_ENCRYPTION_KEY_FILE"] = keyFile }
        return PITRCluster(cluster: cluster, scratch: scratch, repo: repo, extraEnvironment: extra)
    }

    func stop() async {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? [] where name.hasPrefix("recovered") {
            await Self.stopServer(scratch + "/" + name)
        }
        await cluster.stop()
        try? FileManager.default.removeItem(atPath: scratch)
    }

    static func stopServer(_ pgdata: String) async {
        guard FileManager.default.fileExists(atPath: pgdata + "/postmaster.pid") else { return }
        let pgctl = "/usr/lib/postgresql/15/bin/pg_ctl"
        let arguments = ["-D", pgdata, "-m", "immediate", "-w", "-t", "60", "stop"]
        _ = getuid() == 0 ? try? await ProcessRunner.run("runuser", ["-u", "postgres", "--", pgctl] + arguments, workingDirectory: "/")
                          : try? await ProcessRunner.run(pgctl, arguments)
    }

    func tsbackup(_ arguments: [String], environment extra: [String: String] = [:]) async throws -> ProcessResult {
        try await CLI.run(arguments, environment: environment.merging(extra) { $1 })
    }

    func baseBackup() async throws -> BaseBackupManifest {
        let result = try await tsbackup(["base-backup", "--db", cluster.url(database: "postgres"), "--repo", repo, "--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        return try JSONOutput.decode(BaseBackupManifest.self, from: Data(result.standardOutput.utf8))
    }

    /// Switches to a new WAL segment and waits (hang guard only) until the server archived it.
    func switchAndWaitForArchive(_ database: String = "postgres") async throws {
        try await cluster.withSuperuser(database: database) { session in
            let segment = try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
            let deadline = ContinuousClock.now + .seconds(600)
            while ContinuousClock.now < deadline {
                let last = try await session.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self)
                if last >= segment { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            Issue.record("segment \(segment) was not archived within 600 s (a hang guard)")
        }
    }

    /// Recovers into `scratch/recovered-<name>` on a free port; returns the result and the port.
    func recover(_ name: String, _ target: [String], extra: [String] = [], environment extra2: [String: String] = [:]) async throws -> (ProcessResult, Int, String) {
        let port = try SandboxCluster.freeLoopbackPort()
        let pgdata = scratch + "/recovered-" + name
        let result = try await tsbackup(["recover", "--repo", repo, "--pgdata", pgdata, "--port", String(port), "--json"] + target + extra, environment: extra2)
        return (result, port, pgdata)
    }

    /// A session on a recovered server (same superuser and password as the source).
    func onRecovered<T>(port: Int, database: String, _ body: (DatabaseSession) async throws -> T) async throws -> T {
        var settings = cluster.settings(database: database)
        settings.port = port
        return try await DatabaseSession.with(settings, body)
    }
}

@Suite("point-in-time recovery", .serialized)
struct PITRTests {
    /// Writes `count` rows into `marks`, each in its own transaction about a second apart; returns
    /// per row the server's clock just before its insert and just after its commit.
    func writeMarks(_ archiving: PITRCluster, _ database: String, from first: Int, count: Int) async throws -> [(before: Date, after: Date)] {
        var stamps: [(Date, Date)] = []
        try await archiving.cluster.withSuperuser(database: database) { session in
            for n in first..<(first + count) {
                let before = try await session.value("SELECT clock_timestamp()", as: Date.self)
                try await session.execute("INSERT INTO marks (n, t) VALUES (\(n), clock_timestamp())")
                let after = try await session.value("SELECT clock_timestamp()", as: Date.self)
                stamps.append((before, after))
                try await Task.sleep(for: .milliseconds(1100))
            }
        }
        return stamps
    }

    func makeMarks(_ archiving: PITRCluster) async throws -> String {
        let database = "pitr"
        try await archiving.cluster.createDatabase(database)
        try await archiving.cluster.withSuperuser(database: database) { session in
            try await session.execute("CREATE TABLE marks (t timestamptz NOT NULL, n int NOT NULL)")
            try await session.execute("SELECT create_hypertable('marks', 't', chunk_time_interval => interval '1 day')")
        }
        return database
    }

    func marks(_ archiving: PITRCluster, port: Int) async throws -> [Int] {
        try await archiving.onRecovered(port: port, database: "pitr") { session in
            try await session.values("SELECT n FROM marks ORDER BY n", as: Int32.self).map(Int.init)
        }
    }

    @Test("recover to a time between two commits: exactly the rows committed before it, TimescaleDB verified; then to the latest")
    func recoverToTime() async throws {
        let archiving = try await PITRCluster.start()
        do {
            let database = try await makeMarks(archiving)
            let base = try await archiving.baseBackup()
            #expect(base.kind == "base" && base.timeline == 1)
            #expect(base.databases.first { $0.name == database }?.hypertables.map(\.name) == ["marks"])
            let stamps = try await writeMarks(archiving, database, from: 1, count: 4)
            try await archiving.switchAndWaitForArchive()
            // Between the commit of row 2 and the insert of row 3.
            let target = stamps[1].after.addingTimeInterval(stamps[2].before.timeIntervalSince(stamps[1].after) / 2)
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            // An inspection copy: --archive-mode off, so its new timeline stays out of the archive.
            let (result, port, pgdata) = try await archiving.recover("time", ["--to-time", iso.string(from: target)], extra: ["--amcheck", "--archive-mode", "off"])
            #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            let report = try JSONOutput.decode(Recover.Report.self, from: Data(result.standardOutput.utf8))
            #expect(report.ok)
            #expect(report.baseBackup == base.id)
            #expect(report.checks.contains { $0.check == "TimescaleDB scheduler" && $0.subject == database && $0.ok })
            #expect(report.checks.contains { $0.check.hasPrefix("transaction ") && $0.ok })
            #expect(report.checks.contains { $0.check == "B-tree indexes (amcheck)" && $0.ok })
            #expect(try await marks(archiving, port: port) == [1, 2])
            let mode = try FileManager.default.attributesOfItem(atPath: pgdata)[.posixPermissions] as? Int
            #expect(mode == 0o700)
            // The auto.conf carries no secret, only the command.
            let auto = try String(contentsOfFile: pgdata + "/postgresql.auto.conf", encoding: .utf8)
            #expect(auto.contains("wal-fetch %f %p") && !auto.contains(archiving.cluster.superuserPassword))

            // archive_mode is off, and nothing of its timeline reaches the repository: not the
            // promotion's .history file, not a completed segment. A clean shutdown is when an
            // archiving server pushes everything still pending, so the check after it cannot race.
            #expect(report.timeline == 2)
            let (archiveMode, archived) = try await archiving.onRecovered(port: port, database: database) { session in
                try await session.execute("INSERT INTO marks (n, t) VALUES (99, clock_timestamp())")
                _ = try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
                return (try await session.value("SHOW archive_mode", as: String.self),
                        try await session.value("SELECT archived_count FROM pg_stat_archiver", as: Int64.self))
            }
            #expect(archiveMode == "off" && archived == 0)
            let pgctl = ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "-t", "600", "stop"]
            let stopped = getuid() == 0 ? try await ProcessRunner.run("runuser", ["-u", "postgres", "--"] + pgctl, workingDirectory: "/")
                                        : try await ProcessRunner.run(pgctl[0], Array(pgctl.dropFirst()))
            #expect(stopped.exitCode == 0, "\(stopped.standardError)")
            let clusters = try FileManager.default.contentsOfDirectory(atPath: archiving.scratch + "/repo/wal").filter { $0 != "archive.json" }
            #expect(clusters.count == 1)
            for cluster in clusters {
                #expect(try FileManager.default.contentsOfDirectory(atPath: archiving.scratch + "/repo/wal/" + cluster) == ["00000001"])
            }
            await PITRCluster.stopServer(pgdata)

            // A non-empty directory is never touched.
            let again = try await archiving.tsbackup(["recover", "--repo", archiving.repo, "--pgdata", pgdata, "--to-latest"])
            #expect(again.exitCode == 5)

            let (latest, latestPort, _) = try await archiving.recover("latest", ["--to-latest"], extra: ["--stop-after"])
            #expect(latest.exitCode == 0, "\(latest.standardOutput) \(latest.standardError)")
            let latestReport = try JSONOutput.decode(Recover.Report.self, from: Data(latest.standardOutput.utf8))
            #expect(latestReport.ok && !latestReport.serverRunning)
            _ = latestPort
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("recover twice across a timeline switch: recover, write, archive, recover the new timeline; list and expire see both")
    func timelineSwitch() async throws {
        let archiving = try await PITRCluster.start()
        do {
            let database = try await makeMarks(archiving)
            _ = try await archiving.baseBackup()
            _ = try await writeMarks(archiving, database, from: 1, count: 2)
            try await archiving.switchAndWaitForArchive()
            let (first, firstPort, firstData) = try await archiving.recover("first", ["--to-latest"])
            #expect(first.exitCode == 0, "\(first.standardOutput) \(first.standardError)")
            #expect(try await marks(archiving, port: firstPort) == [1, 2])
            // The recovered cluster archives on its new timeline into the same repository.
            let segment = try await archiving.onRecovered(port: firstPort, database: database) { session in
                try await session.execute("INSERT INTO marks (n, t) VALUES (3, clock_timestamp())")
                return try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
            }
            let deadline = ContinuousClock.now + .seconds(600)  // a hang guard
            while ContinuousClock.now < deadline {
                let last = try await archiving.onRecovered(port: firstPort, database: "postgres") {
                    try await $0.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", as: String.self)
                }
                if last >= segment { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            await PITRCluster.stopServer(firstData)
            let (second, secondPort, _) = try await archiving.recover("second", ["--to-latest"])
            #expect(second.exitCode == 0, "\(second.standardOutput) \(second.standardError)")
            let report = try JSONOutput.decode(Recover.Report.self, from: Data(second.standardOutput.utf8))
            #expect((report.timeline ?? 0) >= 3)
            #expect(try await marks(archiving, port: secondPort) == [1, 2, 3])

            let list = try await archiving.tsbackup(["list", "--repo", archiving.repo])
            #expect(list.exitCode == 0)
            #expect(list.standardOutput.contains("timeline 2") && list.standardOutput.contains("recoverable"))
            // One base backup: expire keeps it and its WAL.
            let expire = try await archiving.tsbackup(["expire", "--repo", archiving.repo, "--keep-base", "1", "--json"])
            #expect(expire.exitCode == 0, "\(expire.standardError)")
            let expired = try JSONOutput.decode(Expire.Report.self, from: Data(expire.standardOutput.utf8))
            #expect(expired.deletedBaseBackups.isEmpty && expired.keptBaseBackups.count == 1)
            // Every object across the timelines (segments, the .partial at each promotion,
            // .history and .backup files) reads back intact and names this cluster.
            let walVerify = try await archiving.tsbackup(["verify", "--wal", "--repo", archiving.repo, "--json"])
            #expect(walVerify.exitCode == 0, "\(walVerify.standardOutput) \(walVerify.standardError)")
            let walReport = try JSONOutput.decode(WALVerify.Report.self, from: Data(walVerify.standardOutput.utf8))
            #expect(walReport.ok && walReport.problems.isEmpty, "\(walReport.problems.map(\.description))")
            #expect(walReport.objectsChecked > walReport.segmentsChecked, "history and backup files were checked too")
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("a deleted segment turns a target behind it into a refusal naming the window; so does a target before the base backup")
    func gapRefusal() async throws {
        let archiving = try await PITRCluster.start()
        do {
            let database = try await makeMarks(archiving)
            let base = try await archiving.baseBackup()
            _ = try await writeMarks(archiving, database, from: 1, count: 1)
            try await archiving.switchAndWaitForArchive()
            _ = try await writeMarks(archiving, database, from: 2, count: 1)
            try await archiving.switchAndWaitForArchive()
            let stamps = try await writeMarks(archiving, database, from: 3, count: 2)
            try await archiving.switchAndWaitForArchive()
            // Remove the first segment after the base backup's stop segment.
            let doomed = try #require(WALFileName(base.stopSegment)).advanced(by: 1, segmentSize: WALFileName.defaultSegmentSize).name
            let path = "\(archiving.repo)/wal/\(base.systemIdentifier)/00000001/\(doomed).zst"
            #expect(FileManager.default.fileExists(atPath: path))
            try FileManager.default.removeItem(atPath: path)
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let (late, _, latePath) = try await archiving.recover("late", ["--to-time", iso.string(from: stamps[0].after)])
            #expect(late.exitCode == 5, "\(late.standardOutput) \(late.standardError)")
            #expect(late.standardError.contains("recoverable window is") && late.standardError.contains(doomed))
            #expect(!FileManager.default.fileExists(atPath: latePath))
            let (early, _, _) = try await archiving.recover("early", ["--to-time", iso.string(from: base.startTime.addingTimeInterval(-3600))])
            #expect(early.exitCode == 5)
            #expect(early.standardError.contains("before the end of the oldest usable base backup"))
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("the TimescaleDB checks catch a recovered cluster whose scheduler does not start")
    func schedulerNotRunning() async throws {
        let archiving = try await PITRCluster.start(settings: ["timescaledb.max_background_workers": "0"])
        do {
            let database = try await makeMarks(archiving)
            _ = try await archiving.baseBackup()
            _ = try await writeMarks(archiving, database, from: 1, count: 1)
            try await archiving.switchAndWaitForArchive()
            let (result, _, pgdata) = try await archiving.recover("nosched", ["--to-latest"], environment: ["TSBACKUP_SCHEDULER_WAIT_SECONDS": "5"])
            #expect(result.exitCode == 1, "\(result.standardOutput) \(result.standardError)")
            let report = try JSONOutput.decode(Recover.Report.self, from: Data(result.standardOutput.utf8))
            #expect(!report.ok && !report.serverRunning)
            #expect(report.checks.contains { $0.subject == database && $0.check == "TimescaleDB scheduler" && !$0.ok })
            #expect(report.checks.contains { $0.subject == database && $0.check == "TimescaleDB library" && $0.ok })
            #expect(result.standardError.contains("TimescaleDB scheduler"))
            #expect(FileManager.default.fileExists(atPath: pgdata + "/PG_VERSION"))
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("S3 round trip through moto, encrypted: base backup, archive, recover to a time, list")
    func s3RoundTrip() async throws {
        let s3 = try await S3Sandbox.make("pitr")
        defer { s3.remove() }
        let key = try postgresKeyFile(s3.scratch)
        let archiving = try await PITRCluster.start(s3: s3, keyFile: key)
        do {
            let database = try await makeMarks(archiving)
            let base = try await archiving.baseBackup()
            let stamps = try await writeMarks(archiving, database, from: 1, count: 3)
            try await archiving.switchAndWaitForArchive()
            let keys = try await s3.keys()
            #expect(keys.contains("backups/\(base.id)/base.tar.zst") && keys.contains("backups/\(base.id)/manifest.json"))
            let target = stamps[0].after.addingTimeInterval(stamps[1].before.timeIntervalSince(stamps[0].after) / 2)
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let (result, port, pgdata) = try await archiving.recover("s3", ["--to-time", iso.string(from: target)])
            #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            #expect(try await marks(archiving, port: port) == [1])
            let auto = try String(contentsOfFile: pgdata + "/postgresql.auto.conf", encoding: .utf8)
            #expect(!auto.contains("AWS_SECRET") && !auto.contains(s3.moto.environment(endpoint: nil)["AWS_SECRET_ACCESS_KEY"] ?? "no secret"))
            // The base backup and the (encrypted, S3) WAL archive in one run.
            let verify = try await archiving.tsbackup(["verify", base.id, "--wal", "--repo", archiving.repo])
            #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
            #expect(verify.standardOutput.contains("Backup \(base.id) verified") && verify.standardOutput.contains("WAL archive of cluster \(base.systemIdentifier) verified"), "\(verify.standardOutput)")
            let list = try await archiving.tsbackup(["list", "--repo", archiving.repo])
            #expect(list.standardOutput.contains("base backup") && list.standardOutput.contains("recoverable"))
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("recover --to-lsn: exactly the rows committed before the position; a target time after the last archived commit is refused (exit 5)")
    func recoverToLSNAndLateTime() async throws {
        let archiving = try await PITRCluster.start()
        do {
            let database = try await makeMarks(archiving)
            let base = try await archiving.baseBackup()
            // The position just past the commit of mark 1, then mark 2 in a later transaction.
            let lsn = try await archiving.cluster.withSuperuser(database: database) { session in
                try await session.execute("INSERT INTO marks (n, t) VALUES (1, clock_timestamp())")
                let lsn = try await session.value("SELECT pg_current_wal_lsn()::text", as: String.self)
                try await session.execute("INSERT INTO marks (n, t) VALUES (2, clock_timestamp())")
                return lsn
            }
            try await archiving.switchAndWaitForArchive()
            // Every archived commit happened before this moment (the segment holding the last of
            // them was archived above), so a target now is after the last archived commit. Asked
            // before any recovery, so no second timeline is in the archive yet.
            let late = try await archiving.cluster.withSuperuser { try await $0.value("SELECT clock_timestamp()", as: Date.self) }
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let (refused, _, refusedPath) = try await archiving.recover("late", ["--to-time", iso.string(from: late.addingTimeInterval(1))])
            #expect(refused.exitCode == 5, "\(refused.standardOutput) \(refused.standardError)")
            #expect(refused.standardError.contains("recoverable window is"))
            #expect(!FileManager.default.fileExists(atPath: refusedPath))

            let (result, port, _) = try await archiving.recover("lsn", ["--to-lsn", lsn])
            #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            let report = try JSONOutput.decode(Recover.Report.self, from: Data(result.standardOutput.utf8))
            #expect(report.ok && report.baseBackup == base.id)
            #expect(report.checks.contains { $0.check == "replayed up to target" && $0.ok })
            let replayed = try #require(report.replayLSN.flatMap { WALPosition($0) })
            #expect(replayed >= (try #require(WALPosition(lsn))))
            #expect(try await marks(archiving, port: port) == [1])
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("base-backup preflight: a role without REPLICATION is refused with exit 3 before anything is written")
    func baseBackupWithoutReplication() async throws {
        let archiving = try await PITRCluster.start()
        do {
            let role = "noreplication"
            let password = "pw-\(UUID().uuidString.prefix(12))"
            try await archiving.cluster.createRole(role, password: password)
            let result = try await archiving.tsbackup(["base-backup", "--db", archiving.cluster.url(database: "postgres", user: role), "--repo", archiving.repo],
                                                      environment: ["PGPASSWORD": password])
            #expect(result.exitCode == 3, "\(result.standardOutput) \(result.standardError)")
            #expect(result.standardError.contains("REPLICATION"))
            #expect(!result.standardError.contains(password))
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: archiving.repo + "/backups")) ?? []
            #expect(entries.isEmpty, "base-backup left \(entries) in the repository")
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("base-backup waits TSBACKUP_ARCHIVE_WAIT_SECONDS for the archiver, then refuses (exit 5) naming that wait; nothing is written")
    func archiveWaitIsConfigurable() async throws {
        let archiving = try await PITRCluster.start()
        do {
            // The server archives into its own repository, never into this one: the preflight's
            // switched segment cannot arrive here, whatever the wait.
            let elsewhere = archiving.scratch + "/elsewhere"
            let result = try await archiving.tsbackup(["base-backup", "--db", archiving.cluster.url(database: "postgres"), "--repo", elsewhere],
                                                      environment: ["TSBACKUP_ARCHIVE_WAIT_SECONDS": "1"])
            #expect(result.exitCode == 5, "\(result.standardOutput) \(result.standardError)")
            #expect(result.standardError.contains("did not reach the archive"), "\(result.standardError)")
            #expect(result.standardError.contains("within 1 s"), "the configured wait, not the default 60 s: \(result.standardError)")
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: elsewhere + "/backups")) ?? []
            #expect(entries.isEmpty, "base-backup left \(entries) in the repository")
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("refusals: archiving off, a target before the base backup, an empty repository")
    func refusals() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let scratch = NSTemporaryDirectory() + "tsbackup-pitr-refuse-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let off = try await CLI.run(["base-backup", "--db", cluster.url(database: "postgres"), "--repo", scratch + "/repo"],
                                    environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(off.exitCode == 5)
        #expect(off.standardError.contains("archive_mode"))
        #expect(!FileManager.default.fileExists(atPath: scratch + "/repo/backups"))
        let bad = try await CLI.run(["recover", "--repo", scratch + "/repo", "--pgdata", scratch + "/x", "--to-time", "yesterday"])
        #expect(bad.exitCode == 64)
    }
}

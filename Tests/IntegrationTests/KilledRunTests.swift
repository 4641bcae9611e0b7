import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Issue 14, item 1 (found by `scripts/chaos.sh`): a restore or an import SIGKILLed outright runs
/// no cleanup code. The half-restored database (in TimescaleDB's restore mode) or half-imported
/// table must be found and dropped by the next restore or import on that target, which says so.
/// The kill is made deterministic: the run is held at a known point (a pause seam, a lock), and
/// its pid is read from the marker comment it put on the object it created.
@Suite("killed runs: the next restore or import drops what a SIGKILLed one left, and says so")
struct KilledRunTests {
    let faults = ServerFaultTests()

    /// The marker comment on a database or table, parsed.
    func owner(_ cluster: SandboxCluster, database: String = "postgres", _ query: String) async throws -> InterruptedRuns.Owner? {
        let comment = try await cluster.withSuperuser(database: database) {
            try await $0.rows("\(unescaped: query)", as: (String?).self).first ?? nil
        }
        return comment.flatMap(InterruptedRuns.Owner.parse)
    }

    /// The processes whose parent is `pid` (from /proc).
    static func children(of pid: Int32) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { candidate in
            guard let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }

    /// Whether `pid` is a live process (a zombie waiting for its reaper is not).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }

    /// The marker comment on public.conditions in `database`, parsed.
    func tableOwner(_ cluster: SandboxCluster, database: String) async throws -> InterruptedRuns.Owner? {
        try await owner(cluster, database: database, "SELECT obj_description('public.conditions'::regclass, 'pg_class')")
    }

    /// A backup of the sample database "faults" (with `arguments` added) in a new scratch
    /// directory named after `name`: the directory (the caller removes it), the repository in
    /// it, the environment the runs need, and the backup's id.
    func sampleBackup(_ cluster: SandboxCluster, _ name: String, _ arguments: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> (scratch: ScratchDirectory, repository: String, environment: [String: String], id: String) {
        let scratch = try ScratchDirectory(name)
        let repository = scratch.path + "/repo"
        let environment = ["PGPASSWORD": cluster.superuserPassword]
        do {
            let backup = try await CLI.run(["backup", "--db", cluster.url(database: "faults"), "--repo", repository, "--json"] + arguments, environment: environment)
            #expect(backup.exitCode == 0, "\(backup.standardError)", sourceLocation: sourceLocation)
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            return (scratch, repository, environment, id)
        } catch {
            scratch.remove()
            throw error
        }
    }

    /// An export of the sample's public.conditions and a new, empty database `target`: the
    /// arguments and environment that import it there, and the export's id.
    func prepareImport(_ cluster: SandboxCluster, _ scratch: ScratchDirectory, target: String) async throws -> (arguments: [String], environment: [String: String], id: String) {
        let repository = scratch.path + "/repo"
        let (exported, manifest) = try await exportHypertable(cluster, "faults", table: "public.conditions", repository: repository)
        let export = try #require(manifest, "\(exported.standardError)")
        try await cluster.createDatabase(target)
        return (["import-hypertable", export.id, "--repo", repository, "--target", cluster.url(database: target)],
                ["PGPASSWORD": cluster.superuserPassword], export.id)
    }

    /// The next import of the table succeeds, says it dropped the killed one's table, loads every
    /// row (counted through the table), and leaves no marker.
    func expectNextImportDropsTheLeftover(_ cluster: SandboxCluster, target: String, arguments: [String], environment: [String: String],
                                          sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let next = try await CLI.run(arguments, environment: environment)
        #expect(next.exitCode == 0, "\(next.standardError)", sourceLocation: sourceLocation)
        #expect(next.standardError.contains("Dropped the table public.conditions") && next.standardError.contains("interrupted import"), "\(next.standardError)",
                sourceLocation: sourceLocation)
        let (rows, comment) = try await cluster.withSuperuser(database: target) {
            try await $0.row("SELECT (SELECT count(*) FROM public.conditions), obj_description('public.conditions'::regclass, 'pg_class')", as: (Int64, String?).self)
        }
        #expect(rows == Int64(SampleData(.small).expected.conditionsRows), sourceLocation: sourceLocation)
        #expect(comment.map { InterruptedRuns.Owner.parse($0) == nil } ?? true, "a verified import carries no marker: \(comment ?? "")", sourceLocation: sourceLocation)
    }

    func killAndReap(_ pid: Int32) async throws {
        #expect(kill(pid, SIGKILL) == 0)
        try await faults.waitUntil("the killed run to be gone") { kill(pid, 0) != 0 }
    }

    @Test("a restore killed in its data phase: the next restore into the same name drops the leftover and restores")
    func killedRestore() async throws {
        try await faults.withSampleCluster { cluster in
            // The directory format, forced (a database this small gets one custom-format file):
            // its zstd data files are what the restore decompresses into a scratch directory.
            let (scratch, repository, env, id) = try await sampleBackup(cluster, "killed-restore", ["--format", "directory"])
            defer { scratch.remove() }
            let into = "killed_restore"
            let pause = scratch.path + "/pause"
            let arguments = ["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into]
            // A $TMPDIR of this test's own, to see the killed run's scratch directory (the lists).
            let tmp = scratch.path + "/tmp"
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            let runEnvironment = env.merging(["TMPDIR": tmp]) { $1 }
            let first = Task { try await CLI.run(arguments, environment: runEnvironment.merging(["TSBACKUP_TEST_PAUSE": "pg_restore data and post-data=\(pause)"]) { $1 }) }
            try await faults.waitUntil("the restore reaching its data phase") { FileManager.default.fileExists(atPath: pause) }
            // Two kinds: the restore's own scratch directory and, for a backup whose data files
            // tsbackup compressed (the directory format's default), the one holding them decompressed for pg_restore.
            let inTmp = { ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).filter { !$0.hasSuffix(".lock") } }
            let dataScratchDirectories = { inTmp().filter { $0.hasPrefix("tsbackup-restore-data-") } }
            let scratchDirectories = { inTmp().filter { $0.hasPrefix("tsbackup-restore-") && !$0.hasPrefix("tsbackup-restore-data-") } }
            let killedScratch = try #require(scratchDirectories().first, "the running restore has its scratch directory in $TMPDIR")
            #expect(scratchDirectories().count == 1)
            let killedDataScratch = try #require(dataScratchDirectories().first, "the running restore decompressed the data files into $TMPDIR")
            #expect(dataScratchDirectories().count == 1)
            // An older tsbackup's scratch directory (no lock file): nothing proves its owner gone.
            try FileManager.default.createDirectory(atPath: tmp + "/tsbackup-restore-legacy", withIntermediateDirectories: true)
            // One named as they were (tsbackup-restore-<UUID>, no lock file) and unchanged for
            // eight days: certainly an older tsbackup's leftover, which the next restore removes.
            let stale = tmp + "/tsbackup-restore-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: stale + "/rest.list", contents: Data("x".utf8))
            let eightDaysAgo = Date().addingTimeInterval(-8 * 24 * 3600)
            try FileManager.default.setAttributes([.modificationDate: eightDaysAgo], ofItemAtPath: stale + "/rest.list")
            try FileManager.default.setAttributes([.modificationDate: eightDaysAgo], ofItemAtPath: stale)
            #expect(try await faults.restoreModeDatabases(cluster) == [into])
            let marked = try #require(try await owner(cluster, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '\(into)'"),
                                      "the new database carries the run's marker")
            #expect(marked.kind == .restore && marked.backup == id)
            try await killAndReap(marked.pid)
            _ = try? await first.value
            try? FileManager.default.removeItem(atPath: pause)
            #expect(try await faults.restoreModeDatabases(cluster) == [into], "nothing ran to clean up after SIGKILL")
            #expect(scratchDirectories().contains(killedScratch), "SIGKILL skipped the defer that removes the scratch directory")
            #expect(dataScratchDirectories() == [killedDataScratch])

            let next = try await CLI.run(arguments, environment: runEnvironment)
            #expect(next.exitCode == 0, "\(next.standardError)")
            // The warning is part of the report (stdout) or of the messages (stderr).
            let said = next.standardOutput + next.standardError
            #expect(said.contains("Dropped the database \(into)") && said.contains("interrupted restore"), "\(said)")
            #expect(said.contains("Removed the scratch directory \(tmp)/\(killedScratch) of an interrupted restore"), "\(said)")
            #expect(said.contains("Removed the scratch directory \(stale) of an interrupted restore, left by an older tsbackup"), "\(said)")
            #expect(scratchDirectories() == ["tsbackup-restore-legacy"],
                    "the killed run's directory is gone, so is the week-old one named as tsbackup names them, the unprovable one kept, the next run's own removed")
            #expect(dataScratchDirectories().isEmpty, "the killed run's decompressed data files are gone too, and the next run's own")
            #expect(!FileManager.default.fileExists(atPath: tmp + "/" + killedDataScratch + ".lock"))
            #expect(!FileManager.default.fileExists(atPath: tmp + "/" + killedScratch + ".lock"))
            #expect(try await faults.restoreModeDatabases(cluster).isEmpty)
            #expect(try await owner(cluster, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '\(into)'") == nil,
                    "a verified restore carries no marker")
            let rows = try await cluster.withSuperuser(database: into) { try await $0.value("SELECT count(*) FROM public.conditions", as: Int64.self) }
            #expect(rows == Int64(SampleData(.small).expected.conditionsRows))
        }
    }

    @Test("an import killed while it loads: the next import of the same table drops the leftover and imports")
    func killedImport() async throws {
        try await faults.withSampleCluster { cluster in
            let scratch = try ScratchDirectory("killed-import")
            defer { scratch.remove() }
            let (arguments, env, exportID) = try await prepareImport(cluster, scratch, target: "killed_target")
            // The load's first row waits for the chunk catalog, after the table was created and committed.
            let lock = try await faults.holdLock(cluster, database: "killed_target", "LOCK TABLE _timescaledb_catalog.chunk IN EXCLUSIVE MODE")
            let first = Task { try await CLI.run(arguments, environment: env) }
            try await faults.waitUntil("the import's load waiting for the chunk catalog") { try await faults.lockWaiters(cluster, "killed_target") > 0 }
            let marked = try #require(try await tableOwner(cluster, database: "killed_target"), "the new table carries the run's marker")
            #expect(marked.kind == .import && marked.backup == exportID)
            // Its loading children (psql, the decompressor) end with it (parent-death signal,
            // ChildLaunch), while the lock still holds them: none is left as an orphan.
            let children = Self.children(of: marked.pid)
            #expect(!children.isEmpty, "the import runs its load in child processes")
            try await killAndReap(marked.pid)
            try await faults.waitUntil("the killed import's children to end with it", seconds: 600) { !children.contains(where: Self.isAlive) }
            lock.cancel()
            _ = try? await first.value

            try await expectNextImportDropsTheLeftover(cluster, target: "killed_target", arguments: arguments, environment: env)
        }
    }

    @Test("an import killed after its checks, before it exited: the table still carries the marker; the next import drops it and says so")
    func importKilledBeforeItExited() async throws {
        try await faults.withSampleCluster { cluster in
            let scratch = try ScratchDirectory("killed-import-late")
            defer { scratch.remove() }
            let (arguments, env, _) = try await prepareImport(cluster, scratch, target: "killed_late")
            let pause = scratch.path + "/pause"
            // Held after the report was printed, before the marker goes (the campaign's last window).
            let first = Task { try await CLI.run(arguments, environment: env.merging(["TSBACKUP_TEST_PAUSE": "import: report printed=\(pause)"]) { $1 }) }
            try await faults.waitUntil("the import printing its report", seconds: 600) { FileManager.default.fileExists(atPath: pause) }
            let marked = try #require(try await tableOwner(cluster, database: "killed_late"), "the verified table still carries the run's marker")
            try await killAndReap(marked.pid)
            _ = try? await first.value
            try? FileManager.default.removeItem(atPath: pause)

            try await expectNextImportDropsTheLeftover(cluster, target: "killed_late", arguments: arguments, environment: env)
        }
    }

    /// The restore sweep race (the 200-kill campaign's `chaos_r_k73`): a killed restore's psql pair
    /// outlives it and commits the marker only after CREATE DATABASE. A sweep that looked in between
    /// saw an unmarked database and left it, named by no one. The sweep now waits until no session
    /// named like the pair is open. Here a session of that name holds the window open: the database
    /// exists unmarked while the next restore's sweep must wait; then the marker of a gone run is
    /// set and the session closed, as the pair would, and the sweep must drop the database and say so.
    @Test("a restore's sweep waits for a database still being created and marked, then drops it and names it")
    func sweepWaitsForDatabaseCreators() async throws {
        try await faults.withSampleCluster { cluster in
            let (scratch, repository, env, id) = try await sampleBackup(cluster, "sweep-waits")
            defer { scratch.remove() }
            let leftover = "sweep_race_left"
            let into = "sweep_race_next"
            var pair = cluster.settings()
            pair.applicationName = InterruptedRuns.creatorApplicationName
            let restore = try await DatabaseSession.with(pair) { session in
                try await session.execute("CREATE DATABASE \(leftover) TEMPLATE template0")
                // The next restore, in the background, its stderr in a log to watch.
                let restore = try await BackgroundRestore.start(id, repository: repository, cluster: cluster, into: into,
                                                                scratch: scratch.path, environment: env)
                try await faults.waitUntil("the restore's sweep saying it waits for a restore creating its database", seconds: 600) {
                    if restore.log.contains("waiting for 1 restore(s) still creating their database") { return true }
                    // The old code did not wait: the restore ends without dropping or naming the database.
                    if restore.ended {
                        Issue.record("the restore ended without waiting for the database being created: \(restore.log)")
                        return true
                    }
                    return false
                }
                let gone = InterruptedRuns.Owner(kind: .restore, backup: id, pid: Int32.max - 1)
                try await session.execute("COMMENT ON DATABASE \(leftover) IS '\(gone.comment)'")
                return restore
            }
            try await faults.waitUntil("the restore to end", seconds: 600) { restore.ended }
            let exit = try restore.exitStatus()
            let said = restore.log
            #expect(exit == "0", "\(said)")
            #expect(said.contains("Dropped the database \(leftover) on") && said.contains("interrupted restore"), "\(said)")
            let left = try await cluster.withSuperuser {
                try await $0.values("SELECT datname::text FROM pg_database WHERE datname IN ('\(unescaped: leftover)', '\(unescaped: into)') ORDER BY 1", as: String.self)
            }
            #expect(left == [into], "the leftover was dropped; the restore made its own database")
        }
    }

    /// The other sweep race: a sweep read a database's marker while its restore was still
    /// running; the restore then finished, removed its marker and exited; the sweep, finding the
    /// run gone, dropped a complete, reported database (seen in CI: a restore exited 0 and its
    /// database was not there). The sweep now reads the marker again after finding the run gone.
    /// Here the sweep pauses between its reading and its check, the marker is removed as the
    /// finished run would, and the database must stay.
    @Test("a sweep that read a marker before its restore finished leaves the finished restore's database alone")
    func sweepRereadsTheMarker() async throws {
        try await faults.withSampleCluster { cluster in
            let (scratch, repository, env, id) = try await sampleBackup(cluster, "sweep-reread")
            defer { scratch.remove() }
            let finished = "sweep_finished_run"
            let gone = InterruptedRuns.Owner(kind: .restore, backup: id, pid: Int32.max - 1)
            try await cluster.withSuperuser { session in
                try await session.execute("CREATE DATABASE \(finished) TEMPLATE template0")
                try await session.execute("COMMENT ON DATABASE \(finished) IS '\(gone.comment)'")
            }
            let pause = scratch.path + "/pause-sweep"
            let restore = try await BackgroundRestore.start(id, repository: repository, cluster: cluster, into: "sweep_reread_next", scratch: scratch.path,
                                                            environment: env.merging(["TSBACKUP_TEST_PAUSE": "sweep: checking \(finished)=\(pause)"]) { _, new in new })
            try await faults.waitUntil("the sweep to pause between reading the marker and checking its run", seconds: 600) {
                FileManager.default.fileExists(atPath: pause) || restore.ended
            }
            #expect(FileManager.default.fileExists(atPath: pause), "the restore never reached the sweep's pause: \(restore.log)")
            // The run finished: it removes its marker (and has exited: its pid is not running).
            try await cluster.withSuperuser { try await $0.execute("COMMENT ON DATABASE \(finished) IS NULL") }
            try? FileManager.default.removeItem(atPath: pause)
            try await faults.waitUntil("the restore to end", seconds: 600) { restore.ended }
            let exit = try restore.exitStatus()
            #expect(exit == "0", "\(restore.log)")
            #expect(!restore.log.contains("Dropped the database \(finished)"), "\(restore.log)")
            let left = try await cluster.withSuperuser {
                try await $0.values("SELECT datname::text FROM pg_database WHERE datname IN ('\(unescaped: finished)', 'sweep_reread_next') ORDER BY 1", as: String.self)
            }
            #expect(left == ["sweep_finished_run", "sweep_reread_next"], "the finished run's database stays; the restore made its own")
        }
    }
}

/// A `tsbackup restore` in the background: its output goes to a file to watch, and its exit
/// status to another when it ends. Both files sit outside its working directory, which the
/// process's watchdog removes when it ends.
struct BackgroundRestore: Sendable {
    let process: BackgroundProcess
    let output: String
    let status: String

    var log: String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
    var ended: Bool { FileManager.default.fileExists(atPath: status) }
    func exitStatus() throws -> String { try String(contentsOfFile: status, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }

    static func start(_ id: String, repository: String, cluster: SandboxCluster, into: String, scratch: String,
                      environment: [String: String]) async throws -> BackgroundRestore {
        let directory = scratch + "/next"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (output, status) = (scratch + "/output", scratch + "/status")
        let process = try await BackgroundProcess.start(
            name: "restore", command: ["sh", "-c", "\"$@\" >\(output) 2>&1; echo $? > \(status)", "sh", CLI.executable,
                                       "restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into],
            environment: environment, directory: directory)
        return BackgroundRestore(process: process, output: output, status: status)
    }
}

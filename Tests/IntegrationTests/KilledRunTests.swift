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
            let scratch = try ScratchDirectory("killed-restore")
            defer { scratch.remove() }
            let repository = scratch.path + "/repo"
            let env = ["PGPASSWORD": cluster.superuserPassword]
            let backup = try await CLI.run(["backup", "--db", cluster.url(database: "faults"), "--repo", repository, "--json"], environment: env)
            #expect(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let into = "killed_restore"
            let pause = scratch.path + "/pause"
            let arguments = ["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into]
            let first = Task { try await CLI.run(arguments, environment: env.merging(["TSBACKUP_TEST_PAUSE": "pg_restore data and post-data=\(pause)"]) { $1 }) }
            try await faults.waitUntil("the restore reaching its data phase") { FileManager.default.fileExists(atPath: pause) }
            #expect(try await faults.restoreModeDatabases(cluster) == [into])
            let marked = try #require(try await owner(cluster, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '\(into)'"),
                                      "the new database carries the run's marker")
            #expect(marked.kind == .restore && marked.backup == id)
            try await killAndReap(marked.pid)
            _ = try? await first.value
            try? FileManager.default.removeItem(atPath: pause)
            #expect(try await faults.restoreModeDatabases(cluster) == [into], "nothing ran to clean up after SIGKILL")

            let next = try await CLI.run(arguments, environment: env)
            #expect(next.exitCode == 0, "\(next.standardError)")
            // The warning is part of the report (stdout) or of the messages (stderr).
            let said = next.standardOutput + next.standardError
            #expect(said.contains("Dropped the database \(into)") && said.contains("interrupted restore"), "\(said)")
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
}

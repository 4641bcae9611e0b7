import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

@Suite("backup refusals and failures")
struct BackupFailureTests {
    func entries(_ repository: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: repository + "/backups")) ?? []
    }

    @Test("options that would lose hypertable data are refused before anything is written", arguments: [
        (["--table", "public.conditions"], "export-hypertable"),
        (["--table", "devices"], "whole databases"),
        (["--exclude-table", "conditions"], "hypertable public.conditions"),
        (["--exclude-table", "_timescaledb_internal._hyper_*"], "chunk"),
        (["--exclude-schema", "_timescaledb_internal"], "TimescaleDB schema"),
        (["--exclude-schema", "_timescaledb_catalog"], "TimescaleDB schema"),
        (["--exclude-schema", "iot"], "hypertable iot.readings"),
        (["--exclude-table", "no_such_table"], "matches no table"),
        (["--exclude-table", "public.devices"], "foreign key"),
    ])
    func unsafeFilters(arguments: [String], explanation: String) async throws {
        let (cluster, database) = try await makeSampleDatabase("filter")
        let scratch = try ScratchDirectory("filter")
        defer { scratch.remove() }
        let result = try await runBackup(cluster, database, repository: scratch.path + "/repo", arguments)
        #expect(result.exitCode == 64, "\(result.standardError)")
        #expect(result.standardError.contains(explanation), "\(result.standardError)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/repo"))
    }

    @Test("leaving out a plain table is allowed and recorded")
    func excludePlainTable() async throws {
        let (cluster, database) = try await makeSampleDatabase("plainx")
        try await cluster.withSuperuser(database: database) {
            try await $0.execute("CREATE TABLE public.scratch_notes (id int, body text)")
        }
        let scratch = try ScratchDirectory("plainx")
        defer { scratch.remove() }
        let result = try await runBackup(cluster, database, repository: scratch.path + "/repo", ["--exclude-table", "public.scratch_*"])
        #expect(result.exitCode == 0, "\(result.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(scratch.path + "/repo", id)
        #expect(manifest.plainTables.map(\.name) == ["devices"])
    }

    @Test("unknown database: exit 4, no repository created")
    func unknownDatabase() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let scratch = try ScratchDirectory("nodb")
        defer { scratch.remove() }
        let result = try await runBackup(cluster, "missing_db", repository: scratch.path + "/repo")
        #expect(result.exitCode == 4)
        #expect(result.standardError.contains("\"missing_db\" does not exist"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/repo"))
    }

    @Test("a role that cannot read every table is told which and what to do")
    func unreadableTables() async throws {
        let (cluster, database) = try await makeSampleDatabase("noread")
        let role = uniqueDatabaseName("reader")
        try await cluster.createRole(role, password: "reader-pw")
        let scratch = try ScratchDirectory("noread")
        defer { scratch.remove() }
        let result = try await CLI.run(["backup", "--db", cluster.url(database: database, user: role), "--repo", scratch.path + "/repo"],
                                       environment: ["PGPASSWORD": "reader-pw"])
        #expect(result.exitCode == 3, "\(result.standardError)")
        #expect(result.standardError.contains("cannot read") && result.standardError.contains("GRANT SELECT"))
        #expect(!result.standardError.contains("reader-pw"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/repo"))
    }

    @Test("a lock table too small even for the dump without batched chunks stops the backup early with the setting to raise")
    func lockBudget() async throws {
        // 10 x 4 = 40 lock slots: less than TimescaleDB's catalog and the plain tables alone need,
        // so dumping chunks in batches (ChunkScaleTests) cannot help either.
        try await SandboxCluster.with(.init(settings: ["max_locks_per_transaction": "10", "max_connections": "4"])) { cluster in
            try await cluster.createDatabase("locks")
            try await cluster.withSuperuser(database: "locks") { try await SampleData(.small).load(into: $0) }
            let scratch = try ScratchDirectory("locks")
            defer { scratch.remove() }
            let result = try await runBackup(cluster, "locks", repository: scratch.path + "/repo")
            #expect(result.exitCode == 5, "\(result.standardError)")
            #expect(result.standardError.contains("max_locks_per_transaction = "))
            #expect(result.standardError.contains("dumping chunks in batches still leaves"))
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "/repo"))
        }
    }

    @Test("a TimescaleDB catalog stamped with another version than the extension is refused before anything is written")
    func catalogVersionMismatch() async throws {
        let (cluster, database) = try await makeSampleDatabase("catver")
        // An update or restore that did not finish leaves the catalog's stamp behind the extension's.
        try await cluster.withSuperuser(database: database) {
            try await $0.execute("UPDATE _timescaledb_catalog.metadata SET value = '2.0.0' WHERE key = 'timescaledb_version'")
        }
        let scratch = try ScratchDirectory("catver")
        defer { scratch.remove() }
        let result = try await runBackup(cluster, database, repository: scratch.path + "/repo")
        #expect(result.exitCode == 5, "\(result.standardError)")
        #expect(result.standardError.contains("its catalog says 2.0.0"), "\(result.standardError)")
        #expect(result.standardError.contains("ALTER EXTENSION timescaledb UPDATE"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/repo"))
    }

    @Test("a source database left in TimescaleDB restore mode is backed up with a warning")
    func sourceInRestoreMode() async throws {
        let (cluster, database) = try await makeSampleDatabase("restmode")
        try await cluster.withSuperuser { try await $0.execute("ALTER DATABASE \(quoteIdentifier(database)) SET timescaledb.restoring = on") }
        let scratch = try ScratchDirectory("restmode")
        defer { scratch.remove() }
        let result = try await runBackup(cluster, database, repository: scratch.path + "/repo")
        #expect(result.exitCode == 0, "\(result.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8))
        #expect(summary.warnings.contains { $0.contains("restore mode (timescaledb.restoring = on)") }, "\(summary.warnings)")
        // Not the setting of another database: a second database without it gets no such warning.
        let (_, other) = try await makeSampleDatabase("restmode_other")
        let clean = try await runBackup(cluster, other, repository: scratch.path + "/repo2")
        #expect(clean.exitCode == 0, "\(clean.standardError)")
        let cleanSummary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(clean.standardOutput.utf8))
        #expect(!cleanSummary.warnings.contains { $0.contains("restore mode") }, "\(cleanSummary.warnings)")
        // The shared cluster keeps no database in restore mode for other suites to find.
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(database)) WITH (FORCE)") }
    }

    @Test("a database without TimescaleDB is backed up as plain PostgreSQL, and says so")
    func plainPostgreSQL() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let database = uniqueDatabaseName("plainpg")
        try await cluster.createDatabase(database, timescaleDB: false)
        try await cluster.withSuperuser(database: database) {
            try await $0.execute("CREATE TABLE public.notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 25) g")
        }
        let scratch = try ScratchDirectory("plainpg")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository)
        #expect(result.exitCode == 0, "\(result.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8))
        #expect(summary.warnings.contains { $0.contains("TimescaleDB is not installed") && $0.contains("plain PostgreSQL backup") })
        let manifest = try backupManifest(repository, summary.id)
        #expect(manifest.timescaledb == nil)
        #expect(manifest.hypertables.isEmpty && manifest.chunkTables.isEmpty)
        #expect(manifest.plainTables.map(\.name) == ["notes"])
        #expect(manifest.plainTables.first?.rowCount == 25)
        let verify = try await CLI.run(["verify", summary.id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
    }

    @Test("a repository on a filesystem too small for the database is refused")
    func fullDisk() async throws {
        let (cluster, database) = try await makeSampleDatabase("disk")
        let scratch = try ScratchDirectory("disk")
        defer { scratch.remove() }
        let mountPoint = scratch.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try await ProcessRunner.run("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint])
        try #require(mount.succeeded, "mounting a tmpfs needs root: \(mount.standardError)")
        defer { Task { _ = try? await ProcessRunner.run("umount", [mountPoint]) } }
        let result = try await runBackup(cluster, database, repository: mountPoint + "/repo")
        #expect(result.exitCode == 5, "\(result.standardError)")
        #expect(result.standardError.contains("free") && result.standardError.contains("larger filesystem"))
        #expect(!FileManager.default.fileExists(atPath: mountPoint + "/repo"))
        _ = try await ProcessRunner.run("umount", [mountPoint])
    }

    @Test("a failing pg_dump leaves an entry marked failed, never a complete one")
    func pgDumpFails() async throws {
        let (cluster, database) = try await makeSampleDatabase("pgfail")
        let scratch = try ScratchDirectory("pgfail")
        defer { scratch.remove() }
        let path = try scratch.fakePgDump("""
            echo "pg_dump: error: could not write to output file: No space left on device" >&2
            exit 1
            """)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, environment: path)
        #expect(result.exitCode == 1)
        #expect(result.standardError.contains("No space left on device"))
        let ids = entries(repository)
        #expect(ids.count == 1)
        let manifest = try backupManifest(repository, try #require(ids.first))
        #expect(manifest.status == .failed)
        #expect(manifest.error?.contains("pg_dump failed") == true)
        #expect(manifest.files.isEmpty)
        let verify = try await CLI.run(["verify", manifest.id, "--repo", repository])
        #expect(verify.exitCode == 1)
        let list = try await CLI.run(["list", "--repo", repository])
        #expect(list.standardOutput.contains("failed"))
    }

    @Test("a chunk dropped under pg_dump is retried, and the retry recorded")
    func vanishedChunkIsRetried() async throws {
        let (cluster, database) = try await makeSampleDatabase("retry")
        let scratch = try ScratchDirectory("retry")
        defer { scratch.remove() }
        let counter = scratch.path + "/attempts"
        let path = try scratch.fakePgDump("""
            n=$(cat '\(counter)' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '\(counter)'
            if [ "$n" -eq 1 ]; then
              echo 'pg_dump: error: query failed: ERROR:  relation "_timescaledb_internal._hyper_1_3_chunk" does not exist' >&2
              echo 'pg_dump: detail: Query was: LOCK TABLE _timescaledb_internal._hyper_1_3_chunk IN ACCESS SHARE MODE' >&2
              exit 1
            fi
            exec /usr/lib/postgresql/15/bin/pg_dump "$@"
            """)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, environment: path)
        #expect(result.exitCode == 0, "\(result.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        #expect(manifest.status == .complete)
        #expect(manifest.retries.count == 1)
        #expect(manifest.retries.first?.reason.contains("_hyper_1_3_chunk") == true)
        #expect(try String(contentsOfFile: counter, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == "2")
    }

    @Test("a killed run is never complete, and the next run cleans it up")
    func killedRun() async throws {
        let (cluster, database) = try await makeSampleDatabase("killed")
        let scratch = try ScratchDirectory("killed")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        // The fake pg_dump marks that it runs: by then the run has staged its `.partial` entry. Waiting for
        // that state, not for a duration, keeps the test true on a loaded machine.
        let marker = scratch.path + "/pg_dump-started"
        let path = try scratch.fakePgDump("touch \"\(marker)\"; sleep 600")
        let script = """
            "$TSBACKUP" backup --db "$URL" --repo "$REPO" > /dev/null 2> "$LOG" &
            pid=$!
            for i in $(seq 1 6000); do [ -e "$MARK" ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid"; wait "$pid" 2>/dev/null
            pkill -f "$FAKE" || true
            ls "$REPO/backups"
            cat "$LOG" >&2
            """
        let killed = try await ProcessRunner.run("bash", ["-c", script], environment: [
            "TSBACKUP": CLI.executable, "URL": cluster.url(database: database), "REPO": repository,
            "FAKE": scratch.path + "/bin/pg_dump", "PGPASSWORD": cluster.superuserPassword,
            "PATH": path["PATH"]!, "MARK": marker, "LOG": scratch.path + "/backup.log",
        ])
        try #require(FileManager.default.fileExists(atPath: marker),
                     "the backup never reached pg_dump: \(killed.standardError)")
        #expect(killed.standardOutput.contains(".partial"), "\(killed.standardOutput) \(killed.standardError)")

        let list = try await CLI.run(["list", "--repo", repository, "--json"])
        #expect(list.standardOutput.contains("\"incomplete\""))
        #expect(!list.standardOutput.contains("\"complete\""))
        let id = try #require(entries(repository).first).replacingOccurrences(of: ".partial", with: "")
        #expect(try await CLI.run(["verify", id, "--repo", repository]).exitCode == 1)

        // The next backup finds the dead holder's lock, removes its leftovers and succeeds.
        let next = try await runBackup(cluster, database, repository: repository)
        #expect(next.exitCode == 0, "\(next.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(next.standardOutput.utf8))
        #expect(summary.warnings.contains { $0.contains("previous run") && $0.contains(id) })
        #expect(entries(repository) == [summary.id])
    }

    @Test("two runs never write one repository at once")
    func concurrentRunsAreRefused() async throws {
        let (cluster, database) = try await makeSampleDatabase("lock")
        let scratch = try ScratchDirectory("lock")
        defer { scratch.remove() }
        let repository = try LocalRepository.open(scratch.path + "/repo", create: true)
        let lock = try RepositoryLock.acquire(repository, command: "test holder")
        let result = try await runBackup(cluster, database, repository: repository.root)
        lock.release()
        #expect(result.exitCode == 5)
        #expect(result.standardError.contains("in use by pid \(getpid())"))
        #expect(entries(repository.root).isEmpty)
        #expect(try await runBackup(cluster, database, repository: repository.root).exitCode == 0)
    }

    @Test("verify names corrupt and missing files; delete removes an entry")
    func verifyAndDelete() async throws {
        let (cluster, database) = try await makeSampleDatabase("corrupt")
        let scratch = try ScratchDirectory("corrupt")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, ["--format", "directory"])
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        // Data files of a directory archive as tsbackup stores them by default: zstd frames (a
        // flip lands in the frame).
        let dataFiles = manifest.files.filter { $0.path.hasSuffix(".dat.zst") && $0.bytes > 20 }
        let victim = try #require(dataFiles.first)
        let gone = try #require(dataFiles.last)

        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: "\(repository)/backups/\(id)/\(victim.path)"))
        try handle.seek(toOffset: 12)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: 12)
        try handle.write(contentsOf: Data([byte[0] ^ 0xFF]))
        try handle.close()
        try FileManager.default.removeItem(atPath: "\(repository)/backups/\(id)/\(gone.path)")

        let verify = try await CLI.run(["verify", id, "--repo", repository])
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains("\(victim.path) is corrupt"))
        #expect(verify.standardOutput.contains("missing file \(gone.path)"))
        #expect(verify.standardError.contains("do not restore it"))

        let unknown = try await CLI.run(["verify", "20990101T000000Z", "--repo", repository])
        #expect(unknown.exitCode == 4)
        #expect(unknown.standardError.contains(id))

        let unconfirmed = try await CLI.run(["delete", id, "--repo", repository])
        #expect(unconfirmed.exitCode == 64)
        #expect(entries(repository) == [id])
        let deleted = try await CLI.run(["delete", id, "--repo", repository, "--yes"])
        #expect(deleted.exitCode == 0)
        #expect(entries(repository).isEmpty)
        let notARepository = try await CLI.run(["list", "--repo", scratch.path])
        #expect(notARepository.exitCode == 4)
    }
}

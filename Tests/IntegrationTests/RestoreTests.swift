import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// A backed-up sample database, ready to restore.
struct BackedUpDatabase {
    let cluster: SandboxCluster
    let database: String
    let repository: String
    let id: String
    let scratch: ScratchDirectory

    static func make(_ prefix: String, backupOptions: [String] = ["--checksums"]) async throws -> BackedUpDatabase {
        let (cluster, database) = try await makeSampleDatabase(prefix)
        let scratch = try ScratchDirectory(prefix)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, backupOptions)
        guard result.exitCode == 0 else { throw SandboxError("backup failed: \(result.standardError)") }
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        return BackedUpDatabase(cluster: cluster, database: database, repository: repository, id: id, scratch: scratch)
    }

    /// A directory-format backup (its data files zstd), its manifest, and an empty directory
    /// for the restore's scratch space (`TSBACKUP_SCRATCH_DIR`), which a test can check is left
    /// empty. Removes the scratch directory itself if it fails after the backup.
    static func directoryFormat(_ prefix: String) async throws -> (backup: BackedUpDatabase, manifest: BackupManifest, scratchBase: String) {
        let backup = try await make(prefix, backupOptions: ["--format", "directory"])
        do {
            let manifest = try backupManifest(backup.repository, backup.id)
            let scratchBase = backup.scratch.path + "/tmp"
            try FileManager.default.createDirectory(atPath: scratchBase, withIntermediateDirectories: true)
            return (backup, manifest, scratchBase)
        } catch {
            backup.scratch.remove()
            throw error
        }
    }

    func restore(_ extra: [String] = [], target: SandboxCluster? = nil, user: String = SandboxCluster.superuser,
                 password: String? = nil, environment: [String: String] = [:]) async throws -> ProcessResult {
        let server = target ?? cluster
        return try await CLI.run(["restore", id, "--repo", repository, "--target", server.url(database: "postgres", user: user)] + extra,
                                 environment: ["PGPASSWORD": password ?? server.superuserPassword].merging(environment) { $1 })
    }

    /// Restores into a new database with two jobs, and checks it succeeded: the report all ok,
    /// and, independently of tsbackup's checks, the same rows table by table as the source. The
    /// report, for the test's own checks.
    func restoreMatchingSource(_ prefix: String, environment: [String: String] = [:],
                               sourceLocation: SourceLocation = #_sourceLocation) async throws -> Restore.Report {
        let into = uniqueDatabaseName(prefix)
        let result = try await restore(["--into", into, "--jobs", "2", "--json"], environment: environment)
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)", sourceLocation: sourceLocation)
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.ok && report.checks.allSatisfy { $0.ok }, sourceLocation: sourceLocation)
        #expect(try await contentDigests(cluster, into) == contentDigests(cluster, database), sourceLocation: sourceLocation)
        return report
    }
}

func databaseExists(_ cluster: SandboxCluster, _ name: String) async throws -> Bool {
    try await cluster.withSuperuser { try await $0.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(name))", as: Bool.self) }
}

/// md5 of every table's rows in a fixed order: an independent check of identical content.
func contentDigests(_ cluster: SandboxCluster, _ database: String) async throws -> [String: String] {
    try await cluster.withSuperuser(database: database) { session in
        var digests: [String: String] = [:]
        for (table, order) in [("public.devices", "id"), ("public.conditions", "time, device_id"),
                               ("public.events", "seq"), ("iot.readings", "sensor_id, time")] {
            digests[table] = try await session.value(
                PostgresQuery(unsafeSQL: "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY \(order)), '')) FROM \(table) t"),
                as: String.self)
        }
        return digests
    }
}

@Suite("restore through the TimescaleDB procedure")
struct RestoreTests {
    @Test("a restore reproduces the database exactly and leaves TimescaleDB fully working")
    func fullRestore() async throws {
        let backup = try await BackedUpDatabase.make("rs")
        defer { backup.scratch.remove() }
        let into = uniqueDatabaseName("restored")
        let result = try await backup.restore(["--into", into, "--jobs", "2", "--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.ok)
        #expect(report.database == into)
        #expect(report.checks.contains { $0.check == "content hash" && $0.ok })
        #expect(report.checks.allSatisfy { $0.ok })
        #expect(report.steps.map(\.name).contains("pg_restore TimescaleDB catalog data"))

        // Independently of tsbackup's own checks: identical rows, table by table.
        let source = try await contentDigests(backup.cluster, backup.database)
        #expect(try await contentDigests(backup.cluster, into) == source)

        try await backup.cluster.withSuperuser(database: into) { session in
            // Foreign keys survived on hypertables and reach new chunks.
            await #expect(throws: TSBackupError.self) {
                try await session.execute("INSERT INTO public.conditions (time, device_id, temperature) VALUES ('2030-01-01', 999, 1)")
            }
            let before = try await session.value("SELECT count(*) FROM show_chunks('public.conditions')", as: Int64.self)
            try await session.execute("INSERT INTO public.conditions (time, device_id, temperature) VALUES ('2030-01-01', 1, 1)")
            let after = try await session.value("SELECT count(*) FROM show_chunks('public.conditions')", as: Int64.self)
            #expect(after == before + 1)
            let fks = try await session.value(
                """
                SELECT count(*) FROM pg_constraint con JOIN _timescaledb_catalog.chunk ch
                  ON con.conrelid = format('%I.%I', ch.schema_name, ch.table_name)::regclass
                WHERE con.contype = 'f' AND ch.hypertable_id = (SELECT id FROM _timescaledb_catalog.hypertable WHERE table_name = 'conditions')
                """, as: Int64.self)
            #expect(fks == after)
            let restoring = try await session.value("SELECT current_setting('timescaledb.restoring')", as: String.self)
            #expect(restoring == "off")
        }
        let listed = try await backup.cluster.withSuperuser {
            try await $0.value("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = \(into)", as: Int64.self)
        }
        #expect(listed == 0)
    }

    @Test("custom-format backups restore with the default name and parallel jobs")
    func customFormatDefaultName() async throws {
        let backup = try await BackedUpDatabase.make("rscustom", backupOptions: ["--format", "custom"])
        defer { backup.scratch.remove() }
        let result = try await backup.restore(["--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let expectedName = Restore.defaultDatabaseName(source: backup.database, id: backup.id)
        #expect(try await databaseExists(backup.cluster, expectedName))
        #expect(try await contentDigests(backup.cluster, expectedName) == contentDigests(backup.cluster, backup.database))
    }

    @Test("a non-superuser target is told who must run the restore; nothing is created")
    func nonSuperuser() async throws {
        let backup = try await BackedUpDatabase.make("rsnosu", backupOptions: [])
        defer { backup.scratch.remove() }
        let role = uniqueDatabaseName("operator")
        try await backup.cluster.createRole(role, password: "op-secret", createDatabase: true)
        let into = uniqueDatabaseName("never")
        let result = try await backup.restore(["--into", into], user: role, password: "op-secret")
        #expect(result.exitCode == 3)
        #expect(result.standardError.contains("not a superuser") && result.standardError.contains("administrator"))
        #expect(!result.standardError.contains("op-secret"))
        #expect(try await databaseExists(backup.cluster, into) == false)
    }

    @Test("an existing database is never restored into")
    func existingDatabase() async throws {
        let backup = try await BackedUpDatabase.make("rsexist", backupOptions: [])
        defer { backup.scratch.remove() }
        let result = try await backup.restore(["--into", backup.database])
        #expect(result.exitCode == 5)
        #expect(result.standardError.contains("already exists"))
        #expect(try await contentDigests(backup.cluster, backup.database)["public.conditions"] != nil)
    }

    @Test("a TimescaleDB version the target cannot install is refused with both ways out")
    func versionNotInstallable() async throws {
        let backup = try await BackedUpDatabase.make("rsver", backupOptions: [])
        defer { backup.scratch.remove() }
        // Simulate a backup written by another TimescaleDB release.
        let path = "\(backup.repository)/backups/\(backup.id)/manifest.json"
        var manifest = try backupManifest(backup.repository, backup.id)
        manifest.timescaledb?.version = "2.18.0"
        try FileSystem.writeAtomically(Data(try JSONOutput.encode(manifest).utf8), to: path)
        let into = uniqueDatabaseName("ver")
        let result = try await backup.restore(["--into", into])
        #expect(result.exitCode == 5)
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        #expect(result.standardError.contains("needs TimescaleDB 2.18.0") && result.standardError.contains(installed))
        #expect(result.standardError.contains("ALTER EXTENSION timescaledb UPDATE"))
        // The closest installable versions and the exact steps, with the update path this server ships.
        #expect(result.standardError.contains("closest: \(installed)"))
        #expect(result.standardError.contains("install TimescaleDB 2.18.0 for PostgreSQL 15"))
        #expect(result.standardError.contains("--update-extension"))
        #expect(result.standardError.contains("update path 2.18.0--\(installed)"))
        #expect(try await databaseExists(backup.cluster, into) == false)
    }

    @Test("a backup with pg_dump's gzip data files (the format before zstd, --compress 0-9) still restores and verifies")
    func gzipBackupRestores() async throws {
        let backup = try await BackedUpDatabase.make("rsgzip", backupOptions: ["--compress", "2", "--format", "directory"])
        defer { backup.scratch.remove() }
        // The manifest as every earlier tsbackup wrote it: no file_compression, gzip files from pg_dump.
        let stored = try String(contentsOfFile: "\(backup.repository)/backups/\(backup.id)/manifest.json", encoding: .utf8)
        #expect(!stored.contains("file_compression"))
        let manifest = try backupManifest(backup.repository, backup.id)
        #expect(manifest.fileCompression == nil && manifest.compression == 2)
        let dataFiles = manifest.files.filter { $0.path.hasPrefix("dump/") && $0.path != "dump/toc.dat" }
        #expect(!dataFiles.isEmpty && dataFiles.allSatisfy { $0.path.hasSuffix(".dat.gz") })

        let verify = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
        let report = try await backup.restoreMatchingSource("gzip")
        #expect(!report.steps.contains { $0.name.hasPrefix("decompress") }, "pg_restore reads gzip itself")
    }

    @Test("with TSBACKUP_RESTORE_SCRATCH_COPY=1 a directory backup's zstd data files are all decompressed into scratch space first, which is removed afterwards")
    func zstdBackupRestores() async throws {
        let (backup, manifest, scratchBase) = try await BackedUpDatabase.directoryFormat("rszstd")
        defer { backup.scratch.remove() }
        let packed = try #require(manifest.fileCompression)
        let report = try await backup.restoreMatchingSource("zstd", environment: ["TSBACKUP_SCRATCH_DIR": scratchBase, "TSBACKUP_RESTORE_SCRATCH_COPY": "1"])
        let step = try #require(report.steps.first { $0.name.hasPrefix("decompress") })
        #expect(step.ok && step.name.contains("\(packed.files) data files"))
        // The decompressed copy went into TSBACKUP_SCRATCH_DIR and is gone; the entry is untouched.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratchBase).isEmpty)
        let verify = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
    }

    @Test("by default the zstd data files are decompressed batch by batch as pg_restore loads them: the scratch directory never holds more than two batches per lane")
    func zstdBackupRestoresInBatches() async throws {
        let (backup, manifest, scratchBase) = try await BackedUpDatabase.directoryFormat("rsbatch")
        defer { backup.scratch.remove() }
        let packed = try #require(manifest.fileCompression)
        // One data file per batch, two lanes: at most 4 data files at once, out of many more.
        try #require(packed.files > 4, "the sample archive has enough data files to tell a bound from a full copy")
        // A pg_restore in front of the real one that records, at each start, the data files in
        // the archive directory it was given (its last argument).
        let log = backup.scratch.path + "/seen.log"
        let real = try await PostgresTools.locate("pg_restore", minimumMajor: 15).path
        var environment = try backup.scratch.fakeTool("pg_restore", """
            for last; do :; done
            if [ -d "$last" ]; then echo "$(ls "$last" | grep -c '^[0-9]*\\.dat$') $(ls "$last" | grep '^[0-9]*\\.dat$' | tr '\\n' ' ')" >> '\(log)'; fi
            exec '\(real)' "$@"
            """)
        environment["TSBACKUP_SCRATCH_DIR"] = scratchBase
        environment["TSBACKUP_RESTORE_BATCH_BYTES"] = "1"
        let report = try await backup.restoreMatchingSource("batch", environment: environment)
        #expect(!report.steps.contains { $0.name.hasPrefix("decompress") }, "no step decompresses the whole archive")
        #expect(report.steps.contains { $0.name.hasPrefix("pg_restore data and post-data") && $0.name.contains("batch by batch") })
        let seen = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap { Int($0.split(separator: " ").first ?? "") }
        // Every table's data went through a pg_restore started with its file present: more
        // starts than files at once, and never more than two batches of each lane.
        #expect(seen.count > 4 && seen.allSatisfy { $0 <= 4 }, "\(seen)")
        #expect(seen.reduce(0, +) >= packed.files, "\(seen)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratchBase).isEmpty)
    }

    @Test("a zstd data file that does not decompress (its hash rewritten to match) fails the restore naming it, drops the database and leaves no scratch")
    func corruptZstdFileNamed() async throws {
        let (backup, manifest, scratchBase) = try await BackedUpDatabase.directoryFormat("rsbadzst")
        defer { backup.scratch.remove() }
        let file = try #require(manifest.files.filter { $0.path.hasSuffix(".dat.zst") }.max { $0.bytes < $1.bytes })
        try tamper(entry: "\(backup.repository)/backups/\(backup.id)", file: file.path, with: "not a zstd frame")
        let into = uniqueDatabaseName("badzst")
        let result = try await backup.restore(["--into", into, "--jobs", "2"], environment: ["TSBACKUP_SCRATCH_DIR": scratchBase])
        #expect(result.exitCode == 1, "\(result.standardOutput) \(result.standardError)")
        #expect(result.standardError.contains("The file \(file.path) does not decompress"), "\(result.standardError)")
        #expect(try await databaseExists(backup.cluster, into) == false)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratchBase).isEmpty)
    }

    @Test("a corrupt backup is never restored")
    func corruptBackup() async throws {
        let backup = try await BackedUpDatabase.make("rscorrupt", backupOptions: [])
        defer { backup.scratch.remove() }
        let manifest = try backupManifest(backup.repository, backup.id)
        // The default backup's archive: one custom-format file for a database this small (a
        // zstd data file of a directory archive otherwise).
        let file = try #require(manifest.files.first { $0.path == "dump.pgdump" || $0.path.hasSuffix(".dat.zst") })
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: "\(backup.repository)/backups/\(backup.id)/\(file.path)"))
        let into = uniqueDatabaseName("corrupt")
        let result = try await backup.restore(["--into", into])
        #expect(result.exitCode == 5)
        #expect(result.standardError.contains("does not verify") && result.standardError.contains(file.path))
        #expect(try await databaseExists(backup.cluster, into) == false)
    }

    @Test("a restore whose TimescaleDB catalog did not load fails verification before any insert, and is dropped")
    func emptyCatalogIsCaught() async throws {
        let backup = try await BackedUpDatabase.make("rsempty", backupOptions: [])
        defer { backup.scratch.remove() }
        // A pg_restore that silently skips the catalog phase: the failure plain `pg_restore -j` causes.
        let path = try backup.scratch.fakeTool("pg_restore", """
            case "$*" in *catalog.list*) exit 0 ;; esac
            exec /usr/lib/postgresql/15/bin/pg_restore "$@"
            """)

        let into = uniqueDatabaseName("empty")
        let result = try await backup.restore(["--into", into, "--json"], environment: path)
        #expect(result.exitCode == 1)
        #expect(result.standardError.contains("verify against the manifest"))
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.checks.contains { $0.check == "hypertables" && $0.expected == "3" && $0.actual == "0" })
        #expect(report.checks.contains { $0.check == "insert test" && $0.actual.contains("skipped") })
        #expect(try await databaseExists(backup.cluster, into) == false)

        // --keep-failed keeps it for inspection, but never in restore mode.
        let kept = uniqueDatabaseName("kept")
        let again = try await backup.restore(["--into", kept, "--keep-failed"], environment: path)
        #expect(again.exitCode == 1)
        #expect(again.standardError.contains("kept for inspection"))
        #expect(try await databaseExists(backup.cluster, kept))
        let settings = try await backup.cluster.withSuperuser {
            try await $0.value("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = \(kept)", as: Int64.self)
        }
        #expect(settings == 0)
    }

    @Test("a pg_restore error fails the restore at its step and drops the new database")
    func pgRestoreError() async throws {
        let backup = try await BackedUpDatabase.make("rserr", backupOptions: [])
        defer { backup.scratch.remove() }
        let path = try backup.scratch.fakeTool("pg_restore", """
            case "$*" in *rest.list*) echo "pg_restore: error: COPY failed for table \\"x\\": ERROR:  boom" >&2; echo "pg_restore: warning: errors ignored on restore: 1" >&2; exit 1 ;; esac
            exec /usr/lib/postgresql/15/bin/pg_restore "$@"
            """)
        let into = uniqueDatabaseName("err")
        let result = try await backup.restore(["--into", into], environment: path)
        #expect(result.exitCode == 1)
        #expect(result.standardError.contains("pg_restore data and post-data") && result.standardError.contains("boom"))
        #expect(result.standardError.contains("was dropped"))
        #expect(try await databaseExists(backup.cluster, into) == false)
    }

    @Test("missing owner roles are refused, or created with --create-roles, on another server")
    func rolesOnAnotherServer() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let owner = uniqueDatabaseName("appowner")
        try await cluster.createRole(owner, password: "owner-pw")
        let database = uniqueDatabaseName("owned")
        try await cluster.createDatabase(database, owner: owner, timescaleDB: false)
        try await DatabaseSession.with(cluster.settings(database: database, user: owner, password: "owner-pw")) { session in
            try await session.execute("CREATE EXTENSION timescaledb")
            try await SampleData(.small).load(into: session)
        }
        let scratch = try ScratchDirectory("roles")
        defer { scratch.remove() }
        let backupResult = try await runBackup(cluster, database, repository: scratch.path + "/repo")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backupResult.standardOutput.utf8)).id
        let backup = BackedUpDatabase(cluster: cluster, database: database, repository: scratch.path + "/repo", id: id, scratch: scratch)

        try await SandboxCluster.with { other in
            let refused = try await backup.restore(["--into", "copy"], target: other)
            #expect(refused.exitCode == 5)
            #expect(refused.standardError.contains(owner) && refused.standardError.contains("--create-roles"))
            #expect(try await databaseExists(other, "copy") == false)

            let created = try await backup.restore(["--into", "copy", "--create-roles"], target: other)
            #expect(created.exitCode == 0, "\(created.standardOutput) \(created.standardError)")
            #expect(try await contentDigests(other, "copy") == contentDigests(cluster, database))
            let tableOwner = try await other.withSuperuser(database: "copy") {
                try await $0.value("SELECT tableowner::text FROM pg_tables WHERE tablename = 'conditions'", as: String.self)
            }
            #expect(tableOwner == owner)
        }
    }

    @Test("promotion swaps the verified copy in, keeps the old database, and says how to roll back")
    func promotion() async throws {
        let backup = try await BackedUpDatabase.make("rspromo", backupOptions: [])
        defer { backup.scratch.remove() }
        let live = uniqueDatabaseName("live")
        try await backup.cluster.createDatabase(live, timescaleDB: false)

        let unconfirmed = try await backup.restore(["--promote-to", live])
        #expect(unconfirmed.exitCode == 64)

        let result = try await backup.restore(["--promote-to", live, "--yes", "--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.promotedTo == live)
        let previous = try #require(report.previousDatabase)
        #expect(try await databaseExists(backup.cluster, previous))
        #expect(report.rollback?.contains(previous) == true)
        #expect(try await contentDigests(backup.cluster, live) == contentDigests(backup.cluster, backup.database))
        // The scheduler runs under the new name.
        var running = false
        for _ in 0..<2400 where !running {  // a hang guard of ten minutes
            running = try await backup.cluster.withSuperuser {
                try await $0.value("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'TimescaleDB Background Worker Scheduler' AND datname = \(live))", as: Bool.self)
            }
            if !running { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(running)
    }
}

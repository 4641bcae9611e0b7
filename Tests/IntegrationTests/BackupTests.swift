import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// A scratch directory per test, removed afterwards.
struct ScratchDirectory {
    let path: String

    init(_ name: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// A fake PostgreSQL tool placed first on PATH: answers `--version` as 15.99 (so it is chosen
    /// over the real 15.x), then runs `body` (shell). Returns the environment that puts it first.
    func fakeTool(_ name: String, _ body: String) throws -> [String: String] {
        let bin = path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let script = """
            #!/bin/sh
            if [ "$1" = "--version" ]; then echo "\(name) (PostgreSQL) 15.99"; exit 0; fi
            \(body)
            """
        try script.write(toFile: bin + "/" + name, atomically: true, encoding: .utf8)
        chmod(bin + "/" + name, 0o755)
        return ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
    }

    func fakePgDump(_ body: String) throws -> [String: String] {
        try fakeTool("pg_dump", body)
    }
}

func backupManifest(_ repository: String, _ id: String) throws -> BackupManifest {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(repository)/backups/\(id)/manifest.json"))
    return try JSONOutput.decode(BackupManifest.self, from: data)
}

func runBackup(_ cluster: SandboxCluster, _ database: String, repository: String, _ extra: [String] = [],
               environment: [String: String] = [:]) async throws -> ProcessResult {
    try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", repository, "--json"] + extra,
                      environment: ["PGPASSWORD": cluster.superuserPassword].merging(environment) { $1 })
}

@Suite("backup into a repository")
struct BackupTests {
    @Test("a backup records exact figures, hashes every file and verifies")
    func completeBackup() async throws {
        let (cluster, database) = try await makeSampleDatabase("bk")
        let scratch = try ScratchDirectory("repo")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        // The directory format, forced: a database this small gets the custom format by default
        // (BackupFormatChoiceTests), and this test checks the per-table files and their zstd.
        let result = try await runBackup(cluster, database, repository: repository, ["--checksums", "--label", "nightly", "--format", "directory"])
        #expect(result.exitCode == 0, "\(result.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8))
        #expect(summary.status == "complete")
        let manifest = try backupManifest(repository, summary.id)
        #expect(manifest.label == "nightly")
        #expect(manifest.checksums)
        #expect(manifest.timescaledb?.version == PostgresInstallation.installedTimescaleDBVersion())
        #expect(manifest.timescaledb?.catalogVersion == manifest.timescaledb?.version)
        #expect(manifest.server.majorVersion == 15)
        #expect(manifest.pgDump.majorVersion >= 15)
        // The directory format's defaults: one pg_dump job per core (2 to 8), written
        // uncompressed by pg_dump and compressed by tsbackup with zstd, file by file.
        #expect(manifest.format == .directory)
        #expect(manifest.formatChoice?.chosenBy == "user")
        #expect(manifest.jobsUsed == min(8, max(2, ProcessInfo.processInfo.activeProcessorCount)))
        #expect(manifest.compression == 0)
        let dataFiles = manifest.files.filter { $0.path.hasPrefix("dump/") && $0.path.contains(".dat") && $0.path != "dump/toc.dat" }
        #expect(!dataFiles.isEmpty && dataFiles.allSatisfy { $0.path.hasSuffix(".dat.zst") })
        let packed = try #require(manifest.fileCompression)
        #expect(packed.method == "zstd" && packed.level == Backup.defaultZstdLevel && packed.suffix == ".zst")
        #expect(packed.files == dataFiles.count)
        #expect(packed.bytes == dataFiles.reduce(0) { $0 + $1.bytes })
        #expect(packed.plainBytes > packed.bytes)
        #expect((manifest.phaseSeconds ?? [:])["compression"] != nil)
        // Where the time went, phase by phase.
        let phases = Set((manifest.phaseSeconds ?? [:]).keys)
        #expect(phases.isSuperset(of: ["preflight", "dump", "survey", "archive check", "hashing"]), "\(phases)")

        // Figures equal what SQL says about the (unchanged) source.
        let truth = try await cluster.withSuperuser(database: database) { session in
            try await session.rows(
                """
                SELECT h.schema_name::text, h.table_name::text,
                       (SELECT count(*) FROM _timescaledb_catalog.chunk c WHERE c.hypertable_id = h.id AND NOT c.dropped)
                FROM _timescaledb_catalog.hypertable h ORDER BY 1, 2
                """, as: (String, String, Int64).self)
        }
        #expect(manifest.hypertables.map { "\($0.schema).\($0.name)" } == truth.map { "\($0.0).\($0.1)" })
        let expected = SampleData(.small).expected
        let rows = Dictionary(uniqueKeysWithValues: manifest.hypertables.map { ($0.name, $0.rowCount) })
        #expect(rows == ["conditions": Int64(expected.conditionsRows), "events": Int64(expected.eventsRows), "readings": Int64(expected.readingsRows)])
        for (table, row) in zip(manifest.hypertables, truth) {
            #expect(Int64(table.chunkCount) == row.2)
            #expect(table.contentHash?.hasPrefix("v1:") == true)
        }
        #expect(manifest.chunkTables.count == truth.reduce(0) { $0 + Int($1.2) })
        let conditions = try #require(manifest.hypertables.first { $0.name == "conditions" })
        #expect(conditions.foreignKeyCount == 1)
        #expect(conditions.indexCount == 2)
        #expect(manifest.plainTables.map(\.name) == ["devices"])
        #expect(manifest.plainTables.first?.rowCount == Int64(expected.devices))

        // Every file is listed with its real size and hash.
        let directory = "\(repository)/backups/\(manifest.id)"
        let onDisk = try FileSystem.regularFiles(under: directory).filter { $0 != "manifest.json" }
        #expect(Set(onDisk) == Set(manifest.files.map(\.path)))
        for file in manifest.files.prefix(5) {
            let (hex, bytes) = try FileSystem.sha256(of: directory + "/" + file.path)
            #expect(hex == file.sha256)
            #expect(bytes == file.bytes)
        }
        #expect(manifest.files.contains { $0.path == "roles.sql" })
        let roles = try String(contentsOfFile: directory + "/roles.sql", encoding: .utf8)
        #expect(roles.contains("CREATE ROLE postgres"))

        // No secret anywhere in the repository.
        let grep = try await ProcessRunner.run("grep", ["-r", "-l", "-F", cluster.superuserPassword, repository])
        #expect(grep.exitCode == 1, "password found in: \(grep.standardOutput)")

        let verify = try await CLI.run(["verify", manifest.id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")

        let list = try await CLI.run(["list", "--repo", repository])
        #expect(list.standardOutput.contains(manifest.id) && list.standardOutput.contains("complete") && list.standardOutput.contains("nightly"))
        let show = try await CLI.run(["show", manifest.id, "--repo", repository])
        #expect(show.standardOutput.contains("public.conditions") && show.standardOutput.contains(String(expected.conditionsRows)))
    }

    @Test("the manifest describes exactly what the archive holds while the source keeps changing")
    func snapshotConsistency() async throws {
        let (cluster, database) = try await makeSampleDatabase("busy")
        let scratch = try ScratchDirectory("busy")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        // A writer inserts rows (also into new chunks) while the backup runs: it has committed
        // before the backup starts, and commits more after the backup has ended (so some rows are
        // certainly newer than its snapshot), states waited for rather than times.
        let writer = ConditionsWriter(cluster, database, from: "2026-06-01", step: "hours")
        try await writer.waitForBatches(2)
        let result = try await runBackup(cluster, database, repository: repository, ["--jobs", "2", "--format", "directory"])
        try await writer.waitForBatches(writer.committed + 2)
        let batches = try await writer.stop()
        #expect(result.exitCode == 0, "\(result.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8))
        let manifest = try backupManifest(repository, summary.id)
        let recorded = try #require(manifest.hypertables.first { $0.name == "conditions" })

        // Count the rows of every chunk data file of `conditions` in the archive.
        let directory = "\(repository)/backups/\(manifest.id)/dump"
        let listing = try await ProcessRunner.run("/usr/lib/postgresql/15/bin/pg_restore", ["--list", directory])
        let contents = ArchiveContents(listing: listing.standardOutput)
        let conditionChunks = try await cluster.withSuperuser(database: database) { session in
            Set(try await session.values(
                "SELECT c.table_name::text FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id WHERE h.table_name = 'conditions'",
                as: String.self))
        }
        var archived = 0
        var chunkFiles = 0
        for item in contents.items where item.type == "TABLE DATA" && conditionChunks.contains(item.name) {
            let file = "\(directory)/\(item.dumpID).dat.zst"
            // Data lines only: each file ends with the "\." terminator and blank lines.
            let lines = try await ProcessRunner.run("sh", ["-c", "zstd -dcq '\(file)' | grep -c -v -e '^\\\\\\.$' -e '^$'"])
            archived += Int(lines.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            chunkFiles += 1
        }
        #expect(chunkFiles == recorded.chunkCount)
        #expect(Int64(archived) == recorded.rowCount)
        let now = try await cluster.withSuperuser(database: database) {
            try await $0.value("SELECT count(*) FROM public.conditions", as: Int64.self)
        }
        #expect(batches > 1)
        #expect(now > recorded.rowCount, "the writer kept writing after the snapshot")
    }

    @Test("custom format works and verifies")
    func customFormat() async throws {
        let (cluster, database) = try await makeSampleDatabase("custom")
        let scratch = try ScratchDirectory("custom")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, ["--format", "custom"])
        #expect(result.exitCode == 0, "\(result.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        #expect(manifest.archive == "dump.pgdump")
        #expect(manifest.files.map(\.path).sorted() == ["dump.pgdump", "roles.sql"])
        #expect(try await CLI.run(["verify", id, "--repo", repository]).exitCode == 0)
    }

    @Test("roles are dumped while pg_dump runs, not after it")
    func rolesBesideTheDump() async throws {
        let (cluster, database) = try await makeSampleDatabase("rolesbeside")
        let scratch = try ScratchDirectory("rolesbeside")
        defer { scratch.remove() }
        let started = scratch.path + "/pg_dumpall-started"
        let seen = scratch.path + "/pg_dump-saw-pg_dumpall"
        // pg_dump starts only once pg_dumpall has: with the roles dumped after pg_dump, it would
        // wait out its hang guard (10 minutes) and the marker below would be missing.
        _ = try scratch.fakeTool("pg_dumpall", "touch '\(started)'; exec /usr/lib/postgresql/15/bin/pg_dumpall \"$@\"")
        let path = try scratch.fakePgDump("""
            for i in $(seq 1 6000); do [ -e '\(started)' ] && break; sleep 0.1; done
            [ -e '\(started)' ] && touch '\(seen)'
            exec /usr/lib/postgresql/15/bin/pg_dump "$@"
            """)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, environment: path)
        #expect(result.exitCode == 0, "\(result.standardError)")
        #expect(FileManager.default.fileExists(atPath: seen), "pg_dump ran before pg_dumpall started")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        #expect(manifest.rolesSource == "pg_dumpall")
        let roles = try String(contentsOfFile: "\(repository)/backups/\(id)/roles.sql", encoding: .utf8)
        #expect(roles.contains("CREATE ROLE postgres"))
        #expect(manifest.files.contains { $0.path == "roles.sql" })
        #expect(try await CLI.run(["verify", id, "--repo", repository]).exitCode == 0)
    }

    @Test("when pg_dumpall refuses, the roles are rebuilt from the catalog and the manifest says so")
    func rolesFromCatalog() async throws {
        let (cluster, database) = try await makeSampleDatabase("rolescat")
        let role = uniqueDatabaseName("jobowner")
        try await cluster.createRole(role, password: "jobowner-pw")
        let scratch = try ScratchDirectory("rolescat")
        defer { scratch.remove() }
        let path = try scratch.fakeTool("pg_dumpall", """
            echo "pg_dumpall: error: query failed: ERROR:  permission denied for table pg_authid" >&2
            exit 1
            """)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, environment: path)
        #expect(result.exitCode == 0, "\(result.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        #expect(manifest.rolesSource == "catalog query")
        let roles = try String(contentsOfFile: "\(repository)/backups/\(id)/roles.sql", encoding: .utf8)
        #expect(roles.contains("written by tsbackup from pg_roles"))
        #expect(roles.contains("CREATE ROLE \(quoteIdentifier(role));"), "\(roles)")
        #expect(!roles.contains("pg_dumpall: error"))
        #expect(!roles.contains("jobowner-pw"))
        #expect(try await CLI.run(["verify", id, "--repo", repository]).exitCode == 0)
    }

    @Test("the manifest's server and TimescaleDB figures are the ones `inspect` reads")
    func figuresMatchInspect() async throws {
        let (cluster, database) = try await makeSampleDatabase("facts")
        let scratch = try ScratchDirectory("facts")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository)
        #expect(result.exitCode == 0, "\(result.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        let inspect = try await CLI.run(["inspect", "--json", "--db", cluster.url(database: database)],
                                        environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(inspect.exitCode == 0, "\(inspect.standardError)")
        let report = try JSONOutput.decode(ServerInspection.self, from: Data(inspect.standardOutput.utf8))
        #expect(manifest.server == report.server)
        let timescale = try #require(manifest.timescaledb)
        #expect(timescale.version == report.timescaledb.version)
        #expect(timescale.catalogVersion == report.timescaledb.catalogVersion)
        #expect(timescale.license == report.timescaledb.license)
        #expect(timescale.schema == report.timescaledb.schema)
        #expect(manifest.extensions == report.extensions)
        #expect(Set(manifest.hypertables.map { "\($0.schema).\($0.name):\($0.chunkCount)" })
                == Set(report.hypertables.map { "\($0.schema).\($0.name):\($0.chunkCount)" }))
    }
}

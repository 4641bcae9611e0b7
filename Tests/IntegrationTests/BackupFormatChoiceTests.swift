import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// The archive format a default backup chooses per database, and that each choice restores and
/// verifies: rows are checked through the hypertable roots by SQL, not by tsbackup's figures.
@Suite("backup format choice: which format a database gets, and its round trip")
struct BackupFormatChoiceTests {
    /// Row count and md5 of the ordered rows of every sample table, read through the roots.
    static func digests(_ cluster: SandboxCluster, _ database: String) async throws -> [String: String] {
        try await cluster.withSuperuser(database: database) { session in
            var digests: [String: String] = [:]
            for table in ["public.devices", "public.conditions", "public.events", "iot.readings"] {
                digests[table] = try await session.value(PostgresQuery(unsafeSQL:
                    "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \(table) t"), as: String.self)
            }
            return digests
        }
    }

    /// A backup of `database` into `repository` (with `arguments` added), which must succeed:
    /// its id and manifest.
    static func backUp(_ cluster: SandboxCluster, _ database: String, repository: String, _ arguments: [String] = [],
                       sourceLocation: SourceLocation = #_sourceLocation) async throws -> (id: String, manifest: BackupManifest) {
        let result = try await runBackup(cluster, database, repository: repository, arguments)
        try #require(result.exitCode == 0, "\(result.standardError)", sourceLocation: sourceLocation)
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        return (id, try backupManifest(repository, id))
    }

    @Test("many small chunks: the default backup is one custom-format file, says why, and restores with --jobs 2 exactly")
    func manySmallChunks() async throws {
        // 240 hourly chunks of a few rows each, plus the other sample tables: past the table floor.
        let options = SampleData.Options(devices: 2, days: 10, readingsPerDay: 24, chunkInterval: "1 hour",
                                         events: 100, eventsPerChunk: 100, sensors: 1, spacePartitions: 2)
        let (cluster, database) = try await makeSampleDatabase("fmtauto", options: options)
        let scratch = try ScratchDirectory("fmtauto")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        let (id, manifest) = try await Self.backUp(cluster, database, repository: repository)
        #expect(manifest.format == .custom)
        #expect(manifest.archive == "dump.pgdump")
        #expect(manifest.jobsUsed == 1)
        let choice = try #require(manifest.formatChoice)
        #expect(choice.format == .custom)
        #expect(choice.chosenBy == "auto")
        #expect(choice.tables > 240)
        #expect(choice.reason.contains("one custom-format file"), "\(choice.reason)")
        // The table sizes the choice weighed are the catalog's, and the same when they are read
        // in slices of 50 tables, each on a server session of its own (past 5,000 otherwise).
        let truth = try await cluster.withSuperuser(database: database) {
            try await $0.row("""
                SELECT count(*), sum(pg_relation_size(c.oid))::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                """, as: (Int64, Int64).self)
        }
        #expect(Int64(choice.tables) == truth.0 && choice.tableBytes == truth.1, "\(choice) against \(truth)")
        let sliced = try await runBackup(cluster, database, repository: repository, environment: ["TSBACKUP_TEST_SIZES_CHUNKS_PER_SESSION": "50"])
        try #require(sliced.exitCode == 0, "\(sliced.standardError)")
        let slicedID = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(sliced.standardOutput.utf8)).id
        let slicedChoice = try #require(try backupManifest(repository, slicedID).formatChoice)
        #expect(slicedChoice.tables == choice.tables && slicedChoice.tableBytes == choice.tableBytes, "\(slicedChoice) against \(choice)")
        #expect(manifest.files.contains { $0.path == "dump.pgdump" })
        #expect(!manifest.files.contains { $0.path.hasPrefix("dump/") })
        #expect(manifest.chunkTables.count > 240)
        // `show` says which format and why.
        let show = try await CLI.run(["show", id, "--repo", repository])
        #expect(show.standardOutput.contains("Format choice"), "\(show.standardOutput)")

        let verify = try await CLI.run(["verify", id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")

        let into = uniqueDatabaseName("fmtauto_restored")
        let restore = try await CLI.run(["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"),
                                         "--into", into, "--jobs", "2", "--json"], environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(restore.exitCode == 0, "\(restore.standardOutput) \(restore.standardError)")
        let report = try? JSONOutput.decode(Restore.Report.self, from: Data(restore.standardOutput.utf8))
        #expect(report?.ok == true)
        let source = try await Self.digests(cluster, database)
        #expect(try await Self.digests(cluster, into) == source)
        let expected = SampleData(options).expected
        #expect(source["public.conditions"]?.hasPrefix("\(expected.conditionsRows):") == true)
        let chunks = try await cluster.withSuperuser(database: into) {
            try await $0.value("SELECT count(*) FROM _timescaledb_catalog.chunk", as: Int64.self)
        }
        #expect(Int(chunks) == manifest.chunkTables.count)
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }

        // --format still forces the user's choice, and says so.
        let directory = try await Self.backUp(cluster, database, repository: repository, ["--format", "directory"]).manifest
        #expect(directory.format == .directory)
        #expect(directory.formatChoice?.chosenBy == "user")
        #expect(directory.files.filter { $0.path.hasPrefix("dump/") }.count > 240)
    }

    @Test("a small database: one custom-format file by default; heavy data or --compress zstd keep the directory format")
    func smallAndHeavy() async throws {
        let (cluster, database) = try await makeSampleDatabase("fmtfew")
        let scratch = try ScratchDirectory("fmtfew")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        func backup(_ extra: [String] = []) async throws -> BackupManifest {
            try await Self.backUp(cluster, database, repository: repository, extra).manifest
        }

        // The sample database: a few dozen small tables. One file, one pg_dump connection.
        let small = try await backup()
        #expect(small.format == .custom)
        #expect(small.jobsUsed == 1)
        #expect(small.compression == Backup.defaultCompression && small.fileCompression == nil)
        #expect(small.files.map(\.path).sorted() == ["dump.pgdump", "roles.sql"])
        let choice = try #require(small.formatChoice)
        #expect(choice.chosenBy == "auto")
        #expect(choice.tables < 100)
        #expect(choice.reason.contains("one custom-format file"), "\(choice.reason)")
        let verify = try await CLI.run(["verify", small.id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")

        // --compress zstd asks for tsbackup's per-file zstd, which only the directory format has.
        let zstd = try await backup(["--compress", "zstd:3"])
        #expect(zstd.format == .directory)
        #expect(zstd.formatChoice?.chosenBy == "user")
        #expect(zstd.formatChoice?.reason.contains("--compress zstd") == true)
        #expect(zstd.fileCompression?.level == 3)

        // Megabytes of heap in a few tables: the parallel directory format is estimated faster.
        try await cluster.withSuperuser(database: database) { session in
            try await session.execute("CREATE TABLE public.heavy AS SELECT g AS id, repeat(md5(g::text), 6) AS payload FROM generate_series(1, 60000) g")
        }
        let heavy = try await backup()
        #expect(heavy.format == .directory)
        #expect(heavy.jobsUsed >= 2)
        let heavyChoice = try #require(heavy.formatChoice)
        #expect(heavyChoice.chosenBy == "auto")
        #expect(heavyChoice.tableBytes > 10_000_000)
        #expect(heavyChoice.reason.contains("parallel jobs"), "\(heavyChoice.reason)")
        #expect(heavy.fileCompression?.method == "zstd")
    }
}

import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// With `TSBACKUP_PARALLEL_PREDATA=1` (opt-in), a restore of more than `RestoreProcedure`'s
/// threshold of chunk tables with `--jobs 2` creates the chunk tables on two connections after
/// the rest of pre-data; small rows keep it quick.
@Suite("restore: chunk tables' pre-data on parallel lists")
struct ParallelPreDataTests {
    static let chunks = 260

    /// `public.readings`: hourly chunks, a bigserial column (a DEFAULT entry per chunk in the
    /// archive), a comment on one chunk; three rows per chunk.
    static func load(_ cluster: SandboxCluster, _ database: String) async throws -> String {
        try await cluster.createDatabase(database)
        return try await cluster.withSuperuser(database: database) { session in
            for statement in [
                "CREATE TABLE public.readings (id bigserial, time timestamptz NOT NULL, value integer NOT NULL, note text DEFAULT 'none')",
                "SELECT create_hypertable('public.readings', 'time', chunk_time_interval => interval '1 hour')",
                """
                INSERT INTO public.readings (time, value) SELECT timestamptz '2026-01-01 00:00:00+00' + make_interval(mins => m * 20), m
                FROM generate_series(0, \(chunks * 3 - 1)) m
                """,
            ] {
                try await session.execute(statement)
            }
            let chunk = try await session.value(
                "SELECT format('%I.%I', schema_name, table_name) FROM _timescaledb_catalog.chunk ORDER BY id OFFSET 7 LIMIT 1", as: String.self)
            try await session.execute("COMMENT ON TABLE \(chunk) IS 'the eighth chunk'")
            return chunk
        }
    }

    /// Counted and hashed by SQL through the root: independent of tsbackup's verification.
    static func digest(_ cluster: SandboxCluster, _ database: String) async throws -> String {
        try await cluster.withSuperuser(database: database) {
            try await $0.value("SELECT count(*) || ':' || md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM public.readings t", as: String.self)
        }
    }

    static func restore(_ cluster: SandboxCluster, _ repository: String, _ id: String, into: String,
                        environment: [String: String] = [:]) async throws -> ProcessResult {
        try await CLI.run(["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into, "--jobs", "2", "--json"],
                          environment: ["PGPASSWORD": cluster.superuserPassword, "TSBACKUP_PARALLEL_PREDATA": "1"].merging(environment) { $1 })
    }

    @Test("chunk tables are created on two lists, the rows come back exactly; a failing list fails the restore and drops the database")
    func parallelChunkPreData() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let database = uniqueDatabaseName("predata")
        let commented = try await Self.load(cluster, database)
        let scratch = try ScratchDirectory("predata")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let backup = try await runBackup(cluster, database, repository: repository)
        try #require(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
        #expect(try backupManifest(repository, id).chunkTables.count == Self.chunks)

        let into = uniqueDatabaseName("predata_restored")
        let result = try await Self.restore(cluster, repository, id, into: into)
        #expect(result.exitCode == 0, "\(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.ok)
        let steps = report.steps.map(\.name)
        #expect(steps.contains("pg_restore pre-data except chunk tables"), "\(steps)")
        #expect(steps.contains("pg_restore pre-data of \(Self.chunks) chunk tables, 2 lists at once"), "\(steps)")
        #expect(!steps.contains("pg_restore pre-data"), "\(steps)")
        #expect(report.checks.contains { $0.subject == "public.readings" && $0.check == "rows" && $0.actual == String(Self.chunks * 3) && $0.ok })
        #expect(try await Self.digest(cluster, into) == (try await Self.digest(cluster, database)))
        try await cluster.withSuperuser(database: into) { session in
            #expect(try await session.value("SELECT count(*) FROM show_chunks('public.readings')", as: Int64.self) == Int64(Self.chunks))
            #expect(try await session.value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.readings'::regclass", as: Int64.self) == Int64(Self.chunks))
            #expect(try await session.value(PostgresQuery(unsafeSQL: "SELECT obj_description('\(commented)'::regclass, 'pg_class')"), as: String?.self) == "the eighth chunk")
            // Out of restore mode, the catalog and the chunks' defaults work: a new row lands in a new chunk.
            try await session.execute("INSERT INTO public.readings (time, value) VALUES ('2030-01-01', 1)")
            #expect(try await session.value("SELECT count(*) FROM show_chunks('public.readings')", as: Int64.self) == Int64(Self.chunks + 1))
            #expect(try await session.value("SELECT count(*) FROM public.readings WHERE note = 'none'", as: Int64.self) == Int64(Self.chunks * 3 + 1))
        }
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }

        // Without the opt-in, the same archive takes the single serial pre-data pg_restore.
        let serialInto = uniqueDatabaseName("predata_serial")
        let serial = try await Self.restore(cluster, repository, id, into: serialInto, environment: ["TSBACKUP_PARALLEL_PREDATA": "0"])
        #expect(serial.exitCode == 0, "\(serial.standardError)")
        let serialSteps = try JSONOutput.decode(Restore.Report.self, from: Data(serial.standardOutput.utf8)).steps.map(\.name)
        #expect(serialSteps.contains("pg_restore pre-data"), "\(serialSteps)")
        #expect(!serialSteps.contains { $0.contains("lists at once") }, "\(serialSteps)")
        try await cluster.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(serialInto)) WITH (FORCE)") }

        // One list cut wrongly: the chunk's DEFAULT before its table. The server's error fails
        // the restore, named with pg_restore's message, and the new database is dropped.
        let broken = uniqueDatabaseName("predata_broken")
        let failed = try await Self.restore(cluster, repository, id, into: broken, environment: ["TSBACKUP_TEST_MISORDER_CHUNK": commented])
        #expect(failed.exitCode == 1, "\(failed.standardError)")
        #expect(failed.standardError.contains("pre-data of chunk tables, list"), "\(failed.standardError)")
        #expect(failed.standardError.contains("does not exist"), "\(failed.standardError)")
        #expect(failed.standardError.contains("was dropped"), "\(failed.standardError)")
        let exists = try await cluster.withSuperuser {
            try await $0.value("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = \(broken))", as: Bool.self)
        }
        #expect(!exists)
    }
}

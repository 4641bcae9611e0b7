import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Every foreign key of the database, as text rows: table, name, definition, validated, in a
/// fixed order. Read from pg_constraint, independently of tsbackup's own verification.
func foreignKeyRows(_ cluster: SandboxCluster, _ database: String) async throws -> [String] {
    try await cluster.withSuperuser(database: database) { session in
        try await session.values(
            """
            SELECT format('%s|%s|%s|%s|%s', conrelid::regclass, conname, pg_get_constraintdef(oid), convalidated, confrelid::regclass)
            FROM pg_constraint WHERE contype = 'f' AND connamespace <> ALL (ARRAY['_timescaledb_catalog', '_timescaledb_config']::regnamespace[])
            ORDER BY 1
            """, as: String.self)
    }
}

/// The chunks' foreign keys run on a connection of their own beside the chunks' index builds
/// (RestoreProcedure.restoreRest): the keys must come back exactly as the source has them, and
/// still be checked against the rows as they are added.
@Suite("restore: chunks' foreign keys beside their indexes")
struct RestoreForeignKeyTests {
    @Test("every chunk's foreign key is restored, validated and defined as in the source (pg_constraint compared)")
    func keysEqualTheSource() async throws {
        let backup = try await BackedUpDatabase.make("rsfk", backupOptions: [])
        defer { backup.scratch.remove() }
        let into = uniqueDatabaseName("rsfk_into")
        let result = try await backup.restore(["--into", into, "--jobs", "2", "--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        // The split path ran (the sample's conditions chunks have a key to devices).
        #expect(report.steps.contains { $0.name.hasPrefix("pg_restore data and post-data") && $0.name.contains("foreign keys beside their indexes") })
        // tsbackup's own check, and one that could fail: as many chunk keys as conditions' chunks.
        let chunks = try await backup.cluster.withSuperuser(database: backup.database) {
            try await $0.value("SELECT count(*) FROM show_chunks('public.conditions')", as: Int64.self)
        }
        #expect(chunks > 1)
        let check = report.checks.first { $0.subject == "public.conditions" && $0.check.hasPrefix("chunks' foreign keys") }
        #expect(check?.ok == true && check?.expected == String(chunks) && check?.actual == String(chunks))

        let source = try await foreignKeyRows(backup.cluster, backup.database)
        let restored = try await foreignKeyRows(backup.cluster, into)
        #expect(source.count > Int(chunks))
        #expect(restored == source)
        #expect(restored.allSatisfy { $0.contains("|t|") })
        // And the keys act: a row for a missing device is refused in an old chunk.
        try await backup.cluster.withSuperuser(database: into) { session in
            let chunk = try await session.value("SELECT show_chunks('public.conditions')::text LIMIT 1", as: String.self)
            await #expect(throws: TSBackupError.self) {
                try await session.execute("INSERT INTO \(chunk) (time, device_id, temperature) SELECT time, 999, 1 FROM \(chunk) LIMIT 1")
            }
        }
    }

    @Test("a backup whose chunk holds a row its foreign key rejects fails the restore at the key, and the database is dropped")
    func violatingRowIsCaught() async throws {
        let (cluster, database) = try await makeSampleDatabase("rsfkbad")
        let scratch = try ScratchDirectory("rsfkbad")
        defer { scratch.remove() }
        // A row no key would let in, written past the key's triggers (as a tampered dump or a
        // replica-mode load could hold it).
        let chunk = try await cluster.withSuperuser(database: database) { session in
            try await session.execute("SET session_replication_role = replica")
            let chunk = try await session.value("SELECT show_chunks('public.conditions')::text LIMIT 1", as: String.self)
            try await session.execute("INSERT INTO \(chunk) (time, device_id, temperature) SELECT time, 4242, 1 FROM \(chunk) LIMIT 1")
            return chunk
        }
        let repository = scratch.path + "/repo"
        let backup = try await runBackup(cluster, database, repository: repository, [])
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
        let into = uniqueDatabaseName("rsfkbad_into")
        let result = try await CLI.run(["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into, "--jobs", "2"],
                                       environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(result.exitCode == 1, "\(result.standardError)")
        #expect(result.standardError.contains("pg_restore data and post-data"))
        #expect(result.standardError.contains("foreign key"), "\(result.standardError)")
        #expect(result.standardError.contains(String(chunk.split(separator: ".").last ?? "")), "\(result.standardError)")
        #expect(result.standardError.contains("was dropped"))
        #expect(try await databaseExists(cluster, into) == false)
    }
}

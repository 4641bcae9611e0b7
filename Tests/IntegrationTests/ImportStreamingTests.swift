import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// import-hypertable from S3 or an encrypted repository streams each data file into its COPY,
/// checking it on the way, instead of staging the export locally first.
@Suite("import-hypertable streams data files from S3 and encrypted repositories")
struct ImportStreamingTests {
    /// A scratch location no directory can be made under: any staging fails the command.
    static func unusableScratch(_ scratch: ScratchDirectory) throws -> String {
        let path = scratch.path + "/not-a-directory"
        try Data("x".utf8).write(to: URL(fileURLWithPath: path))
        return path + "/scratch"
    }

    static func tableExists(_ cluster: SandboxCluster, _ database: String, _ table: String) async throws -> Bool {
        try await cluster.withSuperuser(database: database) { session in
            try await session.value("SELECT to_regclass(\(table)) IS NOT NULL", as: Bool.self)
        }
    }

    @Test("from S3 without local scratch; a data object re-compressed (same rows, other bytes) fails its check against the manifest and the table is dropped")
    func streamedFromS3() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3stream")
        let s3 = try await S3Sandbox.make("stream")
        defer { s3.remove() }
        let env = s3.environment(cluster)
        let export = try await CLI.run(["export-hypertable", "--db", cluster.url(database: database), "--table", "public.conditions",
                                        "--repo", s3.repository, "--json"], environment: env)
        try #require(export.exitCode == 0, "\(export.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(export.standardOutput.utf8)).id

        var streaming = env
        streaming["TSBACKUP_SCRATCH_DIR"] = try Self.unusableScratch(s3.scratch)
        let target = uniqueDatabaseName("s3stream_into")
        try await cluster.createDatabase(target)
        let imported = try await CLI.run(["import-hypertable", id, "--repo", s3.repository, "--target", cluster.url(database: target),
                                          "--jobs", "2", "--json"], environment: streaming)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        // Compared through both hypertable roots, by SQL.
        #expect(try await orderedRowsDigest(cluster, target, "public.conditions") == orderedRowsDigest(cluster, database, "public.conditions"))

        // Same rows, different bytes: only the size and SHA-256 check on the stream can tell.
        let manifest = try JSONOutput.decode(HypertableManifest.self, from: try await s3.get("backups/\(id)/manifest.json"))
        let victim = try #require(manifest.dataFiles.first).path
        let original = s3.scratch.path + "/original.zst"
        try await s3.get("backups/\(id)/\(victim)").write(to: URL(fileURLWithPath: original))
        let recompress = try await ProcessRunner.run("bash", ["-c", "zstd -d -c -q \"$1\" | zstd -q -19 -c > \"$1.again\"", "-", original])
        try #require(recompress.succeeded, "\(recompress.standardError)")
        let again = try Data(contentsOf: URL(fileURLWithPath: original + ".again"))
        try #require(again != (try Data(contentsOf: URL(fileURLWithPath: original))))
        try await s3.put("backups/\(id)/\(victim)", again)

        let second = uniqueDatabaseName("s3stream_bad")
        try await cluster.createDatabase(second)
        let refused = try await CLI.run(["import-hypertable", id, "--repo", s3.repository, "--target", cluster.url(database: second)],
                                        environment: streaming)
        #expect(refused.exitCode == 1, "\(refused.standardError)")
        #expect(refused.standardError.contains(victim) && refused.standardError.contains("is corrupt or was altered"), "\(refused.standardError)")
        #expect(try await !Self.tableExists(cluster, second, "public.conditions"), "the half-loaded table was dropped")
    }

    @Test("from an encrypted local repository without scratch; the import matches the source")
    func streamedFromEncryptedLocal() async throws {
        let (cluster, database) = try await makeSampleDatabase("encstream")
        let scratch = try ScratchDirectory("encstream")
        defer { scratch.remove() }
        let key = scratch.path + "/key"
        try Data("a passphrase for streaming\n".utf8).write(to: URL(fileURLWithPath: key))
        chmod(key, 0o600)
        let repository = scratch.path + "/repo"
        let env = ["PGPASSWORD": cluster.superuserPassword, "TSBACKUP_ENCRYPTION_KEY_FILE": key]
        let export = try await CLI.run(["export-hypertable", "--db", cluster.url(database: database), "--table", "public.conditions",
                                        "--repo", repository, "--json"], environment: env)
        try #require(export.exitCode == 0, "\(export.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(export.standardOutput.utf8)).id
        var streaming = env
        streaming["TSBACKUP_SCRATCH_DIR"] = try Self.unusableScratch(scratch)
        let target = uniqueDatabaseName("encstream_into")
        try await cluster.createDatabase(target)
        let imported = try await CLI.run(["import-hypertable", id, "--repo", repository, "--target", cluster.url(database: target),
                                          "--jobs", "2", "--json"], environment: streaming)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(try await orderedRowsDigest(cluster, target, "public.conditions") == orderedRowsDigest(cluster, database, "public.conditions"))
    }
}

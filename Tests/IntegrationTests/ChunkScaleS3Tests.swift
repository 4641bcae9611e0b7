import Foundation
import Testing
import TSBackup
import TSBackupSandbox

/// Custom-format chunk-batch archives in an S3 repository: the batched path writes one archive
/// per batch beside the main one, and each must upload, verify and restore like the rest.
@Suite("chunk scale: custom-format batches in an S3 repository")
struct ChunkScaleS3Tests {
    @Test("backup --format custom past the lock limit into S3, then verify and restore exactly", arguments: [false, true])
    func customBatchesOnS3(encrypted: Bool) async throws {
        try await SandboxCluster.with(ChunkScaleTests.lowLocks) { cluster in
            let database = "scale_s3"
            try await ChunkScaleTests.load(cluster, database)
            let s3 = try await S3Sandbox.make(encrypted ? "scaleenc" : "scale")
            defer { s3.remove() }
            let env = s3.environment(cluster, key: encrypted ? try s3.keyFile() : nil)

            let backup = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository,
                                            "--format", "custom", "--json"], environment: env)
            try #require(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            let show = try await CLI.run(["show", id, "--repo", s3.repository, "--json"], environment: env)
            let manifest = try JSONOutput.decode(BackupManifest.self, from: Data(show.standardOutput.utf8))
            #expect(manifest.format == .custom)
            let path = try #require(manifest.chunkPath)
            #expect(path.batches.count > 1)
            #expect(path.batches.reduce(0) { $0 + $1.chunks.count } == ChunkScaleTests.hours)
            // Every batch archive is an object of the entry, listed in the manifest.
            let keys = Set(try await s3.keys())
            for file in manifest.files {
                #expect(keys.contains("backups/\(id)/\(file.path)"), "\(file.path) is stored")
            }
            #expect(manifest.files.count > path.batches.count)

            let verify = try await CLI.run(["verify", id, "--repo", s3.repository, "--json"], environment: env)
            #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
            let report = try JSONOutput.decode(Verify.Report.self, from: Data(verify.standardOutput.utf8))
            #expect(report.filesChecked == manifest.files.count)

            // Restored on a server with ordinary settings; compared by SQL day by day.
            let target = try await SharedCluster.shared.cluster()
            let into = uniqueDatabaseName("scale_s3_restored")
            var restoreEnv = env
            restoreEnv["PGPASSWORD"] = target.superuserPassword
            let restore = try await CLI.run(["restore", id, "--repo", s3.repository, "--target", target.url(database: "postgres"),
                                             "--into", into, "--jobs", "2", "--json"], environment: restoreEnv)
            #expect(restore.exitCode == 0, "\(restore.standardOutput) \(restore.standardError)")
            let restoreReport = try? JSONOutput.decode(Restore.Report.self, from: Data(restore.standardOutput.utf8))
            #expect(restoreReport?.ok == true)
            let days = 0...(ChunkScaleTests.hours / 24)
            #expect(try await ChunkScaleTests.digests(target, into, days: days) == ChunkScaleTests.digests(cluster, database, days: days))
            try await target.withSuperuser { try await $0.execute("DROP DATABASE \(quoteIdentifier(into)) WITH (FORCE)") }
        }
    }
}

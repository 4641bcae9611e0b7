import Foundation
import Testing
import TSBackup
import TSBackupSandbox

@Suite("encrypted local repositories")
struct EncryptedLocalRepositoryTests {
    @Test("an encrypted local repository round-trips, refuses a wrong key and tampered files")
    func roundTripAndTampering() async throws {
        let (cluster, database) = try await makeSampleDatabase("encloc")
        let scratch = try ScratchDirectory("encloc")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let keyPath = scratch.path + "/key"
        try Data("local passphrase for tests\n".utf8).write(to: URL(fileURLWithPath: keyPath))
        chmod(keyPath, 0o600)
        let env = ["PGPASSWORD": cluster.superuserPassword, "TSBACKUP_SCRATCH_DIR": scratch.path]
        let keyed = ["--encryption-key-file", keyPath]

        let backup = try await runBackup(cluster, database, repository: repository, keyed, environment: ["TSBACKUP_SCRATCH_DIR": scratch.path])
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
        let entry = "\(repository)/backups/\(id)"
        // Stored encrypted: neither the manifest nor roles.sql is readable without the key.
        #expect((try? JSONOutput.decode(BackupManifest.self, from: Data(contentsOf: URL(fileURLWithPath: entry + "/manifest.json")))) == nil)
        #expect(!(String(decoding: try Data(contentsOf: URL(fileURLWithPath: entry + "/roles.sql")), as: UTF8.self)).contains("CREATE ROLE"))

        #expect(try await CLI.run(["list", "--repo", repository], environment: env).exitCode == 3)
        let wrongPath = scratch.path + "/wrong"
        try Data("another passphrase entirely\n".utf8).write(to: URL(fileURLWithPath: wrongPath))
        chmod(wrongPath, 0o600)
        #expect(try await CLI.run(["list", "--repo", repository, "--encryption-key-file", wrongPath], environment: env).exitCode == 3)
        #expect(try await CLI.run(["verify", id, "--repo", repository] + keyed, environment: env).exitCode == 0)

        let into = uniqueDatabaseName("encrestored")
        let restore = try await CLI.run(["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"), "--into", into] + keyed, environment: env)
        #expect(restore.exitCode == 0, "\(restore.standardError)")
        #expect(try await orderedRowsDigest(cluster, into, "public.conditions") == (try await orderedRowsDigest(cluster, database, "public.conditions")))
        // The decrypted scratch copy is gone.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).allSatisfy { !$0.hasPrefix("tsbackup-scratch") })

        // Tampered roles.sql: the restore refuses it, naming it.
        let rolesPath = entry + "/roles.sql"
        let roles = try Data(contentsOf: URL(fileURLWithPath: rolesPath))
        var altered = roles
        altered[altered.count - 3] ^= 0x01
        try altered.write(to: URL(fileURLWithPath: rolesPath))
        let refused = try await CLI.run(["restore", id, "--repo", repository, "--target", cluster.url(database: "postgres"),
                                         "--into", uniqueDatabaseName("enctamper")] + keyed, environment: env)
        #expect(refused.exitCode == 1, "\(refused.standardError)")
        #expect(refused.standardError.contains("backups/\(id)/roles.sql"))
        try roles.write(to: URL(fileURLWithPath: rolesPath))

        // Tampered manifest: show, verify and restore refuse it, naming it.
        let manifestPath = entry + "/manifest.json"
        var manifest = try Data(contentsOf: URL(fileURLWithPath: manifestPath))
        manifest[manifest.count / 2] ^= 0x01
        try manifest.write(to: URL(fileURLWithPath: manifestPath))
        let show = try await CLI.run(["show", id, "--repo", repository] + keyed, environment: env)
        #expect(show.exitCode == 1)
        #expect(show.standardError.contains("backups/\(id)/manifest.json"), "\(show.standardError)")
        let verify = try await CLI.run(["verify", id, "--repo", repository] + keyed, environment: env)
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains("backups/\(id)/manifest.json"))
    }

    @Test("a key given for a plain repository is refused; the first write decides")
    func plainRepositoryRefusesKey() async throws {
        let (cluster, database) = try await makeSampleDatabase("encplain")
        let scratch = try ScratchDirectory("encplain")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        #expect(try await runBackup(cluster, database, repository: repository).exitCode == 0)
        let keyPath = scratch.path + "/key"
        try Data("local passphrase for tests\n".utf8).write(to: URL(fileURLWithPath: keyPath))
        chmod(keyPath, 0o600)
        let result = try await CLI.run(["list", "--repo", repository, "--encryption-key-file", keyPath])
        #expect(result.exitCode == 5)
        #expect(result.standardError.contains("not encrypted"))
    }
}

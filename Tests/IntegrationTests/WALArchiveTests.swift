import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// A cluster archiving through the built `tsbackup wal-push`, and the helpers its tests share.
struct ArchivingCluster {
    let cluster: SandboxCluster
    let repository: String

    /// Starts a cluster whose archive_command pushes into `repository` (a directory the
    /// postgres user owns, or an s3:// URL with `environment` holding the store's settings).
    static func with<T>(repository: String, keyFile: String? = nil, environment: [String: String] = [:], executable: String = CLI.executable,
                        _ body: (ArchivingCluster) async throws -> T) async throws -> T {
        let archiving = SandboxCluster.Archiving(tsbackup: executable, repository: repository, keyFile: keyFile, environment: environment)
        return try await SandboxCluster.with(SandboxCluster.Options(archiving: archiving)) { cluster in
            try await body(ArchivingCluster(cluster: cluster, repository: repository))
        }
    }

    var systemIdentifier: UInt64 {
        get async throws {
            UInt64(try await cluster.withSuperuser { try await $0.value("SELECT system_identifier::text FROM pg_control_system()", as: String.self) })!
        }
    }

    /// Writes some rows, switches to a new segment and returns the name of the one completed.
    func writeAndSwitch(_ rows: Int = 1000) async throws -> String {
        try await cluster.withSuperuser { session in
            try await session.execute("CREATE TABLE IF NOT EXISTS walt (id int, note text)")
            try await session.execute("INSERT INTO walt SELECT g, md5(g::text) FROM generate_series(1, \(rows)) g")
            return try await session.value("SELECT pg_walfile_name(pg_switch_wal())", as: String.self)
        }
    }

    struct ArchiverState {
        var archived: Int64
        var lastArchived: String?
        var failed: Int64
    }

    func archiver() async throws -> ArchiverState {
        try await cluster.withSuperuser { session in
            let (archived, last, failed) = try await session.row("SELECT archived_count, last_archived_wal, failed_count FROM pg_stat_archiver",
                                                                as: (Int64, String?, Int64).self)
            return ArchiverState(archived: archived, lastArchived: last, failed: failed)
        }
    }

    /// Polls pg_stat_archiver until `segment` (or a later one) is archived; the timeout is a hang
    /// guard only.
    func waitUntilArchived(_ segment: String, timeout: Duration = .seconds(600)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let last = try await archiver().lastArchived, last >= segment { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        let state = try await archiver()
        Issue.record("\(segment) was not archived within \(timeout): archived \(state.archived), failed \(state.failed), last \(state.lastArchived ?? "-"); server log: \(cluster.serverLog().suffix(3000))")
        throw SandboxError("archiving hung")
    }

    /// Polls until archive_command has failed at least `count` times.
    func waitUntilFailed(atLeast count: Int64, timeout: Duration = .seconds(600)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await archiver().failed >= count { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("archive_command did not fail \(count) times within \(timeout); server log: \(cluster.serverLog().suffix(3000))")
        throw SandboxError("archiving did not fail")
    }

    /// The segment's bytes as the server wrote them (read while it is still in pg_wal).
    func segment(_ name: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: cluster.dataDirectory + "/pg_wal/" + name))
    }
}

/// A directory the postgres user owns (archive_command writes a local repository as postgres).
func postgresOwnedRepository(_ scratch: ScratchDirectory) throws -> String {
    let path = scratch.path + "/repo"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try SandboxCluster.handToPostgres(path)
    return path
}

/// A raw-key file the postgres user owns, mode 0600.
func postgresKeyFile(_ scratch: ScratchDirectory) throws -> String {
    let path = scratch.path + "/wal.key"
    try Data((String(repeating: "5a", count: 32) + "\n").utf8).write(to: URL(fileURLWithPath: path))
    chmod(path, 0o600)
    try SandboxCluster.handToPostgres(path)
    return path
}

@Suite("WAL archive: wal-push from archive_command, wal-fetch, refusals")
struct WALArchiveTests {
    /// Through `tsbackup` and through `tsbackup-wal` (which serves plain local repositories
    /// itself and hands encrypted ones to tsbackup), in archive_command and by hand.
    @Test("segments arrive through archive_command; fetch is byte-identical; repeats, conflicts, misses and tampering",
          arguments: [false, true], ["tsbackup", "tsbackup-wal"])
    func localArchive(encrypted: Bool, binary: String) async throws {
        let scratch = try ScratchDirectory((encrypted ? "walenc" : "wal") + (binary == "tsbackup" ? "" : "slim"))
        defer { scratch.remove() }
        let repo = try postgresOwnedRepository(scratch)
        let key = encrypted ? try postgresKeyFile(scratch) : nil
        let env = key.map { ["TSBACKUP_ENCRYPTION_KEY_FILE": $0] } ?? [:]
        let executable = binary == "tsbackup" ? CLI.executable : CLI.walExecutable
        try await ArchivingCluster.with(repository: repo, keyFile: key, executable: executable) { archiving in
            let segment = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(segment)
            let original = try archiving.segment(segment)
            let system = try await archiving.systemIdentifier

            // The layout: the marker names the cluster; the object sits under its id and timeline.
            let object = "\(repo)/wal/\(system)/00000001/\(segment).zst"
            #expect(FileManager.default.fileExists(atPath: object))
            let stored = try Data(contentsOf: URL(fileURLWithPath: object))
            #expect(stored.count < original.count, "compressed")
            #expect(stored.starts(with: Array((encrypted ? "TSBENC" : "TSBWAL01").utf8)))
            if !encrypted {
                let marker = try JSONOutput.decode(WALArchiveMarker.self, from: Data(contentsOf: URL(fileURLWithPath: repo + "/wal/archive.json")))
                #expect(marker.system == system && marker.walSegmentSize == 16 << 20)
            }

            // Round trip.
            let dest = scratch.path + "/RECOVERYXLOG"
            let fetch = try await CLI.run(["wal-fetch", segment, dest, "--repo", repo], environment: env, executable: executable)
            #expect(fetch.exitCode == 0, "\(fetch.standardError)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: dest)) == original)
            #expect(!FileManager.default.fileExists(atPath: dest + ".tsbackup-tmp"))

            // The same content again: success, said on stderr.
            let again = try await CLI.run(["wal-push", archiving.cluster.dataDirectory + "/pg_wal/" + segment, "--repo", repo], environment: env, executable: executable)
            #expect(again.exitCode == 0, "\(again.standardError)")
            #expect(again.standardError.contains("already archived"))

            // Different content under the same name: refused, naming the segment; the archive keeps the first.
            var altered = original
            altered[100_000] ^= 0xFF
            let forged = scratch.path + "/" + segment
            try altered.write(to: URL(fileURLWithPath: forged))
            let conflict = try await CLI.run(["wal-push", forged, "--repo", repo], environment: env, executable: executable)
            #expect(conflict.exitCode == 1)
            #expect(conflict.standardError.contains(segment) && conflict.standardError.contains("different content"), "\(conflict.standardError)")
            // Both copies named by their whole SHA-256, as sha256sum prints it.
            #expect(conflict.standardError.contains(FileSystem.sha256(of: original)) && conflict.standardError.contains(FileSystem.sha256(of: altered)), "\(conflict.standardError)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: object)) == stored)

            // Past the end of the archive, and a history file that never existed: exit 1, quietly.
            for missing in ["0000000100000000000000F0", "00000009.history"] {
                let miss = try await CLI.run(["wal-fetch", missing, scratch.path + "/miss", "--repo", repo], environment: env, executable: executable)
                #expect(miss.exitCode == 1)
                #expect(miss.standardError.isEmpty, "\(miss.standardError)")
                #expect(!FileManager.default.fileExists(atPath: scratch.path + "/miss"))
            }

            // A tampered object is refused, naming it, and nothing is written.
            var tampered = stored
            tampered[tampered.count - 100] ^= 0x01
            try tampered.write(to: URL(fileURLWithPath: object))
            let bad = scratch.path + "/tampered"
            let refused = try await CLI.run(["wal-fetch", segment, bad, "--repo", repo], environment: env, executable: executable)
            #expect(refused.exitCode == 1)
            #expect(refused.standardError.contains(segment), "\(refused.standardError)")
            #expect(!FileManager.default.fileExists(atPath: bad))

            // A header declaring more than PostgreSQL's largest segment: refused, saying so.
            if !encrypted {
                var oversized = stored
                oversized.replaceSubrange(12..<20, with: [0, 0, 0, 0, 0x40, 0, 0, 1])
                try oversized.write(to: URL(fileURLWithPath: object))
                let big = try await CLI.run(["wal-fetch", segment, bad, "--repo", repo], executable: executable)
                #expect(big.exitCode == 1 && big.standardError.contains("1 GB"), "\(big.standardError)")
                #expect(!FileManager.default.fileExists(atPath: bad))
            }

            if encrypted {
                let noKey = try await CLI.run(["wal-fetch", segment, bad, "--repo", repo], executable: executable)
                #expect(noKey.exitCode == 3, "\(noKey.standardError)")
            }
        }
    }

    @Test("a second cluster pushing into the same repository is refused, and its archiver counts failures")
    func secondCluster() async throws {
        let scratch = try ScratchDirectory("wal2")
        defer { scratch.remove() }
        let repo = try postgresOwnedRepository(scratch)
        let first = try await ArchivingCluster.with(repository: repo) { archiving in
            let segment = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(segment)
            return try await archiving.systemIdentifier
        }
        try await ArchivingCluster.with(repository: repo) { other in
            let system = try await other.systemIdentifier
            #expect(system != first)
            let before = try await other.archiver().failed
            let segment = try await other.writeAndSwitch()
            try await other.waitUntilFailed(atLeast: before + 1)
            #expect(try await other.archiver().lastArchived == nil)
            #expect(!FileManager.default.fileExists(atPath: "\(repo)/wal/\(system)"))
            let push = try await CLI.run(["wal-push", other.cluster.dataDirectory + "/pg_wal/" + segment, "--repo", repo])
            #expect(push.exitCode == 5)
            #expect(push.standardError.contains("another PostgreSQL cluster") && push.standardError.contains(String(first)), "\(push.standardError)")
        }
    }

    @Test("archiving into S3 (moto) and fetching back, plain and encrypted", arguments: [false, true])
    func s3Archive(encrypted: Bool) async throws {
        let s3 = try await S3Sandbox.make(encrypted ? "walenc" : "wal")
        defer { s3.remove() }
        let key = encrypted ? try postgresKeyFile(s3.scratch) : nil
        let serverEnv = s3.moto.environment(endpoint: nil)
        var env = s3.environment()
        if let key { env["TSBACKUP_ENCRYPTION_KEY_FILE"] = key }
        try await ArchivingCluster.with(repository: s3.repository, keyFile: key, environment: serverEnv) { archiving in
            let segment = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(segment)
            let original = try archiving.segment(segment)
            let system = try await archiving.systemIdentifier
            let keys = try await s3.keys()
            #expect(keys.contains("wal/archive.json"))
            #expect(keys.contains("wal/\(system)/00000001/\(segment).zst"))

            let dest = s3.scratch.path + "/fetched"
            let fetch = try await CLI.run(["wal-fetch", segment, dest, "--repo", s3.repository], environment: env)
            #expect(fetch.exitCode == 0, "\(fetch.standardError)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: dest)) == original)

            let again = try await CLI.run(["wal-push", archiving.cluster.dataDirectory + "/pg_wal/" + segment, "--repo", s3.repository], environment: env)
            #expect(again.exitCode == 0 && again.standardError.contains("already archived"), "\(again.standardError)")

            let miss = try await CLI.run(["wal-fetch", "0000000100000000000000F0", dest + "2", "--repo", s3.repository], environment: env)
            #expect(miss.exitCode == 1 && miss.standardError.isEmpty, "\(miss.standardError)")

            var stored = try await s3.get("wal/\(system)/00000001/\(segment).zst")
            stored[stored.count - 50] ^= 0x10
            try await s3.put("wal/\(system)/00000001/\(segment).zst", stored)
            let refused = try await CLI.run(["wal-fetch", segment, dest + "3", "--repo", s3.repository], environment: env)
            #expect(refused.exitCode == 1 && refused.standardError.contains(segment), "\(refused.standardError)")
            #expect(!FileManager.default.fileExists(atPath: dest + "3"))
        }
    }

    @Test("logical backups and the WAL archive share a repository: list, verify, gc and delete leave wal/ alone")
    func coexistence() async throws {
        let scratch = try ScratchDirectory("walmix")
        defer { scratch.remove() }
        let repo = try postgresOwnedRepository(scratch)
        try await ArchivingCluster.with(repository: repo) { archiving in
            let segment = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(segment)
            let database = uniqueDatabaseName("walmix")
            try await archiving.cluster.createDatabase(database)
            try await archiving.cluster.withSuperuser(database: database) { try await SampleData(.small).load(into: $0) }
            let env = ["PGPASSWORD": archiving.cluster.superuserPassword]
            let walBefore = try FileSystem.regularFiles(under: repo + "/wal").sorted()

            let backup = try await CLI.run(["backup", "--db", archiving.cluster.url(database: database), "--repo", repo, "--json"], environment: env)
            #expect(backup.exitCode == 0, "\(backup.standardError)")
            let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
            // Archiving keeps working while and after the dump is taken.
            let next = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(next)

            let list = try await CLI.run(["list", "--repo", repo, "--json"], environment: env)
            #expect(list.exitCode == 0, "\(list.standardError)")
            #expect(try listed(list).map(\.id) == [id])
            let verify = try await CLI.run(["verify", id, "--repo", repo], environment: env)
            #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
            let gc = try await CLI.run(["repo", "gc", "--repo", repo], environment: env)
            #expect(gc.exitCode == 0, "\(gc.standardError)")
            let delete = try await CLI.run(["delete", id, "--repo", repo, "--yes"], environment: env)
            #expect(delete.exitCode == 0, "\(delete.standardError)")
            let walAfter = try FileSystem.regularFiles(under: repo + "/wal").sorted()
            #expect(Set(walBefore).isSubset(of: Set(walAfter)), "no WAL object was removed")
            #expect(walAfter.contains { $0.hasSuffix(next + ".zst") })
            let fetch = try await CLI.run(["wal-fetch", segment, scratch.path + "/back", "--repo", repo], environment: env)
            #expect(fetch.exitCode == 0, "\(fetch.standardError)")
        }
    }
}

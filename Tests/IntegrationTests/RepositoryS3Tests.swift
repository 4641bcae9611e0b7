import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// A bucket on the shared moto, and how the CLI reaches it.
struct S3Sandbox {
    let moto: MotoServer
    let bucket: String
    let scratch: ScratchDirectory

    static func make(_ name: String) async throws -> S3Sandbox {
        let moto = try await SharedMoto.shared.server()
        let bucket = "tsb-\(name)-\(UUID().uuidString.prefix(8).lowercased())"
        let client = try await moto.client(bucket: bucket, create: true)
        try await client.shutdown()
        return S3Sandbox(moto: moto, bucket: bucket, scratch: try ScratchDirectory("s3-\(name)"))
    }

    var repository: String { "s3://\(bucket)/prod/db" }

    /// The CLI's environment for this store (and a key file when `key` is set).
    func environment(_ cluster: SandboxCluster? = nil, key: String? = nil, endpoint: URL? = nil) -> [String: String] {
        var environment = moto.environment(endpoint: endpoint)
        environment["TSBACKUP_SCRATCH_DIR"] = scratch.path
        if let cluster { environment["PGPASSWORD"] = cluster.superuserPassword }
        if let key { environment["TSBACKUP_ENCRYPTION_KEY_FILE"] = key }
        return environment
    }

    /// A passphrase key file (mode 0600).
    func keyFile(_ name: String = "key", passphrase: String = "correct horse battery staple") throws -> String {
        let path = scratch.path + "/" + name
        try Data((passphrase + "\n").utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o600)
        return path
    }

    /// Every key in the bucket under the repository's prefix, relative to it.
    func keys() async throws -> [String] {
        let client = try await moto.client(bucket: bucket, create: false)
        defer { Task { try? await client.shutdown() } }
        return try await client.listObjects(prefix: "prod/db/").map { String($0.key.dropFirst("prod/db/".count)) }
    }

    func get(_ key: String) async throws -> Data {
        let client = try await moto.client(bucket: bucket, create: false)
        let data = try await client.getObject("prod/db/" + key)
        try await client.shutdown()
        return data
    }

    func put(_ key: String, _ data: Data) async throws {
        let client = try await moto.client(bucket: bucket, create: false)
        try await client.putObject("prod/db/" + key, data: data)
        try await client.shutdown()
    }

    func remove() { scratch.remove() }
}

func listed(_ result: ProcessResult) throws -> [(id: String, state: String)] {
    struct Row: Decodable { var id: String; var state: String }
    return try JSONOutput.decode([Row].self, from: Data(result.standardOutput.utf8)).map { ($0.id, $0.state) }
}

@Suite("repositories on S3 (moto, signatures checked) and encrypted repositories")
struct RepositoryS3Tests {
    @Test("backup, list, show, verify, restore and delete round-trip through S3", arguments: [false, true])
    func roundTrip(encrypted: Bool) async throws {
        let (cluster, database) = try await makeSampleDatabase(encrypted ? "s3enc" : "s3rt")
        let s3 = try await S3Sandbox.make(encrypted ? "enc" : "plain")
        defer { s3.remove() }
        let env = s3.environment(cluster, key: encrypted ? try s3.keyFile() : nil)

        // The directory format, forced (a database this small gets the custom format): its
        // per-table objects are what the corruption check below flips.
        let backup = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository, "--json", "--format", "directory"], environment: env)
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8))
        let keys = try await s3.keys()
        #expect(keys.contains("tsbackup-repository.json"))
        #expect(keys.contains("backups/\(summary.id)/manifest.json"))
        #expect(keys.contains("backups/\(summary.id)/dump/toc.dat"))
        #expect(!keys.contains("lock"), "the lease is released")
        #expect(!keys.contains("backups/\(summary.id)/run.json"))
        let roles = try await s3.get("backups/\(summary.id)/roles.sql")
        #expect(String(decoding: roles, as: UTF8.self).contains("CREATE ROLE") == !encrypted)
        // Nothing staged is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: s3.scratch.path).allSatisfy { !$0.hasPrefix("tsbackup-") })

        let list = try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: env)
        #expect(list.exitCode == 0, "\(list.standardError)")
        #expect(try listed(list).map(\.id) == [summary.id])
        #expect(try listed(list).map(\.state) == ["complete"])
        // The service's cached listing (one ListObjectsV2 with ETags) reads the same entries as
        // a full read of every manifest, and reuses them while the ETags stay.
        let access = RepositoryAccess(url: try RepositoryURL.parse(s3.repository), encryptionKeyFile: encrypted ? try s3.keyFile() : nil,
                                      environment: env)
        let cache = EntryListingCache()
        try await access.with(create: false) { repo in
            let direct = try await repo.entries()
            let first = try await cache.entries(of: repo)
            let second = try await cache.entries(of: repo)
            #expect(first.map(\.id) == direct.map(\.id) && second.map(\.id) == direct.map(\.id))
            #expect(first.map(\.state) == direct.map(\.state) && second.first?.manifest == direct.first?.manifest)
        }
        #expect(cache.counts.reads == 1 && cache.counts.hits == 1, "\(cache.counts)")

        let show = try await CLI.run(["show", summary.id, "--repo", s3.repository, "--json"], environment: env)
        #expect(show.exitCode == 0)
        let manifest = try JSONOutput.decode(BackupManifest.self, from: Data(show.standardOutput.utf8))
        #expect(manifest.id == summary.id && manifest.status == .complete)

        let verify = try await CLI.run(["verify", summary.id, "--repo", s3.repository, "--json"], environment: env)
        #expect(verify.exitCode == 0, "\(verify.standardOutput) \(verify.standardError)")
        let report = try JSONOutput.decode(Verify.Report.self, from: Data(verify.standardOutput.utf8))
        #expect(report.filesChecked == manifest.files.count && report.bytesChecked == manifest.totalFileBytes)

        let into = uniqueDatabaseName("s3restored")
        let restore = try await CLI.run(["restore", summary.id, "--repo", s3.repository, "--target", cluster.url(database: "postgres"),
                                         "--into", into, "--json"], environment: env)
        #expect(restore.exitCode == 0, "\(restore.standardError)")
        // Counted through the hypertable roots of both databases, not from what was copied.
        let source = try await orderedRowsDigest(cluster, database, "public.conditions")
        #expect(try await orderedRowsDigest(cluster, into, "public.conditions") == source)
        #expect(try FileManager.default.contentsOfDirectory(atPath: s3.scratch.path).allSatisfy { !$0.hasPrefix("tsbackup-") })

        let delete = try await CLI.run(["delete", summary.id, "--repo", s3.repository, "--yes"], environment: env)
        #expect(delete.exitCode == 0, "\(delete.standardError)")
        #expect(try await s3.keys() == ["tsbackup-repository.json"])
        // Deleted beside the cache: gone from its next listing.
        let afterDelete = try await access.with(create: false) { try await cache.entries(of: $0) }
        #expect(afterDelete.isEmpty)
    }

    @Test("export-hypertable and import-hypertable round-trip through S3", arguments: [false, true])
    func hypertableRoundTrip(encrypted: Bool) async throws {
        let (cluster, database) = try await makeSampleDatabase(encrypted ? "s3hte" : "s3ht")
        let s3 = try await S3Sandbox.make(encrypted ? "htenc" : "ht")
        defer { s3.remove() }
        let env = s3.environment(cluster, key: encrypted ? try s3.keyFile() : nil)
        let export = try await CLI.run(["export-hypertable", "--db", cluster.url(database: database), "--table", "public.conditions",
                                        "--repo", s3.repository, "--json"], environment: env)
        #expect(export.exitCode == 0, "\(export.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(export.standardOutput.utf8))
        #expect(try await CLI.run(["verify", summary.id, "--repo", s3.repository], environment: env).exitCode == 0)

        let target = uniqueDatabaseName("s3import")
        try await cluster.createDatabase(target)
        let imported = try await CLI.run(["import-hypertable", summary.id, "--repo", s3.repository, "--target", cluster.url(database: target),
                                          "--jobs", "2", "--json"], environment: env)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        let report = try JSONOutput.decode(HypertableImport.Report.self, from: Data(imported.standardOutput.utf8))
        #expect(report.verified)
        // Counted through the hypertable roots of both databases.
        let source = try await orderedRowsDigest(cluster, database, "public.conditions")
        #expect(try await orderedRowsDigest(cluster, target, "public.conditions") == source)
        #expect(try FileManager.default.contentsOfDirectory(atPath: s3.scratch.path).allSatisfy { !$0.hasPrefix("tsbackup-") })
    }

    @Test("a wrong secret, an unreachable endpoint and a missing bucket are refused with their exit codes")
    func badStores() async throws {
        let s3 = try await S3Sandbox.make("bad")
        defer { s3.remove() }
        var wrongSecret = s3.environment()
        wrongSecret["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        let denied = try await CLI.run(["list", "--repo", s3.repository], environment: wrongSecret)
        #expect(denied.exitCode == 3, "\(denied.standardError)")
        #expect(denied.standardError.contains("SignatureDoesNotMatch"), "\(denied.standardError)")
        #expect(!denied.standardError.contains("not-the-secret") && !denied.standardError.contains(s3.moto.credentials.secretAccessKey))

        let closed = try SandboxCluster.freeLoopbackPort()
        let unreachable = try await CLI.run(["list", "--repo", s3.repository],
                                            environment: s3.environment(endpoint: URL(string: "http://127.0.0.1:\(closed)")!))
        #expect(unreachable.exitCode == 2, "\(unreachable.standardError)")

        let missing = try await CLI.run(["list", "--repo", "s3://no-such-bucket-\(UUID().uuidString.prefix(6).lowercased())/x"], environment: s3.environment())
        #expect(missing.exitCode == 4, "\(missing.standardError)")
        #expect(missing.standardError.contains("does not exist"))

        let notARepository = try await CLI.run(["list", "--repo", s3.repository], environment: s3.environment())
        #expect(notARepository.exitCode == 4)
        let badURL = try await CLI.run(["list", "--repo", "ftp://host/x"], environment: s3.environment())
        #expect(badURL.exitCode == 64)
    }

    @Test("an encrypted S3 repository refuses a missing or wrong key, and tampered objects, naming them")
    func encryptedTampering() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3tamper")
        let s3 = try await S3Sandbox.make("tamper")
        defer { s3.remove() }
        let key = try s3.keyFile()
        let env = s3.environment(cluster, key: key)
        let backup = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository, "--json"], environment: env)
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id

        let noKey = try await CLI.run(["list", "--repo", s3.repository], environment: s3.environment(cluster))
        #expect(noKey.exitCode == 3, "\(noKey.standardError)")
        let wrong = try s3.keyFile("wrong", passphrase: "a different passphrase")
        let wrongKey = try await CLI.run(["list", "--repo", s3.repository], environment: s3.environment(cluster, key: wrong))
        #expect(wrongKey.exitCode == 3, "\(wrongKey.standardError)")
        #expect(wrongKey.standardError.lowercased().contains("key"))

        // A data object with one byte changed: verify names it. The default backup of a database
        // this small is one custom-format archive (a directory archive's zstd files otherwise).
        let dataKey = try #require(try await s3.keys().first {
            $0 == "backups/\(id)/dump.pgdump" || ($0.hasPrefix("backups/\(id)/dump/") && $0.hasSuffix(".dat.zst"))
        })
        var data = try await s3.get(dataKey)
        let original = data
        data[data.count / 2] ^= 0xFF
        try await s3.put(dataKey, data)
        let verify = try await CLI.run(["verify", id, "--repo", s3.repository], environment: env)
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains(String(dataKey.dropFirst("backups/\(id)/".count))), "\(verify.standardOutput)")
        try await s3.put(dataKey, original)

        // roles.sql replaced by someone without the key: a restore refuses it before running anything.
        let rolesKey = "backups/\(id)/roles.sql"
        let roles = try await s3.get(rolesKey)
        try await s3.put(rolesKey, Data("CREATE ROLE intruder SUPERUSER LOGIN;\n".utf8))
        let into = uniqueDatabaseName("tampered")
        let restore = try await CLI.run(["restore", id, "--repo", s3.repository, "--target", cluster.url(database: "postgres"), "--into", into], environment: env)
        #expect(restore.exitCode == 1, "\(restore.standardError)")
        #expect(restore.standardError.contains(rolesKey))
        #expect(try await databaseExists(cluster, into) == false)
        try await s3.put(rolesKey, roles)

        // The manifest swapped for another entry's or edited: refused, naming it.
        let manifestKey = "backups/\(id)/manifest.json"
        var manifest = try await s3.get(manifestKey)
        manifest[manifest.count - 5] ^= 0x01
        try await s3.put(manifestKey, manifest)
        let show = try await CLI.run(["show", id, "--repo", s3.repository], environment: env)
        #expect(show.exitCode == 1)
        #expect(show.standardError.contains(manifestKey), "\(show.standardError)")
        let restoreAgain = try await CLI.run(["restore", id, "--repo", s3.repository, "--target", cluster.url(database: "postgres"), "--into", into], environment: env)
        #expect(restoreAgain.exitCode == 1)
        #expect(restoreAgain.standardError.contains(manifestKey))
        let list = try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: env)
        #expect(try listed(list).allSatisfy { $0.state != "complete" })
    }

    @Test("a backup killed mid-run never lists complete; the next run removes its leftovers")
    func killedRun() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3kill")
        let s3 = try await S3Sandbox.make("kill")
        defer { s3.remove() }
        // The fake pg_dump marks that it runs: by then the run has staged its entry in the bucket.
        let marker = s3.scratch.path + "/pg_dump-started"
        let fake = try s3.scratch.fakePgDump("touch \"\(marker)\"; sleep 600")
        var env = s3.environment(cluster)
        env["PATH"] = fake["PATH"]
        let script = """
            "$TSBACKUP" backup --db "$URL" --repo "$REPO" > /dev/null 2>&1 &
            pid=$!
            for i in $(seq 1 6000); do [ -e "$MARK" ] && break; sleep 0.1; done
            kill -9 "$pid"; wait "$pid" 2>/dev/null
            pkill -f "$FAKE" || true
            """
        var scriptEnv = env
        scriptEnv["TSBACKUP"] = CLI.executable
        scriptEnv["URL"] = cluster.url(database: database)
        scriptEnv["REPO"] = s3.repository
        scriptEnv["FAKE"] = s3.scratch.path + "/bin/pg_dump"
        scriptEnv["MARK"] = marker
        _ = try await ProcessRunner.run("bash", ["-c", script], environment: scriptEnv)
        try #require(FileManager.default.fileExists(atPath: marker), "the backup never reached pg_dump")

        let list = try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: env)
        #expect(list.exitCode == 0, "\(list.standardError)")
        let rows = try listed(list)
        #expect(rows.count == 1 && rows.allSatisfy { $0.state == "incomplete" }, "\(list.standardOutput)")
        let killedID = try #require(rows.first?.id)
        #expect(try await CLI.run(["verify", killedID, "--repo", s3.repository], environment: env).exitCode == 1)

        // A staging directory a run killed after storing its manifest (before removing it) would leave.
        let staged = try FileManager.default.contentsOfDirectory(atPath: s3.scratch.path).filter { $0.hasPrefix("tsbackup-staging") }
        let killedStaging = try #require(staged.first { $0.hasSuffix("-" + killedID) }, "\(staged)")
        try FileManager.default.createDirectory(atPath: s3.scratch.path + "/" + killedStaging.dropLast(killedID.count) + "20200101T000000Z/archive",
                                                withIntermediateDirectories: true)

        // The dead run's lease is stale (its process is gone): the next backup takes it over and cleans up.
        let next = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository, "--json"],
                                     environment: s3.environment(cluster))
        #expect(next.exitCode == 0, "\(next.standardError)")
        let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(next.standardOutput.utf8))
        #expect(summary.warnings.contains { $0.contains("previous run") && $0.contains(killedID) })
        let after = try listed(try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: env))
        #expect(after.map(\.id) == [summary.id] && after.map(\.state) == ["complete"])
        #expect(try await s3.keys().allSatisfy { !$0.hasPrefix("backups/\(killedID)/") })
        #expect(try FileManager.default.contentsOfDirectory(atPath: s3.scratch.path).allSatisfy { !$0.hasPrefix("tsbackup-staging") })
    }

    @Test("a local disk that fills while staging fails the backup (exit 1) and removes the staging")
    func stagingDiskFills() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3disk")
        let s3 = try await S3Sandbox.make("disk")
        defer { s3.remove() }
        let mountPoint = s3.scratch.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try await ProcessRunner.run("mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", mountPoint])
        try #require(mount.succeeded, "mounting a tmpfs needs root: \(mount.standardError)")
        defer { Task { _ = try? await ProcessRunner.run("umount", [mountPoint]) } }
        // Room for the preflight (more than the database's size), not for what this pg_dump writes.
        let fake = try s3.scratch.fakePgDump("""
            for a in "$@"; do case "$a" in --file=*) f="${a#--file=}";; esac; done
            mkdir -p "$f"
            dd if=/dev/zero of="$f/1.dat" bs=1M count=128 2>/dev/null || { echo "pg_dump: error: could not write to output file: No space left on device" >&2; exit 1; }
            """)
        var env = s3.environment(cluster)
        env["TSBACKUP_SCRATCH_DIR"] = mountPoint
        env["PATH"] = fake["PATH"]
        let result = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository], environment: env)
        #expect(result.exitCode == 1, "\(result.standardError)")
        #expect(result.standardError.contains("No space left"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint).isEmpty, "the staging is removed")
        let rows = try listed(try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: s3.environment(cluster)))
        #expect(rows.allSatisfy { $0.state == "failed" })
        _ = try await ProcessRunner.run("umount", [mountPoint])
    }

    @Test("a long run renews its lease, so it never looks stale to another writer")
    func leaseRenewal() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3renew")
        let s3 = try await S3Sandbox.make("renew")
        defer { s3.remove() }
        // A forty-second lease and a pg_dump that runs until the test lets it go: only renewal keeps
        // the lease alive. The test waits for states (the clock past the first expiry and a renewed
        // lease in the bucket), never for a fixed time, so a loaded machine only makes it slower.
        // The length is the slack a renewal (every third of it) has before gc would find the lease
        // expired: 27 s for a late renewal on a loaded machine, where 20 s left 13.
        let letGo = s3.scratch.path + "/let-pg_dump-go"
        let fake = try s3.scratch.fakePgDump("""
            i=0; while [ ! -e "\(letGo)" ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done; exit 1
            """)
        var env = s3.environment(cluster)
        env["PATH"] = fake["PATH"]
        env["TSBACKUP_S3_LEASE_SECONDS"] = "40"
        let backup = Task { try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository], environment: env) }
        defer { _ = FileManager.default.createFile(atPath: letGo, contents: nil) }
        struct Lease: Decodable { var expires: Date }
        func leaseExpiry() async -> Date? {
            guard let data = try? await s3.get("lock") else { return nil }
            return (try? JSONOutput.decode(Lease.self, from: data))?.expires
        }
        var started = false
        for _ in 0..<6000 where !started {  // a hang guard of ten minutes
            started = try await s3.keys().contains { $0.hasSuffix("/run.json") }
            if !started { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(started, "the backup never started its entry")
        let firstExpiry = try #require(await leaseExpiry(), "the run holds no lease")
        var renewed = false
        for _ in 0..<1200 where !renewed {  // a hang guard of ten minutes
            if Date() > firstExpiry, let now = await leaseExpiry(), now > firstExpiry { renewed = true }
            if !renewed { try await Task.sleep(for: .milliseconds(500)) }
        }
        try #require(renewed, "the lease was never renewed past its first expiry")
        var gcEnvironment = s3.environment()
        gcEnvironment["TSBACKUP_S3_LEASE_SECONDS"] = "40"
        let gc = try await CLI.run(["repo", "gc", "--repo", s3.repository], environment: gcEnvironment)
        #expect(gc.exitCode == 5, "\(gc.standardOutput) \(gc.standardError)")
        #expect(gc.standardError.contains("in use by"))
        _ = FileManager.default.createFile(atPath: letGo, contents: nil)
        let result = try await backup.value
        #expect(result.exitCode == 1, "the fake pg_dump fails the run: \(result.standardError)")
        #expect(!(try await s3.keys()).contains("lock"), "the lease is released when the run ends")
    }

    @Test("a live lease refuses a second writer; gc removes leftovers")
    func leaseAndGC() async throws {
        let s3 = try await S3Sandbox.make("lease")
        defer { s3.remove() }
        let env = s3.environment()
        // Create the repository, then plant a leftover entry and a lease of a live run elsewhere.
        try await s3.put("tsbackup-repository.json", Data(#"{"format_version": 1, "kind": "tsbackup-repository", "layout": "backups/<id>/manifest.json"}"#.utf8))
        let gc = try await CLI.run(["repo", "gc", "--repo", s3.repository], environment: env)
        #expect(gc.exitCode == 0, "\(gc.standardError)")
        #expect(gc.standardOutput.contains("Nothing to remove"))
        try await s3.put("backups/20200101T000000Z/dump/toc.dat", Data("x".utf8))
        let future = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3600))
        let now = ISO8601DateFormatter().string(from: Date())
        try await s3.put("lock", Data(#"{"holder": "tsbackup", "host": "elsewhere", "pid": 1, "command": "backup", "acquired": "\#(now)", "expires": "\#(future)"}"#.utf8))
        let busy = try await CLI.run(["repo", "gc", "--repo", s3.repository], environment: env)
        #expect(busy.exitCode == 5)
        #expect(busy.standardError.contains("in use by") && busy.standardError.contains("elsewhere"))

        // An expired lease is stale: reported and taken over.
        let past = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
        try await s3.put("lock", Data(#"{"holder": "tsbackup", "host": "elsewhere", "pid": 1, "command": "backup", "acquired": "\#(now)", "expires": "\#(past)"}"#.utf8))
        let cleaned = try await CLI.run(["repo", "gc", "--repo", s3.repository], environment: env)
        #expect(cleaned.exitCode == 0, "\(cleaned.standardError)")
        #expect((cleaned.standardOutput + cleaned.standardError).contains("20200101T000000Z"))
        #expect(cleaned.standardError.contains("elsewhere") && cleaned.standardError.contains("expired"))
        #expect(try await s3.keys() == ["tsbackup-repository.json"])
    }

    @Test("backups through a faulty network complete and verify, or fail cleanly")
    func faultProxy() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3fault")
        let s3 = try await S3Sandbox.make("fault")
        defer { s3.remove() }
        let proxy = try await FaultProxy.start(upstreamPort: s3.moto.port)
        defer { Task { await proxy.stop() } }
        let env = s3.environment(cluster, endpoint: proxy.endpoint)
        for rule in [FaultProxy.Rule(mode: .slowDown, count: 3), FaultProxy.Rule(mode: .internalError, count: 2, method: "PUT"),
                     FaultProxy.Rule(mode: .reset, count: 2, method: "PUT"), FaultProxy.Rule(mode: .reset, count: 1, method: "GET")] {
            try await proxy.set(rule)
            let backup = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository, "--json"], environment: env)
            try await proxy.set(.none)
            let rows = try listed(try await CLI.run(["list", "--repo", s3.repository, "--json"], environment: s3.environment(cluster)))
            if backup.exitCode == 0 {
                let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
                #expect(rows.contains { $0.id == id && $0.state == "complete" })
                let verify = try await CLI.run(["verify", id, "--repo", s3.repository], environment: s3.environment(cluster))
                #expect(verify.exitCode == 0, "\(rule.mode): \(verify.standardOutput)")
                // The faults the proxy injected were retried, and every retry is on record.
                let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8))
                #expect(summary.warnings.contains { $0.hasPrefix("S3: ") && $0.contains("retried") }, "\(rule.mode): \(summary.warnings)")
            } else {
                // A failure is never a complete-looking entry.
                #expect(backup.exitCode != 0)
                for row in rows where row.state == "complete" {
                    #expect(try await CLI.run(["verify", row.id, "--repo", s3.repository], environment: s3.environment(cluster)).exitCode == 0)
                }
            }
        }
        #expect(try await proxy.counters().injected > 0)
    }
}


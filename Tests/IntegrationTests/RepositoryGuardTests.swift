import Foundation
import Testing
import TSBackup
import TSBackupSandbox

/// What keeps two runs, or tsbackup and someone else's data, apart: the S3 lease under
/// concurrent takeover, and repositories refused where a location already holds other data.
@Suite("repository guards: concurrent S3 lease takeover, foreign prefixes and directories")
struct RepositoryGuardTests {
    static let marker = #"{"format_version": 1, "kind": "tsbackup-repository", "layout": "backups/<id>/manifest.json"}"#

    static func lease(host: String, pid: Int, expires: Date) -> Data {
        let now = ISO8601DateFormatter().string(from: Date())
        return Data(#"{"holder": "tsbackup", "host": "\#(host)", "pid": \#(pid), "command": "backup", "acquired": "\#(now)", "expires": "\#(ISO8601DateFormatter().string(from: expires))"}"#.utf8)
    }

    @Test("two runs that both read the same stale lease: one takes it over, the other is refused naming the holder")
    func concurrentTakeover() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3race")
        let s3 = try await S3Sandbox.make("race")
        defer { s3.remove() }
        try await s3.put("tsbackup-repository.json", Data(Self.marker.utf8))
        try await s3.put("lock", Self.lease(host: "elsewhere", pid: 1, expires: Date().addingTimeInterval(-60)))
        // Both runs stop at the gate after reading the stale lease and before replacing it, so
        // both decide "stale, take it over" from the same version.
        let gate = s3.scratch.path + "/gate"
        try FileManager.default.createDirectory(atPath: gate, withIntermediateDirectories: true)
        // The winner's pg_dump runs until one run has ended, so the winner still holds the lease
        // when the loser retries, however slow the machine is.
        let letGo = s3.scratch.path + "/let-pg_dump-go"
        let fake = try s3.scratch.fakePgDump("""
            i=0; while [ ! -e "\(letGo)" ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done; exit 1
            """)
        var env = s3.environment(cluster)
        env["PATH"] = fake["PATH"]
        env["TSBACKUP_TEST_LEASE_GATE"] = gate
        // moto evaluates If-Match and the write non-atomically, so both takeovers may be stored; the
        // read-back after the settle time tells them apart. On a loaded machine the two runs leave
        // the gate seconds apart: a long settle keeps the later write inside the earlier run's window.
        env["TSBACKUP_S3_LEASE_SETTLE_SECONDS"] = "15"
        let arguments = ["backup", "--db", cluster.url(database: database), "--repo", s3.repository]
        let environment = env
        let ended = EndedRuns()
        let run = { @Sendable () async throws -> ProcessResult in
            let result = try await CLI.run(arguments, environment: environment)
            await ended.add()
            return result
        }
        let first = Task { try await run() }
        let second = Task { try await run() }
        var waiting = 0
        for _ in 0..<6000 {  // hang guards of ten minutes
            waiting = (try FileManager.default.contentsOfDirectory(atPath: gate)).filter { $0.hasPrefix("stale-") }.count
            if waiting == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        _ = FileManager.default.createFile(atPath: gate + "/go", contents: Data())
        for _ in 0..<6000 where await ended.count == 0 { try await Task.sleep(for: .milliseconds(100)) }
        _ = FileManager.default.createFile(atPath: letGo, contents: nil)
        let results = [try await first.value, try await second.value]
        try #require(waiting == 2, "both runs must have read the stale lease: \(results.map(\.standardError))")
        let refused = results.filter { $0.exitCode == 5 }
        let winners = results.filter { $0.exitCode != 5 }
        #expect(refused.count == 1 && winners.count == 1, "\(results.map { "\(String(describing: $0.exitCode)): \($0.standardError)" })")
        #expect(refused.first?.standardError.contains("is in use by") == true, "\(refused.first?.standardError ?? "")")
        #expect(refused.first?.standardError.contains("(backup of") == true)
        // The winner ran the backup (its fake pg_dump fails it) and released the lease it took.
        #expect(winners.first?.exitCode == 1, "\(winners.first?.standardError ?? "")")
        #expect(!(try await s3.keys()).contains("lock"))
    }

    @Test("a run whose lease was taken over neither renews nor removes the new holder's lease")
    func lostLeaseIsLeftAlone() async throws {
        let (cluster, database) = try await makeSampleDatabase("s3lost")
        let s3 = try await S3Sandbox.make("lost")
        defer { s3.remove() }
        // The fake pg_dump marks that it runs (the run holds the lease and has staged its entry)
        // and runs until the test lets it go, so the run is still renewing when the lease is taken
        // over, however slow the machine (a fixed `sleep` could end first and test nothing).
        let started = s3.scratch.path + "/pg_dump-started"
        let letGo = s3.scratch.path + "/let-pg_dump-go"
        let fake = try s3.scratch.fakePgDump("""
            touch "\(started)"
            i=0; while [ ! -e "\(letGo)" ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done; exit 1
            """)
        var env = s3.environment(cluster)
        env["PATH"] = fake["PATH"]
        env["TSBACKUP_S3_LEASE_SECONDS"] = "3"  // renewed every second
        let backup = Task { try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository], environment: env) }
        defer { _ = FileManager.default.createFile(atPath: letGo, contents: nil) }
        for _ in 0..<6000 where !FileManager.default.fileExists(atPath: started) {  // a hang guard of ten minutes
            try await Task.sleep(for: .milliseconds(100))
        }
        try #require(FileManager.default.fileExists(atPath: started), "the backup never reached pg_dump")
        // Another run takes the lease over (as if this one had stalled past its expiry).
        let other = Self.lease(host: "elsewhere", pid: 4242, expires: Date().addingTimeInterval(3600))
        try await s3.put("lock", other)
        // Wait for the run's next renewal, a conditional PUT of the lease that moto refuses (412,
        // in its request log), or for the lease to change (a renewal that overwrote it): either
        // way the run has acted on the takeover before it is let go.
        let refusedRenewal = "\"PUT /\(s3.bucket)/prod/db/lock HTTP/1.1\" 412"
        var acted = false
        for _ in 0..<6000 where !acted {  // a hang guard of ten minutes
            let current = try await s3.get("lock")
            acted = s3.moto.log().contains(refusedRenewal) || current != other
            if !acted { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(acted, "the run never tried to renew the lease after the takeover")
        _ = FileManager.default.createFile(atPath: letGo, contents: nil)
        let result = try await backup.value
        #expect(result.exitCode == 1, "the fake pg_dump fails the run: \(result.standardError)")
        #expect(try await s3.get("lock") == other, "the new holder's lease is neither renewed over nor deleted")
    }

    @Test("a non-empty S3 prefix or local directory that is not a repository is refused on the first write (exit 5); list says it is not one")
    func foreignLocations() async throws {
        let (cluster, database) = try await makeSampleDatabase("foreign")
        let s3 = try await S3Sandbox.make("foreign")
        defer { s3.remove() }
        try await s3.put("reports/2026.csv", Data("day,total\n1,2\n".utf8))
        let env = s3.environment(cluster)
        let url = cluster.url(database: database)

        let backup = try await CLI.run(["backup", "--db", url, "--repo", s3.repository], environment: env)
        #expect(backup.exitCode == 5, "\(backup.standardError)")
        #expect(backup.standardError.contains("not empty and not a tsbackup repository"))
        #expect(backup.standardError.contains("reports/2026.csv"))
        let export = try await CLI.run(["export-hypertable", "--db", url, "--table", "public.conditions", "--repo", s3.repository], environment: env)
        #expect(export.exitCode == 5, "\(export.standardError)")
        #expect(try await s3.keys() == ["reports/2026.csv"], "nothing of ours was written among the foreign objects")
        let list = try await CLI.run(["list", "--repo", s3.repository], environment: env)
        #expect(list.exitCode == 4)
        #expect(list.standardError.contains("is not a tsbackup repository") && list.standardError.contains("reports/2026.csv"))

        // An empty prefix beside it becomes a repository as before.
        let fresh = "s3://\(s3.bucket)/other"
        let ok = try await CLI.run(["backup", "--db", url, "--repo", fresh], environment: env)
        #expect(ok.exitCode == 0, "\(ok.standardError)")

        // The same rule for a local directory.
        let directory = s3.scratch.path + "/foreign-dir"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Data("mine\n".utf8).write(to: URL(fileURLWithPath: directory + "/notes.txt"))
        let local = try await CLI.run(["backup", "--db", url, "--repo", directory], environment: env)
        #expect(local.exitCode == 5, "\(local.standardError)")
        #expect(local.standardError.contains("not empty and not a tsbackup repository"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["notes.txt"])
        let localList = try await CLI.run(["list", "--repo", directory], environment: env)
        #expect(localList.exitCode == 4)
        #expect(localList.standardError.contains("is not a tsbackup repository"))
    }
}

/// How many of a test's concurrent runs have ended.
actor EndedRuns {
    private(set) var count = 0
    func add() { count += 1 }
}

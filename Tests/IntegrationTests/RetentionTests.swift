import Foundation
import Testing
import TSBackup
import TSBackupSandbox

@Suite("retention applied through a real repository")
struct RetentionTests {
    /// A repository with one real backup of a sample database, copied under 30 more ids a day
    /// apart (their manifests say so), plus a failed entry and an interrupted one: a backup
    /// history the policy can work on, without taking 30 backups.
    static func history() async throws -> (ScratchDirectory, String, String, [String]) {
        let (cluster, database) = try await makeSampleDatabase("ret")
        let scratch = try ScratchDirectory("retention")
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository)
        guard result.exitCode == 0 else { throw SandboxError("backup failed: \(result.standardError)") }
        let original = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let backups = repository + "/backups"
        let manifestData = try Data(contentsOf: URL(fileURLWithPath: "\(backups)/\(original)/manifest.json"))
        var ids: [String] = []
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let start = ISO8601DateFormatter().date(from: "2026-01-01T03:00:00Z")!
        for day in 0..<30 {
            let taken = start.addingTimeInterval(Double(day) * 86_400)
            let id = formatter.string(from: taken)
            var manifest = try JSONOutput.decode(BackupManifest.self, from: manifestData)
            manifest.id = id
            manifest.startedAt = taken
            manifest.finishedAt = taken.addingTimeInterval(5)
            if day == 10 {
                manifest.status = .failed
                manifest.error = "pg_dump failed"
            }
            try FileManager.default.copyItem(atPath: "\(backups)/\(original)", toPath: "\(backups)/\(id)")
            try Data(JSONOutput.encode(manifest).utf8).write(to: URL(fileURLWithPath: "\(backups)/\(id)/manifest.json"))
            ids.append(id)
        }
        // The real backup is the newest. An interrupted run (no manifest) sits beside them.
        try FileManager.default.createDirectory(atPath: "\(backups)/20260115T120000Z.partial", withIntermediateDirectories: true)
        return (scratch, repository, database, ids + [original])
    }

    @Test("retention deletes exactly what the plan says, through the repository, and audits each deletion")
    func deletesExactlyThePlan() async throws {
        let (scratch, repository, database, ids) = try await Self.history()
        defer { scratch.remove() }
        let access = RepositoryAccess(path: repository)
        let policy = RetentionPolicy(last: 2, daily: 5, weekly: 2, monthly: 2, timeZone: "Europe/Berlin")
        let source = database
        let inUse = ids[3]

        // Dry run: nothing changes.
        let dry = try await Retention.apply(policy: policy, repository: access, dryRun: true, belongs: { $0.source.database == source }, inUse: { [inUse] })
        #expect(dry.deleted.isEmpty)
        #expect(try await access.with(create: false) { try await $0.entries() }.count == ids.count + 1)

        let audited = AuditRecorder()
        let outcome = try await Retention.apply(policy: policy, repository: access, dryRun: false, belongs: { $0.source.database == source },
                                                inUse: { [inUse] }, onDelete: { await audited.add($0.id) })
        #expect(outcome.failures.isEmpty)
        #expect(outcome.plan == dry.plan, "the dry run showed what was then done")
        #expect(Set(outcome.deleted) == Set(outcome.plan.deletions.map(\.id)))
        #expect(await audited.ids == outcome.deleted)

        // Expected independently: last 2 = the real backup (taken now) and 30 January; daily 5 =
        // now and 27..30 January; weekly 2 = now and ISO week 5 (newest: 30 January); monthly 2 =
        // now and January (30 January). Held by a running job: 4 January.
        let remaining = try await access.with(create: false) { try await $0.entries() }
        let remainingIDs = Set(remaining.map(\.id))
        #expect(remainingIDs.contains(ids.last!))
        #expect(remainingIDs.contains("20260130T030000Z"))
        for day in 27...30 { #expect(remainingIDs.contains(String(format: "202601%02dT030000Z", day))) }
        #expect(remainingIDs.contains(inUse))
        #expect(remainingIDs.contains("20260115T120000Z"), "the interrupted entry is left to gc")
        #expect(!remainingIDs.contains("20260111T030000Z"), "the failed run, superseded, is deleted")
        #expect(!remainingIDs.contains("20260101T030000Z"))
        #expect(!remainingIDs.contains("20260120T030000Z"))
        // Exactly the plan's keeps remain (plus the interrupted entry, which belongs to no database).
        #expect(remainingIDs == Set(outcome.plan.kept.map(\.id)).union(["20260115T120000Z"]))
        // The real binary sees the same repository: deleted ids are gone.
        let listed = try await CLI.run(["list", "--repo", repository, "--json"])
        #expect(listed.exitCode == 0)
        for id in outcome.deleted { #expect(!listed.standardOutput.contains("\"\(id)\"")) }

        // Applying again deletes nothing more.
        let again = try await Retention.apply(policy: policy, repository: access, dryRun: false, belongs: { $0.source.database == source }, inUse: { [] })
        #expect(again.deleted == [inUse], "no longer in use, 4 January goes too")
    }
}

actor AuditRecorder {
    var ids: [String] = []
    func add(_ id: String) { ids.append(id) }
}

import Foundation
import Testing
import TSBackup
import TSBackupSandbox

/// Issue 14, item 7, bounded: a few dozen byte flips (a fixed seed, a share of them inside
/// manifest.json) and truncations of an entry's files, each alone; `tsbackup verify` must exit
/// non-zero and name the file every time. The full campaign is `scripts/corruption.sh`.
@Suite("corruption: every flipped byte and truncated file is detected and named by verify")
struct CorruptionTests {
    func expectAllDetected(_ results: [CorruptionCampaign.Result], _ what: String) {
        let tally = CorruptionCampaign.Tally(results)
        #expect(tally.changes > 0)
        #expect(tally.detected == tally.changes && tally.named == tally.changes, "\(what): \(tally.missed.joined(separator: "\n"))")
        #expect(results.contains { $0.change.file == "manifest.json" && $0.change.kind == .flip }, "\(what): no flip inside the manifest")
    }

    @Test("a local unencrypted backup: flips in data files, toc.dat, roles.sql and the manifest; truncations")
    func localPlain() async throws {
        let (cluster, database) = try await makeSampleDatabase("corrupt")
        let scratch = try ScratchDirectory("corrupt")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        // The directory format, forced: its toc.dat and per-table files are classes of their own
        // (a database this small gets one custom-format file by default, as the S3 case below).
        let backup = try await runBackup(cluster, database, repository: repository, ["--format", "directory"])
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
        let campaign = CorruptionCampaign(tsbackup: CLI.executable, repository: repository, environment: ["HOME": NSTemporaryDirectory()],
                                          id: id, store: .local(directory: repository + "/backups/" + id))
        let changes = try await campaign.plan(flips: 36, truncations: 8, seed: 1407, manifestShare: 0.4)
        expectAllDetected(try await campaign.run(changes), "local plain")
    }

    @Test("a hypertable export: flips in the manifest, schema.sql and data files; truncations")
    func hypertableExport() async throws {
        let (cluster, database) = try await makeSampleDatabase("corruptx")
        let scratch = try ScratchDirectory("corruptx")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let (result, manifest) = try await exportHypertable(cluster, database, table: "public.conditions", repository: repository)
        let export = try #require(manifest, "\(result.standardError)")
        let campaign = CorruptionCampaign(tsbackup: CLI.executable, repository: repository, environment: ["HOME": NSTemporaryDirectory()],
                                          id: export.id, store: .local(directory: repository + "/backups/" + export.id))
        let changes = try await campaign.plan(flips: 16, truncations: 4, seed: 1408, manifestShare: 0.5)
        expectAllDetected(try await campaign.run(changes), "hypertable export")
    }

    @Test("an encrypted S3 backup: flips and truncations of every object, manifest included")
    func s3Encrypted() async throws {
        let (cluster, database) = try await makeSampleDatabase("corrupts3")
        let s3 = try await S3Sandbox.make("corrupt")
        defer { s3.remove() }
        // A raw 256-bit key (64 hex digits): the same authenticated encryption as a passphrase,
        // without scrypt's deliberate cost on each verify run.
        let env = s3.environment(cluster, key: try s3.keyFile(passphrase: String(repeating: "5a", count: 32)))
        let backup = try await CLI.run(["backup", "--db", cluster.url(database: database), "--repo", s3.repository, "--json"], environment: env)
        #expect(backup.exitCode == 0, "\(backup.standardError)")
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8)).id
        let client = try await s3.moto.client(bucket: s3.bucket, create: false)
        defer { Task { try? await client.shutdown() } }
        var verifyEnv = env
        verifyEnv["PGPASSWORD"] = nil
        let campaign = CorruptionCampaign(tsbackup: CLI.executable, repository: s3.repository, environment: verifyEnv,
                                          id: id, store: .s3(client: client, prefix: "prod/db/backups/\(id)/"))
        let changes = try await campaign.plan(flips: 20, truncations: 5, seed: 1409, manifestShare: 0.3)
        expectAllDetected(try await campaign.run(changes), "s3 encrypted")
    }

    @Test("a manifest whose row count changed by one digit: list never shows it complete, verify, show and restore name it")
    func manifestDigit() async throws {
        let backup = try await BackedUpDatabase.make("corruptm")
        defer { backup.scratch.remove() }
        let path = "\(backup.repository)/backups/\(backup.id)/manifest.json"
        let pristine = try Data(contentsOf: URL(fileURLWithPath: path))
        let text = String(decoding: pristine, as: UTF8.self)
        #expect(text.hasPrefix("{\n  \"manifest_sha256\" : \""), "the manifest carries its checksum first")
        // The first digit of the first row count: the JSON still parses and decodes.
        let range = try #require(text.range(of: #""row_count" : [1-9]"#, options: .regularExpression))
        var damaged = Data(text.utf8)
        let offset = text.utf8.distance(from: text.startIndex, to: range.upperBound) - 1
        damaged[offset] = damaged[offset] == UInt8(ascii: "9") ? UInt8(ascii: "8") : damaged[offset] + 1
        #expect((try? JSONOutput.decode(BackupManifest.self, from: damaged)) != nil, "the damaged manifest still decodes")
        try damaged.write(to: URL(fileURLWithPath: path))

        let list = try await CLI.run(["list", "--repo", backup.repository, "--json"])
        #expect(list.exitCode == 0)
        #expect(try listed(list).allSatisfy { $0.state != "complete" }, "\(list.standardOutput)")
        let table = try await CLI.run(["list", "--repo", backup.repository])
        #expect(table.standardOutput.contains("corrupt"), "\(table.standardOutput)")
        let verify = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains("backups/\(backup.id)/manifest.json is corrupt"), "\(verify.standardOutput)")
        let show = try await CLI.run(["show", backup.id, "--repo", backup.repository])
        #expect(show.exitCode == 1 && show.standardError.contains("manifest.json"))
        let into = uniqueDatabaseName("corruptm")
        let restore = try await backup.restore(["--into", into])
        #expect(restore.exitCode == 1, "\(restore.standardError)")
        #expect(restore.standardError.contains("manifest.json is corrupt"))
        #expect(try await databaseExists(backup.cluster, into) == false)

        // A manifest written before the checksum existed (the plain encoding) is read, with a warning.
        let canonical = try JSONOutput.decode(BackupManifest.self, from: pristine)
        try Data((try JSONOutput.encode(canonical) + "\n").utf8).write(to: URL(fileURLWithPath: path))
        let legacy = try await CLI.run(["verify", backup.id, "--repo", backup.repository, "--json"])
        #expect(legacy.exitCode == 0, "\(legacy.standardOutput) \(legacy.standardError)")
        let report = try JSONOutput.decode(Verify.Report.self, from: Data(legacy.standardOutput.utf8))
        #expect(report.ok && report.warnings.contains { $0.contains("carries no checksum of its own") })

        try pristine.write(to: URL(fileURLWithPath: path))
        let clean = try await CLI.run(["verify", backup.id, "--repo", backup.repository, "--json"])
        #expect(clean.exitCode == 0)
        #expect(try JSONOutput.decode(Verify.Report.self, from: Data(clean.standardOutput.utf8)).warnings.isEmpty)
    }
}

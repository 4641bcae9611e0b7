import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// `tsbackup verify --wal`: every archived WAL object is read back and checked (authentication,
/// decompression, frame checksum, size, the header's SHA-256, each segment's cluster and
/// position), and every damaged or missing one is named, with exit 1. Archives are written by a
/// real cluster's archive_command through the built tsbackup; the damage is done to the stored
/// objects afterwards.
@Suite("verify --wal: every archived WAL object checked, each damaged or missing one named")
struct WALVerifyTests {
    /// `verify --wal --json`: the result and its typed report.
    func verifyWAL(_ repository: String, environment: [String: String] = [:]) async throws -> (ProcessResult, WALVerify.Report?) {
        let result = try await CLI.run(["verify", "--wal", "--repo", repository, "--json"], environment: environment)
        return (result, try? JSONOutput.decode(WALVerify.Report.self, from: Data(result.standardOutput.utf8)))
    }

    /// Writes and switches `count` segments, waiting until each is archived; returns their names.
    func archiveSegments(_ archiving: ArchivingCluster, _ count: Int) async throws -> [String] {
        var names: [String] = []
        for _ in 0..<count {
            let segment = try await archiving.writeAndSwitch()
            try await archiving.waitUntilArchived(segment)
            names.append(segment)
        }
        return names
    }

    @Test("a local archive: clean verifies; a flipped payload byte, a flipped SHA-256 field, a deleted segment and a segment stored under another's name are each named")
    func localArchive() async throws {
        let scratch = try ScratchDirectory("walverify")
        defer { scratch.remove() }
        let repo = try postgresOwnedRepository(scratch)
        try await ArchivingCluster.with(repository: repo) { archiving in
            let segments = try await archiveSegments(archiving, 5)
            let system = try await archiving.systemIdentifier
            func object(_ name: String) -> String { "\(repo)/wal/\(system)/00000001/\(name).zst" }

            let (clean, cleanReport) = try await verifyWAL(repo)
            #expect(clean.exitCode == 0, "\(clean.standardOutput) \(clean.standardError)")
            let report = try #require(cleanReport, "\(clean.standardOutput)")
            #expect(report.ok && report.problems.isEmpty)
            #expect(report.segmentsChecked >= 5 && report.objectsChecked >= report.segmentsChecked)
            #expect(report.plainBytes >= Int64(report.segmentsChecked) * (16 << 20), "every segment was decompressed whole")
            #expect(report.systemIdentifier == String(system))

            // 1: a byte of the compressed payload.
            var payload = try Data(contentsOf: URL(fileURLWithPath: object(segments[0])))
            payload[payload.count - 50] ^= 0x10
            try payload.write(to: URL(fileURLWithPath: object(segments[0])))
            // 2: a byte of the header's SHA-256 field only (offset 20-51): wal-fetch relies on the
            // frame checksum and still restores it; verify compares the field.
            var field = try Data(contentsOf: URL(fileURLWithPath: object(segments[1])))
            field[30] ^= 0x01
            try field.write(to: URL(fileURLWithPath: object(segments[1])))
            // 3: a segment deleted (a gap).
            try FileManager.default.removeItem(atPath: object(segments[2]))
            // 4: an intact object stored under another segment's name.
            try FileManager.default.removeItem(atPath: object(segments[3]))
            try FileManager.default.copyItem(atPath: object(segments[4]), toPath: object(segments[3]))

            let fetched = try await CLI.run(["wal-fetch", segments[1], scratch.path + "/fetched", "--repo", repo])
            #expect(fetched.exitCode == 0, "the damaged SHA-256 field alone does not stop a fetch: \(fetched.standardError)")

            let (damaged, damagedReport) = try await verifyWAL(repo)
            #expect(damaged.exitCode == 1, "\(damaged.standardOutput) \(damaged.standardError)")
            let found = try #require(damagedReport, "\(damaged.standardOutput)")
            #expect(!found.ok)
            let named = Set(found.problems.map { "\($0.kind.rawValue) \($0.file)" })
            #expect(named == ["corrupt \(segments[0])", "corrupt \(segments[1])", "missing \(segments[2])", "identity \(segments[3])"],
                    "\(found.problems.map(\.description))")
            #expect(found.problems.allSatisfy { $0.object.hasPrefix("wal/\(system)/00000001/") && $0.object.hasSuffix(".zst") })
            // The error names the files too (its first three), and the text output every object.
            #expect(damaged.standardError.contains(segments[0]), "\(damaged.standardError)")
            let text = try await CLI.run(["verify", "--wal", "--repo", repo])
            #expect(text.exitCode == 1)
            #expect(segments[0...3].allSatisfy { text.standardOutput.contains($0) }, "\(text.standardOutput)")
        }
    }

    @Test("encrypted local, S3 and encrypted S3 archives: clean verifies; a flipped byte is named", arguments: ["local-encrypted", "s3", "s3-encrypted"])
    func otherStores(_ kind: String) async throws {
        let scratch = try ScratchDirectory("walverify-\(kind)")
        defer { scratch.remove() }
        let s3 = kind.hasPrefix("s3") ? try await S3Sandbox.make("walverify") : nil
        defer { s3?.remove() }
        let key = kind.hasSuffix("encrypted") ? try postgresKeyFile(scratch) : nil
        let repo = try s3?.repository ?? postgresOwnedRepository(scratch)
        var env = s3?.environment() ?? [:]
        if let key { env["TSBACKUP_ENCRYPTION_KEY_FILE"] = key }
        try await ArchivingCluster.with(repository: repo, keyFile: key, environment: s3?.moto.environment(endpoint: nil) ?? [:]) { archiving in
            let segments = try await archiveSegments(archiving, 2)
            let system = try await archiving.systemIdentifier
            let name = "wal/\(system)/00000001/\(segments[0]).zst"

            let (clean, cleanReport) = try await verifyWAL(repo, environment: env)
            #expect(clean.exitCode == 0, "\(clean.standardOutput) \(clean.standardError)")
            #expect(cleanReport?.ok == true && (cleanReport?.segmentsChecked ?? 0) >= 2, "\(clean.standardOutput)")

            if let s3 {
                var stored = try await s3.get(name)
                stored[stored.count - 50] ^= 0x10
                try await s3.put(name, stored)
            } else {
                var stored = try Data(contentsOf: URL(fileURLWithPath: repo + "/" + name))
                stored[stored.count - 50] ^= 0x10
                try stored.write(to: URL(fileURLWithPath: repo + "/" + name))
            }
            let (damaged, report) = try await verifyWAL(repo, environment: env)
            #expect(damaged.exitCode == 1, "\(damaged.standardOutput) \(damaged.standardError)")
            #expect(report?.problems.map { "\($0.kind.rawValue) \($0.file)" } == ["corrupt \(segments[0])"], "\(damaged.standardOutput)")
            #expect(report?.problems.first?.object == name)
        }
    }
}

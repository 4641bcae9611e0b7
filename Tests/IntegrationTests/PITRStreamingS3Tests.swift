import Foundation
import PostgresNIO
import Synchronization
import Testing
import TSBackup
import TSBackupSandbox

/// The largest total size of the files under a directory seen while `body` runs, sampled every
/// 20 ms (the sampling can only miss a peak, never invent one: a test asserting the peak is
/// small is checked with the whole backup's size as the thing it must stay far below).
func peakBytes<T: Sendable>(under directory: String, during body: () async throws -> T) async throws -> (T, Int64) {
    let peak = PeakGauge()
    let sampler = Task {
        while !Task.isCancelled {
            peak.record(directoryBytes(directory))
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
    do {
        let result = try await body()
        sampler.cancel()
        _ = await sampler.value
        peak.record(directoryBytes(directory))
        return (result, peak.value)
    } catch {
        sampler.cancel()
        throw error
    }
}

final class PeakGauge: Sendable {
    private let peak = Mutex<Int64>(0)
    func record(_ bytes: Int64) { peak.withLock { $0 = max($0, bytes) } }
    var value: Int64 { peak.withLock { $0 } }
}

/// Bytes of all regular files under `directory` (0 if it does not exist).
func directoryBytes(_ directory: String) -> Int64 {
    guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
    var total: Int64 = 0
    while let name = walker.nextObject() as? String {
        if let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name),
           attributes[.type] as? FileAttributeType == .typeRegular {
            total += (attributes[.size] as? NSNumber)?.int64Value ?? 0
        }
    }
    return total
}

@Suite("base backups streamed to S3 and recovered streaming (moto)", .serialized)
struct PITRStreamingS3Tests {
    static let noiseRows = 200_000

    /// About 26 MB of incompressible bytes (four SHA-256 digests per row), so the compressed tar
    /// is larger than one multipart part several times over.
    static func loadNoise(_ cluster: SandboxCluster) async throws {
        try await cluster.withSuperuser(database: "postgres") { session in
            try await session.execute("""
                CREATE TABLE noise AS
                SELECT g AS id, sha256(g::text::bytea) || sha256((g + 1)::text::bytea) || sha256((-g)::text::bytea) || sha256((g * 7)::text::bytea) AS b
                FROM generate_series(1, \(noiseRows)) g
                """)
            try await session.execute("CREATE TABLE marks (n int NOT NULL)")
        }
    }

    /// A fresh, empty directory to point TSBACKUP_SCRATCH_DIR at and measure.
    static func scratchDirectory(_ s3: S3Sandbox, _ name: String) throws -> String {
        let path = s3.scratch.path + "/" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("a base backup streams to S3 and recovers streaming, plain and encrypted: local scratch stays near zero, rows and TimescaleDB verified",
          arguments: [false, true])
    func streamedRoundTrip(encrypted: Bool) async throws {
        let s3 = try await S3Sandbox.make(encrypted ? "stream-enc" : "stream")
        defer { s3.remove() }
        let key = encrypted ? try postgresKeyFile(s3.scratch) : nil
        let archiving = try await PITRCluster.start(s3: s3, keyFile: key)
        do {
            try await Self.loadNoise(archiving.cluster)
            let backupScratch = try Self.scratchDirectory(s3, "scratch-base-backup")
            let (result, backupPeak) = try await peakBytes(under: backupScratch) {
                try await archiving.tsbackup(["base-backup", "--db", archiving.cluster.url(database: "postgres"), "--repo", archiving.repo, "--json"],
                                             environment: ["TSBACKUP_SCRATCH_DIR": backupScratch])
            }
            try #require(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            let base = try JSONOutput.decode(BaseBackupManifest.self, from: Data(result.standardOutput.utf8))
            let tar = try #require(base.files.first { $0.path == "base.tar.zst" })
            // Several parts (8 MiB each) went out, and none of it was staged locally.
            #expect(tar.bytes > 16 << 20, "the tar is \(tar.bytes) bytes")
            #expect(backupPeak < tar.bytes / 20, "base-backup staged \(backupPeak) bytes locally for a \(tar.bytes)-byte tar")
            let keys = try await s3.keys()
            #expect(keys.contains("backups/\(base.id)/base.tar.zst") && keys.contains("backups/\(base.id)/manifest.json"))
            #expect(!keys.contains("backups/\(base.id)/run.json"))
            let client = try await s3.moto.client(bucket: s3.bucket, create: false)
            let uploads = try await client.listMultipartUploads(prefix: "prod/db/")
            let stored = try #require(try await client.headObject("prod/db/backups/\(base.id)/base.tar.zst"))
            try await client.shutdown()
            #expect(uploads.isEmpty, "multipart uploads left: \(uploads.map(\.key))")
            // An encrypted repository stores the sealed stream (header and a tag per 1 MiB segment), a plain one the tar itself.
            if encrypted {
                #expect(stored.size > tar.bytes && stored.size < tar.bytes + tar.bytes / 1000 + 4096)
            } else {
                #expect(stored.size == tar.bytes)
            }

            // A write after the backup, archived: the recovery must replay it from the archive.
            try await archiving.cluster.withSuperuser(database: "postgres") { try await $0.execute("INSERT INTO marks VALUES (1)") }
            try await archiving.switchAndWaitForArchive()
            let recoverScratch = try Self.scratchDirectory(s3, "scratch-recover")
            let ((recovered, port, _), recoverPeak) = try await peakBytes(under: recoverScratch) {
                try await archiving.recover(encrypted ? "enc" : "plain", ["--to-latest", "--jobs", "3"], environment: ["TSBACKUP_SCRATCH_DIR": recoverScratch])
            }
            try #require(recovered.exitCode == 0, "\(recovered.standardOutput) \(recovered.standardError)")
            #expect(recoverPeak < tar.bytes / 20, "recover staged \(recoverPeak) bytes locally for a \(tar.bytes)-byte tar")
            // Figures for the record (not asserted on: no timing in tests).
            print("streamed base backup\(encrypted ? " (encrypted)" : ""): tar \(tar.bytes) bytes, stored \(stored.size), base-backup took \(base.durationSeconds) s; peak local scratch: base-backup \(backupPeak) bytes, recover \(recoverPeak) bytes")
            let report = try JSONOutput.decode(Recover.Report.self, from: Data(recovered.standardOutput.utf8))
            #expect(report.ok && report.checks.allSatisfy(\.ok))
            // Counted on the recovered server, against the source's own count.
            let (sourceRows, sourceDigest) = try await archiving.cluster.withSuperuser(database: "postgres") {
                try await $0.row("SELECT count(*)::int8, md5(string_agg(b::text, '' ORDER BY id)) FROM noise", as: (Int64, String).self)
            }
            let (rows, digest, marks) = try await archiving.onRecovered(port: port, database: "postgres") {
                try await $0.row("SELECT (SELECT count(*)::int8 FROM noise), (SELECT md5(string_agg(b::text, '' ORDER BY id)) FROM noise), (SELECT count(*)::int8 FROM marks)",
                                 as: (Int64, String, Int64).self)
            }
            #expect(sourceRows == Int64(Self.noiseRows) && rows == sourceRows && digest == sourceDigest)
            #expect(marks == 1)
            let verify = try await archiving.tsbackup(["verify", base.id, "--repo", archiving.repo])
            #expect(verify.exitCode == 0, "\(verify.standardError)")
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("an encrypted local repository: the tar is sealed at commit and recover streams it through decryption into tar, without scratch")
    func encryptedLocalRoundTrip() async throws {
        let scratch = try ScratchDirectory("pitr-enc-local")
        defer { scratch.remove() }
        let key = try postgresKeyFile(scratch)
        let archiving = try await PITRCluster.start(keyFile: key)
        do {
            try await archiving.cluster.withSuperuser(database: "postgres") { session in
                try await session.execute("CREATE TABLE marks (n int NOT NULL)")
                try await session.execute("INSERT INTO marks SELECT generate_series(1, 1000)")
            }
            let base = try await archiving.baseBackup()
            let tar = try #require(base.files.first { $0.path == "base.tar.zst" })
            // Sealed on disk: the stored file is not the tar (no zstd magic) and a little larger.
            let stored = try Data(contentsOf: URL(fileURLWithPath: "\(archiving.repo)/backups/\(base.id)/base.tar.zst"))
            #expect(Int64(stored.count) > tar.bytes && stored.prefix(4) != Data([0x28, 0xB5, 0x2F, 0xFD]))
            try await archiving.cluster.withSuperuser(database: "postgres") { try await $0.execute("INSERT INTO marks VALUES (1001)") }
            try await archiving.switchAndWaitForArchive()
            // Any staging would fail: the scratch location cannot be created.
            let unusable = scratch.path + "/not-a-directory"
            _ = FileManager.default.createFile(atPath: unusable, contents: Data())
            let (result, port, _) = try await archiving.recover("enc-local", ["--to-latest"], environment: ["TSBACKUP_SCRATCH_DIR": unusable + "/scratch"])
            try #require(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
            let count = try await archiving.onRecovered(port: port, database: "postgres") {
                try await $0.value("SELECT count(*)::int8 FROM marks", as: Int64.self)
            }
            #expect(count == 1001)
        } catch {
            await archiving.stop()
            throw error
        }
        await archiving.stop()
    }

    @Test("a base backup killed while its multipart upload is in flight never lists complete; repo gc leaves no upload and no object of it")
    func killedMidUpload() async throws {
        let s3 = try await S3Sandbox.make("stream-kill")
        defer { s3.remove() }
        let proxy = try await FaultProxy.start(upstreamPort: s3.moto.port)
        let archiving = try await PITRCluster.start(s3: s3)
        let work = try Self.scratchDirectory(s3, "killed-run")
        do {
            try await Self.loadNoise(archiving.cluster)
            // Every UploadPart (and its retries) is held (the hang guard ends them long after the test is done),
            // so the run is certainly in the middle of its multipart upload when it is killed.
            try await proxy.set(FaultProxy.Rule(mode: .stall, count: 50, method: "PUT", pathContains: "partNumber=", stallSeconds: 600))
            var environment = archiving.environment.merging(s3.environment(endpoint: proxy.endpoint)) { $1 }
            environment["TSBACKUP_SCRATCH_DIR"] = work
            let run = try await BackgroundProcess.start(
                name: "base-backup", command: [CLI.executable, "base-backup", "--db", archiving.cluster.url(database: "postgres"), "--repo", archiving.repo],
                environment: environment, directory: try makeTemporaryDirectory("tsbackup-killed-bb"))
            let client = try await s3.moto.client(bucket: s3.bucket, create: false)
            defer { Task { try? await client.shutdown() } }
            // Wait for the state (hang guard only): an upload exists and its first part is held.
            let deadline = ContinuousClock.now + .seconds(600)
            var uploads: [S3MultipartUploadInfo] = []
            while true {
                uploads = try await client.listMultipartUploads(prefix: "prod/db/backups/")
                if !uploads.isEmpty, try await proxy.counters().injected >= 1 { break }
                guard run.isRunning else { throw SandboxError("base-backup ended before it was killed: \(run.log().suffix(2000))") }
                guard ContinuousClock.now < deadline else { throw SandboxError("no multipart upload appeared: \(run.log().suffix(2000))") }
                try await Task.sleep(for: .milliseconds(100))
            }
            kill(run.pid, SIGKILL)
            while run.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            let id = String(try #require(uploads.first).key.dropFirst("prod/db/backups/".count).prefix { $0 != "/" })

            let list = try await archiving.tsbackup(["list", "--repo", archiving.repo, "--json"])
            #expect(list.exitCode == 0, "\(list.standardError)")
            let rows = try listed(list)
            #expect(rows.contains { $0.id == id && $0.state != "complete" }, "\(rows)")
            #expect(!rows.contains { $0.state == "complete" })
            let recover = try await archiving.recover("none", ["--to-latest"])
            #expect(recover.0.exitCode == 4, "no complete base backup: \(recover.0.standardError)")

            let gc = try await archiving.tsbackup(["repo", "gc", "--repo", archiving.repo])
            #expect(gc.exitCode == 0, "\(gc.standardOutput) \(gc.standardError)")
            // The gc takes over the killed run's stale lease, which already removes its leftovers (said on stderr).
            #expect((gc.standardOutput + gc.standardError).contains(id))
            #expect(try await client.listMultipartUploads(prefix: "prod/db/").isEmpty)
            #expect(!(try await s3.keys()).contains { $0.hasPrefix("backups/\(id)") })
            // The repository still works: the next base backup completes.
            try await proxy.set(.none)
            let base = try await archiving.baseBackup()
            #expect(base.files.first?.bytes ?? 0 > 0)
        } catch {
            await archiving.stop()
            await proxy.stop()
            throw error
        }
        await archiving.stop()
        await proxy.stop()
    }
}

@Suite("S3UploadStream: an object uploaded while it is produced (moto, fault proxy)")
struct S3UploadStreamTests {
    @Test("parts go out as they fill, a reset part is retried, the object reads back byte for byte; a small one is one PUT; abort leaves no upload")
    func streamedObject() async throws {
        try await withProxy { proxy, moto in
            let bucket = uniqueBucketName("upstream")
            var options = S3Client.Options()
            options.retry.baseDelay = .milliseconds(10)
            let client = try await moto.client(bucket: bucket, create: true, endpoint: proxy.endpoint, options: options)
            defer { Task { try? await client.shutdown() } }
            // 21 MiB in uneven pieces: three parts of 8 MiB (the last shorter); one UploadPart is cut mid-body.
            var data = Data(count: 21 << 20 + 12345)
            data.withUnsafeMutableBytes { bytes in
                var state: UInt64 = 0x9E37_79B9_7F4A_7C15
                for index in 0..<bytes.count {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    bytes[index] = UInt8(truncatingIfNeeded: state >> 33)
                }
            }
            try await proxy.set(FaultProxy.Rule(mode: .reset, count: 1, method: "PUT", pathContains: "partNumber=2"))
            let stream = client.uploadStream("big", expectedSize: 1 << 20)
            var offset = 0
            var piece = 1
            while offset < data.count {
                let end = min(data.count, offset + piece * 70_001)
                try await stream.write(data.subdata(in: offset..<end))
                offset = end
                piece = piece % 50 + 1
            }
            try await stream.finish()
            #expect(try await proxy.counters().injected == 1)
            #expect(try await client.getObject("big") == data)
            #expect(try await client.listMultipartUploads().isEmpty)

            let small = client.uploadStream("small", expectedSize: 0)
            try await small.write(Data("tiny".utf8))
            try await small.finish()
            #expect(try await client.getObject("small") == Data("tiny".utf8))

            // Two full parts sent, then abandoned: nothing is stored, no upload stays open.
            let abandoned = client.uploadStream("abandoned", expectedSize: 0)
            try await abandoned.write(data.prefix(17 << 20))
            #expect(try await client.listMultipartUploads().count == 1)
            await abandoned.abort()
            #expect(try await client.listMultipartUploads().isEmpty)
            #expect(try await client.headObject("abandoned") == nil)
        }
    }
}

/// A new private directory under /tmp.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SandboxError("mkdtemp failed") }
    return String(cString: made)
}

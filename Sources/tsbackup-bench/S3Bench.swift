import Crypto
import Foundation
import TSBackup
import TSBackupSandbox

/// Upload and download throughput of tsbackup's S3 client against `aws s3 cp --recursive` on the
/// same files to the same moto endpoint (signature checking on), medians of `repetitions` runs.
/// Every download is checked byte for byte (SHA-256) against the source files.
struct S3Bench {
    let repetitions: Int
    let full: Bool
    let log: (String) -> Void

    /// Files uploaded at once by the S3 client side (each with its own parallel parts); the AWS
    /// CLI runs 10 requests at once by default.
    let fileConcurrency = 4

    func run(into results: inout BenchResults) async throws {
        guard let aws = findOnPath("aws") else { throw SandboxError("the aws CLI is not installed (pip install awscli)") }
        let moto = try await MotoServer.start()
        defer { Task { await moto.stop() } }
        let work = moto.directory + "/bench-files"
        try FileManager.default.createDirectory(atPath: work + "/source", withIntermediateDirectories: true)
        // Sizes like a pg_dump directory: a few large table files and many small ones.
        let large = full ? 8 : 4
        let largeSize = full ? 64 << 20 : 32 << 20
        let small = 64
        var digests: [String: String] = [:]
        var total: Int64 = 0
        for i in 0..<(large + small) {
            let size = i < large ? largeSize : 96 << 10
            let name = String(format: "%04d.dat", i)
            let data = Self.bytes(size, seed: UInt64(i + 1))
            try data.write(to: URL(fileURLWithPath: work + "/source/" + name))
            digests[name] = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            total += Int64(size)
        }
        let dataset = "\(large) x \(ByteCount.format(Int64(largeSize))) + \(small) x 96 kB = \(ByteCount.format(total))"
        results.datasets["s3-files"] = dataset
        log("\n== S3 throughput against moto on 127.0.0.1 (\(dataset), \(repetitions) runs each)")

        let bucket = "bench-\(UUID().uuidString.prefix(8).lowercased())"
        let client = try await moto.client(bucket: bucket)
        defer { Task { try? await client.shutdown() } }
        var env: [String: String?] = [:]
        for (key, value) in moto.environment() { env[key] = value }
        let names = digests.keys.sorted()

        var measurements: [String: Measurement] = [:]
        func record(_ name: String, _ seconds: Double) {
            measurements[name, default: Measurement(scenario: "s3", name: name)].seconds.append(seconds)
        }
        for run in 0..<repetitions {
            // tsbackup's client
            let up = try await timed {
                try await forEachConcurrently(names) { name in try await client.putFile("ts\(run)/\(name)", path: work + "/source/" + name) }
            }
            record("S3Client upload", up)
            let target = work + "/ts-down"
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            let down = try await timed {
                try await forEachConcurrently(names) { name in try await client.downloadFile("ts\(run)/\(name)", to: target + "/" + name) }
            }
            record("S3Client download", down)
            try verify(target, digests)

            // aws s3 cp --recursive
            let awsUp = try await timed {
                try check(try await ProcessRunner.run(aws, ["s3", "cp", "--recursive", "--only-show-errors", work + "/source", "s3://\(bucket)/aws\(run)/"], environment: env), "aws s3 cp (upload)")
            }
            record("aws s3 cp --recursive upload", awsUp)
            let awsTarget = work + "/aws-down"
            try? FileManager.default.removeItem(atPath: awsTarget)
            let awsDown = try await timed {
                try check(try await ProcessRunner.run(aws, ["s3", "cp", "--recursive", "--only-show-errors", "s3://\(bucket)/aws\(run)/", awsTarget], environment: env), "aws s3 cp (download)")
            }
            record("aws s3 cp --recursive download", awsDown)
            try verify(awsTarget, digests)
            log(String(format: "  run %d: S3Client up %.2f s, down %.2f s; aws cli up %.2f s, down %.2f s", run + 1, up, down, awsUp, awsDown))
            // Free moto's memory before the next run.
            let keys = try await client.listObjects().map(\.key)
            try await client.deleteObjects(keys)
        }
        let stats = client.stats
        for name in ["S3Client upload", "aws s3 cp --recursive upload", "S3Client download", "aws s3 cp --recursive download"] {
            let m = measurements[name]!
            results.measurements.append(m)
            log("  " + name.padding(toLength: 40, withPad: " ", startingAt: 0)
                + String(format: " median %6.2f s  %7.1f MB/s", m.median, Double(total) / 1e6 / m.median))
        }
        for direction in ["upload", "download"] {
            let ours = measurements["S3Client \(direction)"]!.median
            let theirs = measurements["aws s3 cp --recursive \(direction)"]!.median
            results.findings.append(.init(scenario: "s3", name: "\(direction) throughput vs aws s3 cp", value: theirs / ours,
                                          text: String(format: "%.2fx (%.1f MB/s vs %.1f MB/s)", theirs / ours,
                                                       Double(total) / 1e6 / ours, Double(total) / 1e6 / theirs)))
        }
        results.findings.append(.init(scenario: "s3", name: "S3Client requests / retries", value: Double(stats.retries),
                                      text: "\(stats.requests) requests, \(stats.retries) retries"))
        // The files are written from memory one at a time (largest 64 MB) before any transfer, so
        // this peak is that buffer plus what the client held while moving 4 files in parallel.
        if let peak = Self.peakRSSKilobytes() {
            results.findings.append(.init(scenario: "s3", name: "peak RSS of the benchmark process", value: Double(peak) * 1024,
                                          text: ByteCount.format(Int64(peak) * 1024)))
        }
    }

    func forEachConcurrently(_ names: [String], _ body: @escaping @Sendable (String) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < min(fileConcurrency, names.count) {
                let name = names[next]
                group.addTask { try await body(name) }
                next += 1
            }
            while try await group.next() != nil {
                if next < names.count {
                    let name = names[next]
                    group.addTask { try await body(name) }
                    next += 1
                }
            }
        }
    }

    func verify(_ directory: String, _ digests: [String: String]) throws {
        for (name, digest) in digests {
            guard let data = FileManager.default.contents(atPath: directory + "/" + name),
                  SHA256.hash(data: data).map({ String(format: "%02x", $0) }).joined() == digest else {
                throw SandboxError("downloaded \(directory)/\(name) differs from the source")
            }
        }
    }

    func timed(_ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func check(_ result: ProcessResult, _ what: String) throws {
        guard result.succeeded else { throw SandboxError("\(what) failed (\(result.statusDescription)): \(result.standardError.suffix(1500))") }
    }

    func findOnPath(_ name: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// VmHWM from /proc/self/status.
    static func peakRSSKilobytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    static func bytes(_ count: Int, seed: UInt64) -> Data {
        var state = seed | 1
        var data = Data(count: count)
        data.withUnsafeMutableBytes { buffer in
            let words = buffer.bindMemory(to: UInt64.self)
            for i in 0..<words.count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                words[i] = state
            }
        }
        return data
    }
}

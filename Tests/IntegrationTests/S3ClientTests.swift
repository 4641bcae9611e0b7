import Crypto
import Foundation
import Testing
import TSBackup
import TSBackupSandbox

/// One moto server per test process (signature checking on), started on first use; every test
/// works in a bucket of its own. Its watchdog stops it when the test process ends.
actor SharedMoto {
    static let shared = SharedMoto()
    private var starting: Task<MotoServer, any Error>?

    func server() async throws -> MotoServer {
        if let starting { return try await starting.value }
        let task = Task { try await MotoServer.start() }
        starting = task
        return try await task.value
    }
}

func uniqueBucketName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func testBytes(_ count: Int, seed: UInt64) -> Data {
    var state = seed | 1
    var data = Data(count: count)
    data.withUnsafeMutableBytes { buffer in
        let words = buffer.bindMemory(to: UInt8.self)
        var i = 0
        while i < count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            var word = state
            for _ in 0..<8 where i < count {
                words[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
    }
    return data
}

func sha256Hex(_ data: Data) -> String {
    SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

func sha256Hex(file path: String) throws -> String {
    var hasher = SHA256()
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

/// Fast retries and small parts, so fault tests finish quickly and multipart needs little data.
/// The timeouts are hang guards (a shared moto on a loaded machine may answer slowly, and a
/// timeout would add a retry the tests count); a test that needs a stall to time out sets its own.
func testOptions(readTimeout: Duration = .seconds(300)) -> S3Client.Options {
    var options = S3Client.Options()
    options.connectTimeout = .seconds(120)
    options.retry = S3RetryPolicy(maxAttempts: 5, baseDelay: .milliseconds(20), maxDelay: .milliseconds(200))
    options.minimumPartSize = 5 << 20
    options.multipartThreshold = 5 << 20
    options.readTimeout = readTimeout
    return options
}

func withClient<T>(_ prefix: String, endpoint: URL? = nil, secret: String? = nil, options: S3Client.Options = testOptions(),
                   _ body: (S3Client, MotoServer) async throws -> T) async throws -> T {
    let moto = try await SharedMoto.shared.server()
    let client = try await moto.client(bucket: uniqueBucketName(prefix), endpoint: endpoint, secret: secret, options: options)
    do {
        let result = try await body(client, moto)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

func withProxy<T>(_ body: (FaultProxy, MotoServer) async throws -> T) async throws -> T {
    let moto = try await SharedMoto.shared.server()
    let proxy = try await FaultProxy.start(upstreamPort: moto.port)
    do {
        let result = try await body(proxy, moto)
        await proxy.stop()
        return result
    } catch {
        await proxy.stop()
        throw error
    }
}

func temporaryFile(_ data: Data) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-s3test-\(UUID().uuidString)").path
    try data.write(to: URL(fileURLWithPath: path))
    return path
}

@Suite("S3 client against moto with signature checking")
struct S3ClientTests {
    @Test("put, get, head, list and delete round trips, with awkward keys")
    func roundTrip() async throws {
        try await withClient("roundtrip") { client, _ in
            let keys = ["plain.txt", "dir/sub dir/with space", "plus+sign&amp=eq", "unicode/€-ключ-キー", "tilde~and%percent", "empty"]
            for (i, key) in keys.enumerated() {
                try await client.putObject(key, data: key == "empty" ? Data() : testBytes(1000 + i, seed: UInt64(i + 1)))
            }
            for (i, key) in keys.enumerated() {
                let expected = key == "empty" ? Data() : testBytes(1000 + i, seed: UInt64(i + 1))
                #expect(try await client.getObject(key) == expected, "\(key)")
                let info = try #require(try await client.headObject(key))
                #expect(info.size == Int64(expected.count))
                #expect(info.etag == Insecure.MD5.hash(data: expected).map { String(format: "%02x", $0) }.joined())
            }
            #expect(try await client.headObject("missing") == nil)
            let listed = try await client.listObjects()
            #expect(Set(listed.map(\.key)) == Set(keys))
            #expect(try await client.listObjects(prefix: "dir/").map(\.key) == ["dir/sub dir/with space"])
            #expect(try await client.listCommonPrefixes(prefix: "", delimiter: "/").sorted() == ["dir/", "unicode/"])
            let missing = await #expect(throws: S3Error.self) { try await client.getObject("missing") }
            #expect(missing?.code == .noSuchKey)
            try await client.deleteObjects(Array(keys.prefix(3)) + ["never-existed"])
            #expect(Set(try await client.listObjects().map(\.key)) == Set(keys.dropFirst(3)))
            try await client.deleteObject(keys[3])
            #expect(try await client.headObject(keys[3]) == nil)
            let stats = client.stats
            #expect(stats.requests > 20 && stats.retries == 0)
            #expect(stats.bytesUploaded >= 5000 && stats.bytesDownloaded >= 5000)
        }
    }

    @Test("a multipart upload of a file larger than the part size arrives intact both ways")
    func multipartFile() async throws {
        try await withClient("multipart") { client, _ in
            let data = testBytes(13 * (1 << 20) + 12345, seed: 42)
            let path = try temporaryFile(data)
            defer { try? FileManager.default.removeItem(atPath: path) }
            try await client.putFile("big/file.bin", path: path)
            let info = try #require(try await client.headObject("big/file.bin"))
            #expect(info.size == Int64(data.count))
            #expect(info.etag?.hasSuffix("-3") == true, "a 13 MiB file in 5 MiB parts is a 3-part upload: \(info.etag ?? "")")
            #expect(try await client.listMultipartUploads().isEmpty)
            // Back: whole, and through the parallel ranged download.
            #expect(sha256Hex(try await client.getObject("big/file.bin")) == sha256Hex(data))
            let back = path + ".back"
            defer { try? FileManager.default.removeItem(atPath: back) }
            #expect(try await client.downloadFile("big/file.bin", to: back) == Int64(data.count))
            #expect(try sha256Hex(file: back) == sha256Hex(data))
            #expect(!FileManager.default.fileExists(atPath: back + ".part"))
        }
    }

    @Test("a streamed upload calls the reader by range, and range GETs return exactly the range")
    func streamedUploadAndRanges() async throws {
        try await withClient("ranges") { client, _ in
            let data = testBytes(11 * (1 << 20), seed: 7)
            let calls = CallLog()
            try await client.putObject("stream", size: Int64(data.count)) { range in
                await calls.add(range)
                return data.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
            }
            let ranges = await calls.ranges.sorted { $0.lowerBound < $1.lowerBound }
            #expect(ranges.count == 3)
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == Int64(data.count))
            for (lower, upper): (Int64, Int64) in [(0, 1), (5, 100), (5 << 20, (5 << 20) + 70_000), (Int64(data.count) - 10, Int64(data.count))] {
                let got = try await client.getObject("stream", range: lower..<upper)
                #expect(got == data.subdata(in: Int(lower)..<Int(upper)), "\(lower)..<\(upper)")
            }
            #expect(try await client.getObject("stream", range: 10..<10).isEmpty)
        }
    }

    @Test("listing and deleting more than 1,000 objects pages through every one")
    func moreThanAThousand() async throws {
        try await withClient("many") { client, _ in
            let keys = (0..<1234).map { String(format: "many/obj-%05d", $0) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for chunk in stride(from: 0, to: keys.count, by: 155) {
                    group.addTask {
                        for key in keys[chunk..<min(chunk + 155, keys.count)] { try await client.putObject(key, data: Data(key.utf8)) }
                    }
                }
                try await group.waitForAll()
            }
            try await client.putObject("other", data: Data("x".utf8))
            let before = client.stats.requests
            let listed = try await client.listObjects(prefix: "many/")
            #expect(listed.map(\.key) == keys)
            #expect(client.stats.requests - before == 2, "1,234 keys are two pages of at most 1,000")
            try await client.deleteObjects(keys)
            #expect(try await client.listObjects(prefix: "many/").isEmpty)
            #expect(try await client.listObjects().map(\.key) == ["other"])
        }
    }

    @Test("a conditional create is refused the second time")
    func conditionalCreate() async throws {
        try await withClient("conditional") { client, _ in
            try await client.putObject("lease", data: Data("first".utf8), ifNoneMatch: true)
            let error = await #expect(throws: S3Error.self) {
                try await client.putObject("lease", data: Data("second".utf8), ifNoneMatch: true)
            }
            #expect(error?.code == .preconditionFailed)
            #expect(error?.status == 412)
            #expect(try await client.getObject("lease") == Data("first".utf8))
            try await client.putObject("lease", data: Data("overwrite".utf8))
            #expect(try await client.getObject("lease") == Data("overwrite".utf8))
        }
    }

    @Test("a wrong secret or an unknown key is an auth error (exit 3) that names no secret")
    func wrongCredentials() async throws {
        let moto = try await SharedMoto.shared.server()
        let bucket = uniqueBucketName("auth")
        let wrongSecret = "Wr0ngSecretValue/ForTesting+1234567890"
        let client = try await moto.client(bucket: bucket, secret: wrongSecret, options: testOptions())
        defer { Task { try? await client.shutdown() } }
        let error = await #expect(throws: S3Error.self) { try await client.putObject("x", data: Data("y".utf8)) }
        #expect(error?.code == .signatureMismatch)
        #expect(error?.attempts == 1, "auth errors are not retried")
        let mapped = try #require(error).tsBackupError(endpoint: moto.settings().endpointDescription, bucket: bucket)
        #expect(mapped.kind == .permission && mapped.exitCode == 3)
        for text in [mapped.message, "\(try #require(error))", String(reflecting: try #require(error))] {
            #expect(!text.contains(wrongSecret) && !text.contains(moto.credentials.secretAccessKey))
        }
        #expect(mapped.message.contains("AWS_SECRET_ACCESS_KEY"))

        var unknown = moto.settings()
        unknown.credentials = S3Credentials(accessKeyId: "AKIAUNKNOWNKEY000000", secretAccessKey: "whatever")
        let other = S3Client(settings: unknown, bucket: bucket, options: testOptions())
        defer { Task { try? await other.shutdown() } }
        let unknownError = await #expect(throws: S3Error.self) { try await other.listObjects() }
        #expect(unknownError?.code == .invalidCredentials)
        #expect(unknownError.map { $0.tsBackupError(endpoint: "e", bucket: bucket).exitCode } == 3)
    }

    @Test("settings read from an AWS profile file reach moto, and the wrong profile is refused")
    func settingsFromProfileFiles() async throws {
        let moto = try await SharedMoto.shared.server()
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-s3-home-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: home + "/.aws", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        try """
            [default]
            aws_access_key_id = \(moto.credentials.accessKeyId)
            aws_secret_access_key = not-the-secret
            [moto]
            aws_access_key_id = \(moto.credentials.accessKeyId)
            aws_secret_access_key = \(moto.credentials.secretAccessKey)
            """.write(toFile: home + "/.aws/credentials", atomically: true, encoding: .utf8)
        try "[profile moto]\nregion = us-east-1\nendpoint_url = \(moto.endpoint.absoluteString)\n"
            .write(toFile: home + "/.aws/config", atomically: true, encoding: .utf8)
        let settings = try S3Settings.fromEnvironment(["AWS_PROFILE": "moto"], homeDirectory: home)
        #expect(settings.addressingStyle == .path)
        let bucket = uniqueBucketName("profile")
        let client = S3Client(settings: settings, bucket: bucket, options: testOptions())
        defer { Task { try? await client.shutdown() } }
        try await client.createBucket()
        try await client.putObject("k", data: Data("v".utf8))
        #expect(try await client.getObject("k") == Data("v".utf8))

        var wrong = try S3Settings.fromEnvironment(["AWS_ENDPOINT_URL_S3": moto.endpoint.absoluteString], homeDirectory: home)
        wrong.region = "us-east-1"
        let other = S3Client(settings: wrong, bucket: bucket, options: testOptions())
        defer { Task { try? await other.shutdown() } }
        let error = await #expect(throws: S3Error.self) { try await other.getObject("k") }
        #expect(error?.code == .signatureMismatch)
    }

    @Test("a missing bucket is not-found (exit 4)")
    func missingBucket() async throws {
        let moto = try await SharedMoto.shared.server()
        let client = try await moto.client(bucket: uniqueBucketName("absent"), create: false, options: testOptions())
        defer { Task { try? await client.shutdown() } }
        for operation in ["list", "put", "headBucket"] {
            let error = await #expect(throws: S3Error.self, "\(operation)") {
                switch operation {
                case "list": _ = try await client.listObjects()
                case "put": try await client.putObject("k", data: Data())
                default: try await client.headBucket()
                }
            }
            #expect(error?.code == .noSuchBucket, "\(operation)")
            #expect(error.map { $0.tsBackupError(endpoint: "e", bucket: client.bucket).exitCode } == 4)
        }
    }

    @Test("a closed port is unreachable (exit 2) after the bounded attempts, each retry counted")
    func unreachable() async throws {
        let port = try SandboxCluster.freeLoopbackPort()
        let settings = S3Settings(credentials: S3Credentials(accessKeyId: "A", secretAccessKey: "secret-never-shown"),
                                  endpoint: URL(string: "http://127.0.0.1:\(port)"))
        let client = S3Client(settings: settings, bucket: "nowhere", options: testOptions())
        defer { Task { try? await client.shutdown() } }
        let error = await #expect(throws: S3Error.self) { try await client.getObject("k") }
        #expect(error?.code == .unreachable)
        #expect(error?.attempts == 5)
        #expect(client.stats.retries == 4)
        #expect(client.stats.retryEvents.count == 4)
        let mapped = try #require(error).tsBackupError(endpoint: settings.endpointDescription, bucket: "nowhere")
        #expect(mapped.kind == .connection && mapped.exitCode == 2)
        #expect(mapped.message.contains("127.0.0.1:\(port)") && !mapped.message.contains("secret-never-shown"))
    }
}

actor CallLog {
    var ranges: [Range<Int64>] = []
    func add(_ range: Range<Int64>) { ranges.append(range) }
}

@Suite("S3 client through the fault-injecting proxy")
struct S3FaultTests {
    @Test("503 SlowDown is retried, counted, and the object arrives intact")
    func slowDown() async throws {
        try await withProxy { proxy, _ in
            try await withClient("slowdown", endpoint: proxy.endpoint) { client, _ in
                let data = testBytes(300_000, seed: 3)
                try await proxy.set(.init(mode: .slowDown, count: 3, method: "PUT"))
                try await client.putObject("obj", data: data)
                try await proxy.set(.init(mode: .internalError, count: 2, method: "GET"))
                #expect(try await client.getObject("obj") == data)
                let stats = client.stats
                #expect(stats.retries == 5)
                #expect(stats.retryEvents.filter { $0.reason.contains("503 SlowDown") }.count == 3)
                #expect(stats.retryEvents.filter { $0.reason.contains("500") }.count == 2)
                #expect(try await proxy.counters().injected == 5)
            }
        }
    }

    @Test("connections reset mid-body are retried (parts re-read from the reader) and the object arrives intact")
    func midBodyResets() async throws {
        try await withProxy { proxy, _ in
            try await withClient("reset", endpoint: proxy.endpoint) { client, _ in
                let data = testBytes(12 * (1 << 20), seed: 9)
                let calls = CallLog()
                try await proxy.set(.init(mode: .reset, count: 2, method: "PUT", pathContains: "partNumber="))
                try await client.putObject("parts", size: Int64(data.count)) { range in
                    await calls.add(range)
                    return data.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
                }
                #expect(await calls.ranges.count == 3 + 2, "each reset part is read again")
                #expect(client.stats.retries == 2)
                // Responses cut in the middle of their body.
                try await proxy.set(.init(mode: .reset, count: 2, method: "GET"))
                #expect(sha256Hex(try await client.getObject("parts")) == sha256Hex(data))
                #expect(client.stats.retries == 4)
                #expect(try await proxy.counters().injected == 4)
                #expect(try await client.listMultipartUploads().isEmpty)
            }
        }
    }

    @Test("a stalled request times out and is retried")
    func stall() async throws {
        try await withProxy { proxy, _ in
            // The read timeout is long enough for a loaded machine's moto to answer the requests that
            // are not stalled; the stall outlasts it by far. Should an unstalled answer still take
            // longer, that is one more retry: the proxy's count, not the client's, says exactly one
            // request was stalled, and at least that one timed out and was retried.
            try await withClient("stall", endpoint: proxy.endpoint, options: testOptions(readTimeout: .seconds(30))) { client, _ in
                try await client.putObject("obj", data: Data("payload".utf8))
                try await proxy.set(.init(mode: .stall, count: 1, method: "GET", stallSeconds: 600))
                #expect(try await client.getObject("obj") == Data("payload".utf8))
                #expect(try await proxy.counters().injected == 1)
                #expect(client.stats.retries >= 1)
                #expect(client.stats.retryEvents.contains { $0.operation.hasPrefix("GetObject") && $0.reason.contains("stalled") },
                        "\(client.stats.retryEvents.map(\.description))")
            }
        }
    }

    @Test("a persistent fault fails cleanly after the bounded attempts and the multipart upload is aborted")
    func persistentFault() async throws {
        try await withProxy { proxy, _ in
            try await withClient("persistent", endpoint: proxy.endpoint) { client, moto in
                let data = testBytes(11 * (1 << 20), seed: 5)
                let path = try temporaryFile(data)
                defer { try? FileManager.default.removeItem(atPath: path) }
                try await proxy.set(.init(mode: .internalError, count: 1000, method: "PUT", pathContains: "partNumber=2"))
                let error = await #expect(throws: S3Error.self) { try await client.putFile("doomed", path: path) }
                #expect(error?.code == .server)
                #expect(error?.attempts == 5)
                #expect(error.map { $0.tsBackupError(endpoint: "e", bucket: client.bucket).exitCode } == 1)
                try await proxy.set(.none)
                #expect(try await client.listMultipartUploads().isEmpty, "the failed upload was aborted")
                #expect(try await client.headObject("doomed") == nil)
                #expect(client.stats.retryEvents.filter { $0.operation.hasPrefix("UploadPart 2/") }.count == 4)
                // Throttling that never ends is reported as such.
                try await proxy.set(.init(mode: .slowDown, count: 1000, method: "GET"))
                let throttled = await #expect(throws: S3Error.self) { try await client.listObjects() }
                #expect(throttled?.code == .slowDown && throttled?.attempts == 5)
                try await proxy.set(.none)
                _ = moto
            }
        }
    }
}

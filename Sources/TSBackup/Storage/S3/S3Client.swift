import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization

/// A small S3 client for one bucket: SigV4-signed requests over async-http-client, with retries,
/// multipart uploads and parallel ranged downloads.
///
/// Every request's body is produced by a closure that is called again for each attempt, so a
/// retried upload re-reads (or re-encrypts) its bytes instead of keeping them all in memory. Peak
/// memory of an upload or download is about `effectiveConcurrency x partSize` (see ``Options``).
///
/// Call ``shutdown()`` when done.
public final class S3Client: Sendable {
    /// Tuning; the defaults suit AWS and local stores alike.
    public struct Options: Sendable {
        public var retry = S3RetryPolicy()
        /// Parallel part uploads / ranged downloads per object.
        public var concurrency = 4
        /// Objects of at most this size are sent in one PutObject.
        public var multipartThreshold: Int64 = 16 << 20
        /// The smallest multipart part (S3's minimum is 5 MiB).
        public var minimumPartSize: Int64 = 8 << 20
        /// Upper bound of part buffers held at once by the whole client (all transfers together);
        /// per-object concurrency is also reduced when parts are large (a 5 TB object has ~525 MiB
        /// parts) so memory stays under it.
        public var memoryBudget: Int64 = 128 << 20
        /// Time to establish a connection.
        public var connectTimeout: Duration = .seconds(10)
        /// Longest silence while waiting for bytes before the attempt counts as stalled.
        public var readTimeout: Duration = .seconds(60)
        /// Connections kept per host.
        public var connectionsPerHost = 8

        public init() {}
    }

    public let settings: S3Settings
    public let bucket: String
    public let options: Options
    let http: HTTPClient
    let signer: S3Signer
    let logger: Logger
    /// Part buffers in flight across every transfer of this client.
    let budget: S3MemoryBudget
    private let counters = Mutex(S3Stats())

    /// - Parameters:
    ///   - settings: endpoint, region and credentials (``S3Settings/fromEnvironment(_:homeDirectory:)``).
    ///   - bucket: the bucket every key of this client lives in.
    public init(settings: S3Settings, bucket: String, options: Options = Options(),
                logger: Logger = Logger(label: "tsbackup.s3")) {
        self.settings = settings
        self.bucket = bucket
        self.options = options
        self.logger = logger
        self.signer = S3Signer(credentials: settings.credentials, region: settings.region)
        self.budget = S3MemoryBudget(limit: options.memoryBudget)
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .nanoseconds(Self.nanoseconds(options.connectTimeout)),
                                      read: .nanoseconds(Self.nanoseconds(options.readTimeout)))
        configuration.connectionPool = .init(idleTimeout: .seconds(30),
                                             concurrentHTTP1ConnectionsPerHostSoftLimit: max(options.connectionsPerHost, options.concurrency))
        // A failed connect fails the attempt at once; our own loop retries it with backoff and
        // counts it (the pool's internal retries would wait out the connect timeout silently).
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.decompression = .disabled
        configuration.httpVersion = .http1Only
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Closes the connections. The client cannot be used afterwards.
    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// Traffic so far: requests, retries (each one listed), bytes.
    public var stats: S3Stats { counters.withLock { $0 } }

    // MARK: Requests

    /// A request before signing: the key is decoded (encoded when the URL is built).
    struct Request: Sendable {
        var method: HTTPMethod
        /// nil for bucket-level operations.
        var key: String?
        var query: [(String, String)] = []
        var headers: [(String, String)] = []
        /// For errors and retry reports: "PutObject", "UploadPart 3"...
        var operation: String
        /// Response bodies above this are refused (protects memory against a misbehaving server).
        var responseLimit: Int = 16 << 20
    }

    struct Response: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: Data
    }

    /// Produces a request body for one attempt.
    typealias BodySource = @Sendable () async throws -> Data

    /// Sends a request with retries. Returns the response when its status is 2xx or in
    /// `accept`; throws ``S3Error`` otherwise.
    func send(_ request: Request, body: BodySource? = nil, accept: Set<Int> = []) async throws -> Response {
        let policy = options.retry
        var attempt = 0
        while true {
            attempt += 1
            try Task.checkCancellation()
            let payload: Data
            do {
                payload = try await body?() ?? Data()
            } catch let error as S3Error {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // The caller's reader failed (a file vanished, encryption failed): not a store
                // problem, and not retried.
                throw S3Error(code: .other, key: request.key, operation: request.operation,
                              message: "could not produce the bytes to upload: \(error)", attempts: attempt)
            }
            let response: Response
            do {
                response = try await execute(request, payload: payload)
            } catch is CancellationError {
                throw CancellationError()
            } catch is NIOTooManyBytesError {
                // The store sent more than the request can yield (a Range it ignored): not a
                // transport fault, and retrying would get the same answer.
                throw S3Error(code: .other, key: request.key, operation: request.operation,
                              message: "the response body is larger than the \(request.responseLimit) bytes asked for", attempts: attempt)
            } catch {
                if Task.isCancelled { throw CancellationError() }
                let reason = Self.describeTransportError(error)
                if attempt < policy.maxAttempts {
                    recordRetry(request, attempt: attempt, reason: reason)
                    try await Task.sleep(for: policy.delay(afterAttempt: attempt))
                    continue
                }
                throw S3Error(code: .unreachable, key: request.key, operation: request.operation,
                              message: reason, attempts: attempt)
            }
            counters.withLock {
                $0.bytesUploaded += Int64(payload.count)
                $0.bytesDownloaded += Int64(response.body.count)
            }
            if (200..<300).contains(response.status) || accept.contains(response.status) {
                return response
            }
            let parsed = S3XML.error(response.body)
            if S3RetryPolicy.isRetryable(status: response.status, s3Code: parsed?.code), attempt < policy.maxAttempts {
                recordRetry(request, attempt: attempt, reason: "HTTP \(response.status)\(parsed?.code.map { " \($0)" } ?? "")")
                try await Task.sleep(for: policy.delay(afterAttempt: attempt))
                continue
            }
            throw Self.error(for: response, parsed: parsed, request: request, attempts: attempt)
        }
    }

    /// One attempt: sign, send, collect the body.
    private func execute(_ request: Request, payload: Data) async throws -> Response {
        let target = url(for: request.key)
        var headers = request.headers
        let payloadHash = S3Signer.payloadHash(payload)
        headers.append(("x-amz-content-sha256", payloadHash))
        let signed = signer.sign(method: request.method.rawValue, host: target.host, path: target.path,
                                 query: request.query, headers: headers, payloadHash: payloadHash, date: Date())
        let query = S3Signer.canonicalQuery(request.query)
        var httpRequest = HTTPClientRequest(url: target.base + S3Signer.canonicalPath(target.path) + (query.isEmpty ? "" : "?" + query))
        httpRequest.method = request.method
        httpRequest.headers.add(name: "Host", value: target.host)
        for header in signed.headers { httpRequest.headers.add(name: header.name, value: header.value) }
        if !payload.isEmpty || request.method == .PUT || request.method == .POST {
            httpRequest.body = .bytes(payload)
        }
        counters.withLock { $0.requests += 1 }
        let response = try await http.execute(httpRequest, timeout: .hours(24), logger: logger)
        let isHead = request.method == .HEAD
        let limit = (200..<300).contains(Int(response.status.code)) ? request.responseLimit : 1 << 20
        var buffer = ByteBuffer()
        if !isHead {
            // Sized once from Content-Length: growing by doubling would briefly hold a part twice.
            if let length = response.headers.first(name: "Content-Length").flatMap(Int.init), length <= limit {
                buffer.reserveCapacity(length)
            }
            for try await chunk in response.body {
                guard buffer.readableBytes + chunk.readableBytes <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
                buffer.writeImmutableBuffer(chunk)
            }
        }
        // No copy: the Data keeps the buffer's storage alive, so a part is in memory once.
        return Response(status: Int(response.status.code), headers: response.headers,
                        body: Data(buffer: buffer, byteTransferStrategy: .noCopy))
    }

    private func recordRetry(_ request: Request, attempt: Int, reason: String) {
        logger.notice("S3 \(request.operation) attempt \(attempt) failed (\(reason)); retrying", metadata: request.key.map { ["key": .string($0)] })
        counters.withLock {
            $0.retries += 1
            if $0.retryEvents.count < S3Stats.retryEventLimit {
                $0.retryEvents.append(S3RetryEvent(operation: request.operation, key: request.key, attempt: attempt, reason: reason))
            }
        }
    }

    static func error(for response: Response, parsed: S3XML.ErrorBody?, request: Request, attempts: Int) -> S3Error {
        var code = S3Error.classify(status: response.status, s3Code: parsed?.code)
        // A HEAD answer has no body: a 404 there may be the bucket or the key; callers decide.
        if code == .noSuchKey, request.key == nil { code = .noSuchBucket }
        let message = parsed?.message ?? HTTPResponseStatus(statusCode: response.status).reasonPhrase
        return S3Error(code: code, status: response.status, s3Code: parsed?.code, key: request.key,
                       operation: request.operation, message: message, attempts: attempts)
    }

    /// A transport failure in words, without anything secret (these errors carry no headers).
    static func describeTransportError(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connect timed out"
            case .readTimeout: return "no data within the read timeout (stalled)"
            case .remoteConnectionClosed: return "connection closed by the server"
            case .deadlineExceeded: return "request deadline exceeded"
            case .bodyLengthMismatch: return "response body shorter than announced (connection cut mid-body)"
            default: return "HTTP client error: \(error)"
            }
        }
        let text = String(describing: error)
        if text.contains("ECONNREFUSED") || text.lowercased().contains("connection refused") { return "connection refused" }
        if text.contains("ECONNRESET") || text.lowercased().contains("connection reset") { return "connection reset" }
        return text
    }

    // MARK: Addressing

    struct Target {
        /// scheme://host[:port]
        var base: String
        /// The Host header as sent and signed.
        var host: String
        /// Decoded path.
        var path: String
    }

    func url(for key: String?) -> Target {
        Self.target(settings: settings, bucket: bucket, key: key)
    }

    static func target(settings: S3Settings, bucket: String, key: String?) -> Target {
        if let endpoint = settings.endpoint {
            let scheme = endpoint.scheme?.lowercased() ?? "https"
            let hostName = endpoint.host ?? "localhost"
            var host = hostName.contains(":") ? "[\(hostName)]" : hostName
            if let port = endpoint.port, !(scheme == "http" && port == 80), !(scheme == "https" && port == 443) {
                host += ":\(port)"
            }
            var basePath = endpoint.path
            while basePath.hasSuffix("/") { basePath.removeLast() }
            switch settings.addressingStyle {
            case .path:
                return Target(base: "\(scheme)://\(host)", host: host,
                              path: basePath + "/" + bucket + (key.map { "/" + $0 } ?? ""))
            case .virtualHosted:
                let vhost = bucket + "." + host
                return Target(base: "\(scheme)://\(vhost)", host: vhost, path: basePath + "/" + (key ?? ""))
            }
        }
        let awsHost = "s3.\(settings.region).amazonaws.com"
        switch settings.addressingStyle {
        case .virtualHosted:
            let host = "\(bucket).\(awsHost)"
            return Target(base: "https://\(host)", host: host, path: "/" + (key ?? ""))
        case .path:
            return Target(base: "https://\(awsHost)", host: awsHost, path: "/" + bucket + (key.map { "/" + $0 } ?? ""))
        }
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}

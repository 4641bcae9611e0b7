import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Where notifications go: a URL that receives a JSON POST on failure and on recovery.
public struct WebhookTarget: Sendable, Equatable {
    public var url: String
    /// The transitions this target wants (default: both).
    public var events: Set<AlertState.Transition>
    /// A shared secret: when set, each POST carries `X-TSBackup-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    /// Read from a file or an environment variable by the service's configuration, never inline.
    public var secret: String?
    /// Attempts per notification (the first one included), at least 1.
    public var attempts: Int
    /// Seconds before the first retry; doubled for each following one.
    public var retryDelay: Double
    /// Seconds one attempt may take.
    public var timeout: Double

    public init(url: String, events: Set<AlertState.Transition> = [.failure, .recovery], secret: String? = nil,
                attempts: Int = 4, retryDelay: Double = 1, timeout: Double = 10) {
        self.url = url
        self.events = events
        self.secret = secret
        self.attempts = max(1, attempts)
        self.retryDelay = retryDelay
        self.timeout = timeout
    }

    /// The URL without credentials or query (a webhook URL may carry a token), for logs and errors.
    public var displayURL: String {
        guard var components = URLComponents(string: url) else { return "(unparsable URL)" }
        components.user = nil
        components.password = nil
        components.query = nil
        return components.string ?? "(unparsable URL)"
    }
}

/// The JSON body of a notification.
public struct WebhookEvent: Codable, Sendable, Equatable {
    public var event: AlertState.Transition
    public var database: String
    public var check: AlertState.Check
    /// When the failing streak began (for a recovery: how long it lasted).
    public var since: Date
    public var at: Date
    /// What failed, or what succeeded again (one paragraph).
    public var message: String
    public var jobID: String?
    public var backupID: String?
    public var service: String = "tsbackup"

    public init(event: AlertState.Transition, database: String, check: AlertState.Check, since: Date, at: Date, message: String,
                jobID: String? = nil, backupID: String? = nil) {
        self.event = event
        self.database = database
        self.check = check
        self.since = since
        self.at = at
        self.message = message
        self.jobID = jobID
        self.backupID = backupID
    }

    enum CodingKeys: String, CodingKey {
        case event, database, check, since, at, message
        case jobID = "job_id"
        case backupID = "backup_id"
        case service
    }

    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)) ?? Data()
    }
}

/// Sends notifications to every configured target, retrying a bounded number of times with
/// doubling delays on connection errors, timeouts, 408, 429 and 5xx; other 4xx answers are final.
public actor WebhookNotifier {
    public struct Delivery: Sendable, Equatable {
        public var target: String
        public var delivered: Bool
        public var attempts: Int
        /// The last HTTP status, if any answer came.
        public var status: Int?
        public var error: String?
    }

    let targets: [WebhookTarget]
    let client: HTTPClient
    let logger: Logger
    private var pending: [Task<[Delivery], Never>] = []

    /// The client's settings: a connection that cannot be made (refused: nothing listens there)
    /// fails the attempt at once. AsyncHTTPClient's default retries it with backoff until the
    /// attempt's deadline, so an unreachable target held every attempt for its whole timeout;
    /// here the notifier's own attempts and delays are the retry policy.
    public static var clientConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    /// One client for every notifier of the process (like `HTTPClient.shared`, never shut down).
    public static let sharedClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)

    public init(targets: [WebhookTarget], client: HTTPClient = WebhookNotifier.sharedClient, logger: Logger = Logger(label: "tsbackup.webhooks")) {
        self.targets = targets
        self.client = client
        self.logger = logger
    }

    /// Sends `event` in the background; ``drain()`` waits for what is in flight.
    public func post(_ event: WebhookEvent) {
        pending.removeAll { $0.isCancelled }
        let task = Task { await self.deliver(event) }
        pending.append(task)
    }

    /// Waits for every notification in flight (at shutdown, and in tests).
    @discardableResult
    public func drain() async -> [Delivery] {
        let tasks = pending
        pending.removeAll()
        var all: [Delivery] = []
        for task in tasks { all += await task.value }
        return all
    }

    /// Sends `event` to every target that wants it and returns how each delivery went.
    public func deliver(_ event: WebhookEvent) async -> [Delivery] {
        let body = event.encoded()
        var results: [Delivery] = []
        for target in targets where target.events.contains(event.event) {
            results.append(await deliver(body, to: target, event: event))
        }
        return results
    }

    private func deliver(_ body: Data, to target: WebhookTarget, event: WebhookEvent) async -> Delivery {
        var delivery = Delivery(target: target.displayURL, delivered: false, attempts: 0, status: nil, error: nil)
        var delay = target.retryDelay
        while delivery.attempts < target.attempts {
            if delivery.attempts > 0 {
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                delay *= 2
            }
            delivery.attempts += 1
            var request = HTTPClientRequest(url: target.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "tsbackup")
            request.headers.add(name: "X-TSBackup-Event", value: event.event.rawValue)
            if let secret = target.secret {
                let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
                request.headers.add(name: "X-TSBackup-Signature", value: "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
            }
            request.body = .bytes(ByteBuffer(bytes: body))
            do {
                let response = try await client.execute(request, timeout: .milliseconds(Int64(target.timeout * 1000)))
                // The answer's body is not needed; read a little so the connection can be reused.
                _ = try? await response.body.collect(upTo: 64 * 1024)
                let status = Int(response.status.code)
                delivery.status = status
                if (200..<300).contains(status) {
                    delivery.delivered = true
                    delivery.error = nil
                    logger.info("webhook delivered", metadata: ["target": "\(target.displayURL)", "event": "\(event.event.rawValue)",
                                                               "database": "\(event.database)", "attempts": "\(delivery.attempts)"])
                    return delivery
                }
                delivery.error = "HTTP \(status)"
                let retryable = status == 408 || status == 429 || status >= 500
                if !retryable { break }
            } catch {
                delivery.status = nil
                delivery.error = "\(error)"
            }
            logger.warning("webhook attempt failed", metadata: ["target": "\(target.displayURL)", "attempt": "\(delivery.attempts)",
                                                               "error": "\(delivery.error ?? "")"])
        }
        logger.error("webhook not delivered", metadata: ["target": "\(target.displayURL)", "event": "\(event.event.rawValue)",
                                                        "database": "\(event.database)", "attempts": "\(delivery.attempts)",
                                                        "error": "\(delivery.error ?? "")"])
        return delivery
    }
}

import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import Testing
import TSBackup
import TSBackupSandbox

@Suite("webhooks: JSON POSTs on failure and recovery, bounded retries, against a local receiver")
struct WebhookTests {
    static let event = WebhookEvent(event: .failure, database: "metrics", check: .backup,
                                    since: Date(timeIntervalSince1970: 1_800_000_000), at: Date(timeIntervalSince1970: 1_800_000_060),
                                    message: "Backup of metrics failed: cannot connect.", jobID: "42")

    // The receiver's targets get a timeout of five minutes, a hang guard: an attempt that timed
    // out on a loaded machine would be one more attempt than the tests count.
    @Test("a notification is retried after 5xx answers until delivered, with the same signed body")
    func retriesUntilDelivered() async throws {
        let receiver = try await WebhookReceiver.start(statuses: [500, 503])
        defer { Task { await receiver.stop() } }
        let notifier = WebhookNotifier(targets: [WebhookTarget(url: receiver.url, secret: "s3cret", attempts: 4, retryDelay: 0.05, timeout: 300)])
        let deliveries = await notifier.deliver(Self.event)
        #expect(deliveries.count == 1)
        #expect(deliveries.first?.delivered == true)
        #expect(deliveries.first?.attempts == 3)
        #expect(deliveries.first?.status == 200)
        let received = receiver.received()
        #expect(received.count == 3)
        #expect(Set(received.map(\.body)).count == 1, "every attempt carries the same body")
        let body = try #require(received.last)
        #expect(body.path == "/hook")
        #expect(body.headers["content-type"] == "application/json")
        #expect(body.headers["x-tsbackup-event"] == "failure")
        let json = try #require(body.json)
        #expect(json["event"] as? String == "failure")
        #expect(json["database"] as? String == "metrics")
        #expect(json["check"] as? String == "backup")
        #expect(json["job_id"] as? String == "42")
        #expect(json["since"] as? String == "2027-01-15T08:00:00Z")
        // The signature is an HMAC-SHA256 of the body with the shared secret, computed independently here.
        let mac = HMAC<SHA256>.authenticationCode(for: Data(body.body.utf8), using: SymmetricKey(data: Data("s3cret".utf8)))
        #expect(body.headers["x-tsbackup-signature"] == "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
    }

    @Test("retries are bounded: a receiver that always fails gets exactly the configured attempts")
    func boundedRetries() async throws {
        let receiver = try await WebhookReceiver.start(statuses: Array(repeating: 500, count: 10))
        defer { Task { await receiver.stop() } }
        let notifier = WebhookNotifier(targets: [WebhookTarget(url: receiver.url, attempts: 3, retryDelay: 0.05, timeout: 300)])
        let deliveries = await notifier.deliver(Self.event)
        #expect(deliveries.first?.delivered == false)
        #expect(deliveries.first?.attempts == 3)
        #expect(deliveries.first?.error == "HTTP 500")
        #expect(receiver.received().count == 3)
    }

    @Test("a 4xx answer (other than 408/429) is final; an unreachable target fails after its attempts")
    func finalAnswersAndUnreachable() async throws {
        let receiver = try await WebhookReceiver.start(statuses: [404])
        defer { Task { await receiver.stop() } }
        let closedPort = try SandboxCluster.freeLoopbackPort()
        let notifier = WebhookNotifier(targets: [
            WebhookTarget(url: receiver.url, attempts: 4, retryDelay: 0.05, timeout: 300),
            // The default timeout: a refused connection fails its attempt at once (see below).
            WebhookTarget(url: "http://127.0.0.1:\(closedPort)/hook?token=secret", attempts: 2, retryDelay: 0.05),
        ])
        let deliveries = await notifier.deliver(Self.event)
        #expect(deliveries.count == 2)
        #expect(deliveries[0].delivered == false && deliveries[0].attempts == 1 && deliveries[0].status == 404)
        #expect(deliveries[1].delivered == false && deliveries[1].attempts == 2 && deliveries[1].status == nil)
        // The query (which may hold a token) never appears in what is reported.
        #expect(!deliveries[1].target.contains("secret"))
        #expect(receiver.received().count == 1)
    }

    // The notifier's client settings with an hour, not 10 s, to make a connection, and an hour
    // per attempt: were a refused connection tried again until then (AsyncHTTPClient's default,
    // which the notifier used to have), the three attempts would take three hours and the
    // test's 10-minute hang guard would fail it. Nothing here measures how long an attempt took.
    @Test("a refused connection fails its attempt at once; the notifier's attempts and delays are the retry policy",
          .timeLimit(.minutes(10)))
    func refusedConnectionFailsTheAttempt() async throws {
        #expect(WebhookNotifier.clientConfiguration.connectionPool.retryConnectionEstablishment == false)
        var configuration = WebhookNotifier.clientConfiguration
        configuration.timeout.connect = .hours(1)
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let closedPort = try SandboxCluster.freeLoopbackPort()
        let notifier = WebhookNotifier(targets: [WebhookTarget(url: "http://127.0.0.1:\(closedPort)/hook", attempts: 3, retryDelay: 0.05, timeout: 3600)],
                                       client: client)
        let deliveries = await notifier.deliver(Self.event)
        try await client.shutdown()
        #expect(deliveries.count == 1)
        #expect(deliveries.first?.delivered == false)
        #expect(deliveries.first?.attempts == 3)
        #expect(deliveries.first?.status == nil)
        #expect(deliveries.first?.error?.isEmpty == false)
    }

    @Test("targets get only the transitions they asked for; post() runs in the background and drain() waits")
    func eventFilterAndBackground() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { Task { await receiver.stop() } }
        let notifier = WebhookNotifier(targets: [WebhookTarget(url: receiver.url, events: [.recovery], retryDelay: 0.05, timeout: 300)])
        await notifier.post(Self.event)
        var recovery = Self.event
        recovery.event = .recovery
        await notifier.post(recovery)
        let deliveries = await notifier.drain()
        #expect(deliveries.count == 1)
        #expect(receiver.received().count == 1)
        #expect(receiver.received().first?.json?["event"] as? String == "recovery")
    }
}

import Foundation

/// One retried attempt, kept so a report can show every retry.
public struct S3RetryEvent: Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var key: String?
    /// The attempt that failed (1-based); the next one is `attempt + 1`.
    public var attempt: Int
    /// What went wrong: "HTTP 503 SlowDown", "connection reset"...
    public var reason: String

    public var description: String {
        "\(operation)\(key.map { " \"\($0)\"" } ?? ""): attempt \(attempt) failed (\(reason)), retried"
    }
}

/// Counters of one client's traffic.
///
/// `bytesUploaded`/`bytesDownloaded` count request and response bodies of every attempt that got
/// a response, so retried parts are counted each time they went over the wire.
public struct S3Stats: Sendable, Equatable {
    /// HTTP requests sent (every attempt, successful or not).
    public var requests = 0
    /// Attempts that failed and were retried.
    public var retries = 0
    public var bytesUploaded: Int64 = 0
    public var bytesDownloaded: Int64 = 0
    /// Every retry, oldest first (the first `retryEventLimit` of them).
    public var retryEvents: [S3RetryEvent] = []

    static let retryEventLimit = 10_000

    public init() {}

    /// One line for a report naming every retry (the first 20 in full), or nil without retries.
    public var retrySummary: String? {
        guard retries > 0 else { return nil }
        let shown = retryEvents.prefix(20).map(\.description).joined(separator: "; ")
        let more = retryEvents.count > 20 ? "; and \(retryEvents.count - 20) more" : ""
        return "S3: \(retries) of \(requests) requests failed and were retried: \(shown)\(more)."
    }
}

import Foundation

/// Exponential backoff with full jitter: before attempt n+1 sleep a uniformly random time in
/// [0, min(maxDelay, baseDelay * 2^(n-1))] (the AWS architecture blog's "full jitter", which
/// spreads retrying clients out instead of having them hit a throttled store in lockstep).
public struct S3RetryPolicy: Sendable, Equatable {
    /// Attempts in total, including the first (at least 1).
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(maxAttempts: Int = 5, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(10)) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The upper bound of the delay after the `attempt`-th failure (1-based).
    public func delayCap(afterAttempt attempt: Int) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let cap = baseDelay * (1 << exponent)
        return cap > maxDelay ? maxDelay : cap
    }

    /// A jittered delay in [0, cap].
    public func delay(afterAttempt attempt: Int) -> Duration {
        let cap = delayCap(afterAttempt: attempt)
        let capNanos = cap.components.seconds * 1_000_000_000 + cap.components.attoseconds / 1_000_000_000
        guard capNanos > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...capNanos))
    }

    /// Whether an HTTP answer is worth another attempt: 5xx, 429, and the S3 codes that mean
    /// "try again" even under a 4xx status.
    static func isRetryable(status: Int, s3Code: String?) -> Bool {
        if status >= 500 || status == 429 { return true }
        switch s3Code {
        case "SlowDown", "RequestTimeout", "InternalError", "Throttling", "ThrottlingException",
             "ServiceUnavailable": return true
        default: return false
        }
    }
}

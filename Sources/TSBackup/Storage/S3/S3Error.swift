import Foundation

/// A failed S3 operation, typed so callers branch on `code`, never on message text.
///
/// Nothing here holds a secret: the message comes from the server's XML error body (which never
/// echoes the secret) or from our own text; the access key id may appear, the secret never does.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// The endpoint could not be reached: refused, unknown host, reset, timed out (after retries).
        case unreachable
        /// InvalidAccessKeyId: the access key id is unknown to the store.
        case invalidCredentials
        /// SignatureDoesNotMatch: the secret is wrong (or the clock is far off).
        case signatureMismatch
        /// AccessDenied / 403: the key lacks permission.
        case accessDenied
        /// NoSuchBucket.
        case noSuchBucket
        /// NoSuchKey / 404 on an object.
        case noSuchKey
        /// 412: a conditional write (If-None-Match: *) found the object already there.
        case preconditionFailed
        /// 503 SlowDown / 429, still throttled after every retry.
        case slowDown
        /// 5xx, still failing after every retry.
        case server
        /// Anything else (a 4xx we do not map, a malformed response, a reader that failed).
        case other
    }

    public var code: Code
    /// The HTTP status, when a response arrived.
    public var status: Int?
    /// The S3 error code from the XML body (`NoSuchBucket`, `SlowDown`...).
    public var s3Code: String?
    /// The object key (or bucket-level operation) concerned.
    public var key: String?
    public var operation: String
    /// The server's message, or ours.
    public var message: String
    /// How many attempts were made.
    public var attempts: Int
    /// For DeleteObjects: every key the store refused to delete.
    public var deleteFailures: [S3DeleteFailure] = []

    public init(code: Code, status: Int? = nil, s3Code: String? = nil, key: String? = nil, operation: String,
                message: String, attempts: Int = 1) {
        self.code = code
        self.status = status
        self.s3Code = s3Code
        self.key = key
        self.operation = operation
        self.message = message
        self.attempts = attempts
    }

    public var description: String {
        var parts = ["S3 \(operation)"]
        if let key { parts[0] += " of \"\(key)\"" }
        parts[0] += " failed"
        if let status { parts.append("HTTP \(status)") }
        if let s3Code { parts.append(s3Code) }
        return parts.joined(separator: ": ") + ": " + message + (attempts > 1 ? " (after \(attempts) attempts)" : "")
    }

    /// Maps a status and S3 error code to our code.
    static func classify(status: Int, s3Code: String?) -> Code {
        switch s3Code {
        case "InvalidAccessKeyId": return .invalidCredentials
        case "SignatureDoesNotMatch": return .signatureMismatch
        case "AccessDenied", "AllAccessDisabled", "InvalidToken", "ExpiredToken", "TokenRefreshRequired": return .accessDenied
        case "NoSuchBucket": return .noSuchBucket
        case "NoSuchKey": return .noSuchKey
        case "PreconditionFailed": return .preconditionFailed
        case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded": return .slowDown
        default: break
        }
        switch status {
        case 403: return .accessDenied
        case 404: return .noSuchKey
        case 412: return .preconditionFailed
        case 429: return .slowDown
        case 503: return .slowDown
        case 500...599: return .server
        default: return .other
        }
    }
}

extension S3Error {
    /// The user-facing error: one paragraph that says what to do, with the exit kind.
    ///
    /// - Parameter endpoint: how to name the store (`settings.endpointDescription`), never a URL
    ///   with credentials.
    public func tsBackupError(endpoint: String, bucket: String) -> TSBackupError {
        let what = key.map { "\(operation) of \"\($0)\" in bucket \"\(bucket)\"" } ?? "\(operation) on bucket \"\(bucket)\""
        let detail = message.isEmpty ? "" : " The store said: \(message)"
        switch code {
        case .unreachable:
            return TSBackupError(.connection, "Could not reach the S3 endpoint \(endpoint) for \(what) after \(attempts) attempt\(attempts == 1 ? "" : "s"): \(message). Check the endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL), that the server is running and reachable from this machine, and any proxy or firewall in between.")
        case .invalidCredentials:
            return TSBackupError(.permission, "The S3 endpoint \(endpoint) does not know the access key id used for \(what) (InvalidAccessKeyId). Check AWS_ACCESS_KEY_ID or the aws_access_key_id of the AWS_PROFILE in use, and that the key belongs to this endpoint and region.")
        case .signatureMismatch:
            return TSBackupError(.permission, "The S3 endpoint \(endpoint) rejected the request signature for \(what) (SignatureDoesNotMatch): the secret access key is wrong, or this machine's clock is far off. Check AWS_SECRET_ACCESS_KEY or the aws_secret_access_key of the AWS_PROFILE in use, and the system time.")
        case .accessDenied:
            return TSBackupError(.permission, "The S3 endpoint \(endpoint) denied \(what) (\(s3Code ?? "HTTP \(status ?? 403)")). Grant the key s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket and s3:AbortMultipartUpload on the bucket and its keys, or use a key that has them; a temporary key may have expired (renew AWS_SESSION_TOKEN).\(detail)")
        case .noSuchBucket:
            return TSBackupError(.notFound, "The bucket \"\(bucket)\" does not exist at \(endpoint). Create it first (e.g. `aws s3 mb s3://\(bucket)`), or correct the bucket name in --repo / TSBACKUP_REPO and the region (AWS_REGION).")
        case .noSuchKey:
            return TSBackupError(.failed, "The object \"\(key ?? "?")\" is missing from bucket \"\(bucket)\" at \(endpoint). The repository is incomplete or was changed outside tsbackup; run `tsbackup verify` to see what else is affected.")
        case .preconditionFailed:
            return TSBackupError(.failed, "The object \"\(key ?? "?")\" in bucket \"\(bucket)\" already exists, so the conditional write for \(operation) was refused. Another run may be writing the same repository; check for it, then retry.")
        case .slowDown, .server:
            return TSBackupError(.failed, "The S3 endpoint \(endpoint) kept failing \(what) with \(s3Code ?? "HTTP \(status ?? 500)") after \(attempts) attempts. The store is overloaded or failing; retry later, and check its health.\(detail)")
        case .other where ["PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "IncorrectEndpoint"].contains(s3Code ?? ""):
            return TSBackupError(.failed, "The bucket \"\(bucket)\" is not in the region tsbackup used (\(s3Code ?? "")) for \(what) at \(endpoint). Set AWS_REGION (or the profile's region) to the bucket's region.\(detail)")
        case .other:
            return TSBackupError(.failed, "S3 \(what) at \(endpoint) failed\(status.map { " with HTTP \($0)" } ?? "")\(s3Code.map { " (\($0))" } ?? ""): \(message). Check the bucket's configuration and the endpoint, then retry.")
        }
    }
}

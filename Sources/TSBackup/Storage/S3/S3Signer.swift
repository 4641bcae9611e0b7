import Crypto
import Foundation

/// AWS Signature Version 4 in the `Authorization` header.
///
/// Pure and deterministic for a given date, so it is tested against the published AWS vectors.
/// The canonical path is URI-encoded once (S3's rule); query names and values are encoded with
/// the same unreserved set and sorted by name, then value.
public struct S3Signer: Sendable {
    public var credentials: S3Credentials
    public var region: String
    public var service: String

    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The result of signing: the headers to send (the caller's, plus `x-amz-date`, the session
    /// token if any, and `Authorization`), and the intermediate strings for tests.
    public struct Signed: Sendable {
        public var headers: [(name: String, value: String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        public var authorization: String

        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    /// Signs a request.
    /// - Parameters:
    ///   - method: HTTP method.
    ///   - host: the `Host` header exactly as sent (`host` or `host:port` for a non-default port).
    ///   - path: the decoded path, beginning with `/` (encoded here).
    ///   - query: decoded query parameters (encoded here); a bare name is a pair with an empty value.
    ///   - headers: headers to sign besides host, x-amz-date and x-amz-security-token; S3 callers
    ///     include `x-amz-content-sha256`.
    ///   - payloadHash: hex SHA-256 of the body (the last line of the canonical request).
    ///   - date: signing time.
    public func sign(method: String, host: String, path: String, query: [(String, String)] = [],
                     headers: [(String, String)] = [], payloadHash: String, date: Date) -> Signed {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var all: [(String, String)] = headers
        if !all.contains(where: { $0.0.lowercased() == "host" }) { all.append(("host", host)) }
        all.append(("x-amz-date", amzDate))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }

        // Canonical headers: lowercase names, values trimmed with inner runs of spaces collapsed,
        // repeated names joined with commas in the order given, sorted by name.
        var grouped: [String: [String]] = [:]
        for (name, value) in all {
            grouped[name.lowercased(), default: []].append(Self.collapseSpaces(value))
        }
        let names = grouped.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(grouped[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")

        let canonicalRequest = [
            method.uppercased(),
            Self.canonicalPath(path),
            Self.canonicalQuery(query),
            canonicalHeaders,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        let key = signingKey(day: day)
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"

        var out = all.filter { $0.0.lowercased() != "host" }.map { (name: $0.0, value: $0.1) }
        out.append((name: "Authorization", value: authorization))
        return Signed(headers: out, canonicalRequest: canonicalRequest, stringToSign: stringToSign,
                      signature: signature, authorization: authorization)
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request").
    func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        return key
    }

    // MARK: Encoding

    /// `/` kept, every other byte outside A-Z a-z 0-9 - . _ ~ percent-encoded (uppercase hex).
    public static func canonicalPath(_ path: String) -> String {
        let p = path.isEmpty ? "/" : path
        return uriEncode(p, encodeSlash: false)
    }

    /// Pairs encoded, then sorted by name and value (byte order).
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        var pairs: [(name: String, value: String)] = []
        for (name, value) in query {
            pairs.append((name: uriEncode(name, encodeSlash: true), value: uriEncode(value, encodeSlash: true)))
        }
        pairs.sort { (a, b) -> Bool in a.name == b.name ? a.value < b.value : a.name < b.name }
        var parts: [String] = []
        for pair in pairs { parts.append(pair.name + "=" + pair.value) }
        return parts.joined(separator: "&")
    }

    /// RFC 3986 encoding as SigV4 defines it.
    public static func uriEncode(_ text: String, encodeSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let hexDigits: [Character] = Array("0123456789ABCDEF")
        for byte in text.utf8 {
            let isUnreserved = (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2D || byte == 0x2E || byte == 0x5F || byte == 0x7E
            if isUnreserved || (byte == 0x2F && !encodeSlash) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out.append("%")
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return out
    }

    static func collapseSpaces(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            .trimmingCharacters(in: .whitespaces)
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    public static func amzDate(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Hex SHA-256 of a payload, for `x-amz-content-sha256`.
    public static func payloadHash(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }
}

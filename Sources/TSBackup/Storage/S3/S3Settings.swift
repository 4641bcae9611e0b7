import Foundation

/// The access key pair (and optional session token) that signs S3 requests.
///
/// The description shows the access key id only; the secret and the token never appear in
/// descriptions, logs or errors.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public var accessKeyId: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "access key \(accessKeyId) (secret redacted\(sessionToken == nil ? "" : ", session token redacted"))"
    }
    public var debugDescription: String { description }
}

/// How bucket and key become a URL.
public enum S3AddressingStyle: String, Sendable, Equatable {
    /// `https://BUCKET.s3.REGION.amazonaws.com/KEY`: what AWS expects.
    case virtualHosted
    /// `ENDPOINT/BUCKET/KEY`: what MinIO, Ceph RGW, moto and most custom endpoints expect.
    case path
}

/// Where and as whom tsbackup talks to S3, read the way the AWS tools read it.
public struct S3Settings: Sendable, Equatable, CustomStringConvertible {
    public var credentials: S3Credentials
    public var region: String
    /// A custom endpoint (MinIO, Ceph, R2, moto...), or nil for AWS itself.
    public var endpoint: URL?
    public var addressingStyle: S3AddressingStyle
    /// Where the credentials came from, for messages ("environment", "profile default in ~/.aws/credentials").
    public var credentialSource: String

    public init(credentials: S3Credentials, region: String = "us-east-1", endpoint: URL? = nil,
                addressingStyle: S3AddressingStyle? = nil, credentialSource: String = "explicit") {
        self.credentials = credentials
        self.region = region
        self.endpoint = endpoint
        self.addressingStyle = addressingStyle ?? (endpoint == nil ? .virtualHosted : .path)
        self.credentialSource = credentialSource
    }

    public var description: String {
        "S3 \(endpointDescription), region \(region), \(addressingStyle == .path ? "path-style" : "virtual-hosted") addressing, \(credentials) from \(credentialSource)"
    }

    /// The endpoint as shown in messages: scheme, host and port only.
    public var endpointDescription: String {
        guard let endpoint else { return "AWS (s3.\(region).amazonaws.com)" }
        var text = "\(endpoint.scheme ?? "https")://\(endpoint.host ?? "")"
        if let port = endpoint.port { text += ":\(port)" }
        return text
    }

    /// Reads the settings from an environment and the user's AWS files, in the AWS tools' order:
    ///
    /// - credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else the
    ///   profile `AWS_PROFILE` (default `default`) in `AWS_SHARED_CREDENTIALS_FILE` (default
    ///   `~/.aws/credentials`), else the same profile in `AWS_CONFIG_FILE` (default `~/.aws/config`,
    ///   where it is `[profile NAME]` unless it is `default`);
    /// - region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else `us-east-1`;
    /// - endpoint: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`, else AWS.
    ///   A custom endpoint uses path-style addressing, AWS virtual-hosted.
    public static func fromEnvironment(_ environment: [String: String], homeDirectory: String) throws -> S3Settings {
        func value(_ name: String) -> String? {
            guard let v = environment[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        let profile = value("AWS_PROFILE") ?? value("AWS_DEFAULT_PROFILE") ?? "default"
        let credentialsPath = value("AWS_SHARED_CREDENTIALS_FILE").map { expandHome($0, homeDirectory) } ?? homeDirectory + "/.aws/credentials"
        let configPath = value("AWS_CONFIG_FILE").map { expandHome($0, homeDirectory) } ?? homeDirectory + "/.aws/config"
        let credentialsFile = try AWSConfigFile.load(path: credentialsPath)
        let configFile = try AWSConfigFile.load(path: configPath)
        let fromCredentials = credentialsFile?.section(profile)
        let fromConfig = configFile?.section(profile == "default" ? "default" : "profile \(profile)")
            ?? (profile == "default" ? nil : configFile?.section(profile))

        var credentials: S3Credentials?
        var source = ""
        if let id = value("AWS_ACCESS_KEY_ID"), let secret = value("AWS_SECRET_ACCESS_KEY") {
            credentials = S3Credentials(accessKeyId: id, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
            source = "the environment (AWS_ACCESS_KEY_ID)"
        } else if value("AWS_ACCESS_KEY_ID") != nil {
            throw TSBackupError(.usage, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not. Set both (or neither, to use the profile \"\(profile)\" from \(credentialsPath)).")
        } else {
            for (section, path) in [(fromCredentials, credentialsPath), (fromConfig, configPath)] {
                guard let section, let id = section["aws_access_key_id"] else { continue }
                guard let secret = section["aws_secret_access_key"] else {
                    throw TSBackupError(.usage, "The profile \"\(profile)\" in \(path) has aws_access_key_id but no aws_secret_access_key. Add the secret to that profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
                }
                credentials = S3Credentials(accessKeyId: id, secretAccessKey: secret, sessionToken: section["aws_session_token"])
                source = "profile \"\(profile)\" in \(path)"
                break
            }
        }
        guard let credentials else {
            let named = value("AWS_PROFILE") != nil ? "the profile \"\(profile)\" has no keys in \(credentialsPath) or \(configPath)" : "no AWS_ACCESS_KEY_ID is set and \(credentialsPath) has no [\(profile)] keys"
            throw TSBackupError(.usage, "No S3 credentials found: \(named). Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE naming a profile with aws_access_key_id and aws_secret_access_key.")
        }

        let region = value("AWS_REGION") ?? value("AWS_DEFAULT_REGION") ?? fromConfig?["region"] ?? fromCredentials?["region"] ?? "us-east-1"
        var endpoint: URL?
        let endpointText = value("AWS_ENDPOINT_URL_S3") ?? value("AWS_ENDPOINT_URL") ?? fromConfig?["endpoint_url"]
        if let endpointText {
            guard let url = URL(string: endpointText), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                  let host = url.host, !host.isEmpty, url.user == nil, url.password == nil, url.query == nil else {
                throw TSBackupError(.usage, "The S3 endpoint \"\(endpointText)\" (from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL) is not an http:// or https:// URL with a host. Give it as https://HOST[:PORT], e.g. http://127.0.0.1:9000 for a local MinIO.")
            }
            endpoint = url
        }
        return S3Settings(credentials: credentials, region: region, endpoint: endpoint, credentialSource: source)
    }

    private static func expandHome(_ path: String, _ home: String) -> String {
        path.hasPrefix("~/") ? home + path.dropFirst(1) : path
    }
}

/// An S3 repository location, `s3://BUCKET[/PREFIX]`.
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// Key prefix without leading or trailing slash; empty for the bucket's root.
    public var prefix: String

    public init(bucket: String, prefix: String = "") {
        self.bucket = bucket
        self.prefix = prefix.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    }

    /// Parses `s3://BUCKET[/PREFIX]`; throws a usage error naming what is wrong.
    public init(parsing text: String) throws {
        guard text.lowercased().hasPrefix("s3://") else {
            throw TSBackupError(.usage, "\"\(text)\" is not an S3 location. Write it as s3://BUCKET or s3://BUCKET/PREFIX.")
        }
        let rest = text.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        let prefix = String(rest.dropFirst(bucket.count))
        guard Self.isValidBucketName(bucket) else {
            throw TSBackupError(.usage, "\"\(bucket)\" in \(text) is not a valid S3 bucket name: it must be 3 to 63 lowercase letters, digits, dots or hyphens, beginning and ending with a letter or digit. Write the location as s3://BUCKET[/PREFIX].")
        }
        if prefix.contains("//") || prefix.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) {
            throw TSBackupError(.usage, "The prefix in \(text) has an empty, \".\" or \"..\" path segment. Write it as s3://BUCKET/a/b with plain segments.")
        }
        self.init(bucket: bucket, prefix: prefix)
    }

    public var description: String { prefix.isEmpty ? "s3://\(bucket)" : "s3://\(bucket)/\(prefix)" }

    /// The full key of `relativeKey` under this location's prefix.
    public func key(_ relativeKey: String) -> String {
        prefix.isEmpty ? relativeKey : prefix + "/" + relativeKey
    }

    /// The prefix to list under, with its trailing slash ("" for the root).
    public var listPrefix: String { prefix.isEmpty ? "" : prefix + "/" }

    /// S3's rules for new bucket names (what AWS accepts today).
    public static func isValidBucketName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        let allowed: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x2D }
        guard bytes.allSatisfy(allowed) else { return false }
        let alnum: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
        return alnum(bytes.first!) && alnum(bytes.last!) && !name.contains("..")
    }
}

/// The INI dialect of `~/.aws/credentials` and `~/.aws/config`: `[section]`, `key = value`,
/// comments with `#` or `;` at line start, indented lines continuing a nested block (skipped).
struct AWSConfigFile: Sendable {
    var sections: [String: [String: String]]

    func section(_ name: String) -> [String: String]? { sections[name] }

    static func load(path: String) throws -> AWSConfigFile? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        // /dev/null (AWS_CONFIG_FILE=/dev/null, as the AWS CLI allows) reads as no file at all.
        if let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType, type != .typeRegular {
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw TSBackupError(.permission, "Could not read \(path) (AWS credentials or config). Check that it is readable by this user and is UTF-8 text, or point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere.")
        }
        return parse(text)
    }

    static func parse(_ text: String) -> AWSConfigFile {
        var sections: [String: [String: String]] = [:]
        var current: String?
        var nestedKey = false
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                    .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                current = name
                nestedKey = false
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let section = current else { continue }
            // An indented line belongs to a nested block (e.g. "s3 =\n  max_concurrent_requests = 4").
            if rawLine.first == " " || rawLine.first == "\t" {
                if nestedKey { continue }
            }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            // Inline comments need whitespace before the marker, as in botocore.
            for marker in [" #", " ;", "\t#", "\t;"] {
                if let r = value.range(of: marker) { value = String(value[..<r.lowerBound]).trimmingCharacters(in: .whitespaces) }
            }
            nestedKey = value.isEmpty
            if !value.isEmpty { sections[section]?[key] = value }
        }
        return AWSConfigFile(sections: sections)
    }
}

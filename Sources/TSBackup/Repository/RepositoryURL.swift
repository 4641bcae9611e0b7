import Foundation

/// What `--repo` (or `TSBACKUP_REPO`) names: a local directory or an S3 bucket and prefix.
public enum RepositoryURL: Sendable, Equatable, CustomStringConvertible {
    /// A local directory, as an absolute, standardized path.
    case local(path: String)
    /// `s3://BUCKET[/PREFIX]`; `prefix` has no leading or trailing slash ("" for the bucket's root).
    case s3(bucket: String, prefix: String)

    /// Parses a path, `file:///path` or `s3://BUCKET[/PREFIX]`; anything else is a usage error.
    public static func parse(_ text: String) throws -> RepositoryURL {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else {
            throw TSBackupError(.usage, "--repo is empty. Give a directory, file:///PATH or s3://BUCKET[/PREFIX].")
        }
        if trimmed.lowercased().hasPrefix("s3://") {
            let rest = String(trimmed.dropFirst("s3://".count))
            let bucket = String(rest.prefix { $0 != "/" })
            let prefix = rest.dropFirst(bucket.count).split(separator: "/", omittingEmptySubsequences: true)
            guard isValidBucket(bucket) else {
                throw TSBackupError(.usage, "\"\(bucket)\" in --repo s3://\(bucket)/... is not a valid S3 bucket name (3-63 characters: lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit). Give --repo as s3://BUCKET[/PREFIX].")
            }
            guard !prefix.contains(where: { $0 == "." || $0 == ".." }), !rest.contains("?"), !rest.contains("#") else {
                throw TSBackupError(.usage, "The prefix of --repo s3://\(bucket)/... may not hold \".\" or \"..\" components, a query or a fragment. Give --repo as s3://BUCKET[/PREFIX].")
            }
            // A prefix ending in white space ("s3://b/x /") would not survive the trimming of its
            // own description, and control characters have no place in object keys or messages.
            guard prefix.last?.last?.isWhitespace != true, !rest.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) }) else {
                throw TSBackupError(.usage, "The prefix of --repo s3://\(bucket)/... may not end in white space or hold control characters. Give --repo as s3://BUCKET[/PREFIX].")
            }
            return .s3(bucket: bucket, prefix: prefix.joined(separator: "/"))
        }
        if trimmed.lowercased().hasPrefix("file://") {
            let rest = String(trimmed.dropFirst("file://".count))
            // file:///path (empty host) or file://localhost/path; a remote host is not a local path.
            let path: String
            if rest.hasPrefix("/") {
                path = rest
            } else if rest.lowercased().hasPrefix("localhost/") {
                path = String(rest.dropFirst("localhost".count))
            } else {
                throw TSBackupError(.usage, "--repo \(trimmed) names a host; a file: URL must be file:///ABSOLUTE/PATH. Give a local path, file:///PATH or s3://BUCKET[/PREFIX].")
            }
            let decoded = path.removingPercentEncoding ?? path
            return .local(path: URL(fileURLWithPath: decoded).standardizedFileURL.path)
        }
        if let colon = trimmed.range(of: "://") {
            let scheme = trimmed[..<colon.lowerBound]
            throw TSBackupError(.usage, "--repo does not support \(scheme):// repositories. Give a local path, file:///PATH or s3://BUCKET[/PREFIX] (S3 and S3-compatible stores such as MinIO).")
        }
        return .local(path: URL(fileURLWithPath: trimmed).standardizedFileURL.path)
    }

    /// S3's bucket naming rules (the DNS-compatible ones every S3-compatible store accepts).
    static func isValidBucket(_ name: String) -> Bool {
        guard (3...63).contains(name.count) else { return false }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard name.allSatisfy({ allowed.contains($0) }) else { return false }
        guard let first = name.first, let last = name.last, first.isLetter || first.isNumber, last.isLetter || last.isNumber else { return false }
        return !name.contains("..")
    }

    public var description: String {
        switch self {
        case .local(let path): path
        case .s3(let bucket, let prefix): "s3://\(bucket)" + (prefix.isEmpty ? "" : "/\(prefix)")
        }
    }
}

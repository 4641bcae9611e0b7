import Foundation

/// The checksum a stored manifest carries of itself.
///
/// Every file of an entry is checked against the SHA-256 its manifest records, but in an
/// unencrypted repository nothing checked the manifest: a flipped byte that still parses (a digit
/// of a row count, a letter of a label or of a file's recorded hash) went unnoticed. So, like
/// pgBackRest's manifest, ours carries a checksum of its own content, and a copy of it:
///
/// ```
/// {
///   "manifest_sha256" : "<hex>",          first key
///   ...the manifest as JSONOutput encodes it...,
///   "manifest_sha256_copy" : "<hex>"      last key
/// }
/// ```
///
/// `<hex>` is the SHA-256 of the canonical text: the stored bytes without those two lines and
/// without the comma added before the copy, which is exactly `JSONOutput.encode(manifest) + "\n"`.
/// Both lines are text the repository layer adds around the encoding, so every manifest kind gets
/// them without a field of its own, and readers that do not know them (older tsbackup) ignore them.
///
/// Two copies, far apart, because one damaged byte can take away at most one of them: a manifest
/// with one line but not the other is corrupt, and only a manifest with neither (and no mention
/// of `manifest_sha256` at all) is a manifest written before the checksum existed. Such a legacy
/// manifest is still read; `verify` warns that it cannot be checked.
enum ManifestChecksum {
    static let key = "manifest_sha256"
    static let copyKey = "manifest_sha256_copy"

    enum Outcome: Equatable {
        /// The checksum matched; `content` is the canonical text.
        case checked(content: Data)
        /// Written before manifests carried a checksum: readable, but nothing vouches for it.
        case legacy(content: Data)
        /// Damaged: `reason` says how (without naming the entry; the caller does).
        case corrupt(reason: String)
    }

    /// The stored text of `manifest`: its JSON encoding with the checksum first and its copy last.
    static func stored<Manifest: Encodable>(_ manifest: Manifest) throws -> Data {
        try stamped(JSONOutput.encode(manifest) + "\n")
    }

    /// `canonical` (a JSON object as JSONOutput encodes it, with a final newline) with the two
    /// checksum lines added.
    static func stamped(_ canonical: String) throws -> Data {
        var lines = canonical.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // "{", at least one member line, "}", "" (the final newline).
        guard lines.count >= 4, lines.first == "{", lines[lines.count - 2] == "}", lines.last == "" else {
            throw TSBackupError(.failed, "Internal error: a manifest did not encode as a JSON object on lines of its own; it was not stored.")
        }
        let hex = FileSystem.sha256(of: Data(canonical.utf8))
        lines[lines.count - 3] += ","
        lines.insert("  \"\(copyKey)\" : \"\(hex)\"", at: lines.count - 2)
        lines.insert("  \"\(key)\" : \"\(hex)\",", at: 1)
        return Data(lines.joined(separator: "\n").utf8)
    }

    /// Checks stored manifest text (already decrypted) against the checksum it carries. Works on
    /// bytes, not characters, so that no byte is normalized or merged ("\r\n") before hashing.
    static func open(_ stored: Data) -> Outcome {
        let newline = UInt8(ascii: "\n")
        var lines = Array(stored).split(separator: newline, omittingEmptySubsequences: false).map(Array.init)
        let header = lines.count > 1 ? value(of: key, in: lines[1], comma: true) : nil
        let copyIndex = lines.count - 3
        let copy = copyIndex > 1 ? value(of: copyKey, in: lines[copyIndex], comma: false) : nil
        if header == nil, copy == nil {
            if stored.range(of: Data(key.utf8)) != nil {
                return .corrupt(reason: "its checksum lines are damaged")
            }
            return .legacy(content: stored)
        }
        guard let header else { return .corrupt(reason: "its checksum (the first key) is missing or damaged; its copy (the last key) is intact") }
        guard let copy else { return .corrupt(reason: "the copy of its checksum (the last key) is missing or damaged; the checksum (the first key) is intact") }
        guard header == copy else { return .corrupt(reason: "its checksum and the checksum's copy differ") }
        // The canonical text: both lines out, and the comma added before the copy.
        guard lines[copyIndex - 1].last == UInt8(ascii: ",") else { return .corrupt(reason: "the line before its checksum's copy is damaged") }
        lines[copyIndex - 1].removeLast()
        lines.remove(at: copyIndex)
        lines.remove(at: 1)
        let canonical = Data(lines.joined(separator: [newline]))
        guard FileSystem.sha256(of: canonical) == header else {
            return .corrupt(reason: "its content differs from the SHA-256 it carries")
        }
        return .checked(content: canonical)
    }

    /// The hex of a checksum line `  "<name>" : "<64 hex>"` (with a trailing comma when `comma`).
    private static func value(of name: String, in line: [UInt8], comma: Bool) -> String? {
        let prefix = Array("  \"\(name)\" : \"".utf8)
        let suffix = Array((comma ? "\"," : "\"").utf8)
        guard line.count == prefix.count + 64 + suffix.count,
              line.starts(with: prefix), Array(line.suffix(suffix.count)) == suffix else { return nil }
        let hex = line[prefix.count..<(prefix.count + 64)]
        guard hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }) else { return nil }
        return String(decoding: hex, as: UTF8.self)
    }
}

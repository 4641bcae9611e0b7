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
        // A backup's manifest writes its per-chunk lists without the encoder's tree (same bytes),
        // straight into the stored text's one buffer.
        if let spliced = try (manifest as? BackupManifest)?.splicedText() {
            return try stamped(canonicalCount: spliced.count) { spliced.write(into: &$0) }
        }
        var canonical = try JSONOutput.encodeData(manifest)
        canonical.append(UInt8(ascii: "\n"))
        return try stamped(canonical)
    }

    /// The stored text of the canonical text `write` appends (exactly `count` bytes: a JSON
    /// object as JSONOutput encodes it, without the final newline), built in one buffer of the
    /// final size. The canonical text is written after room for the checksum line, hashed where
    /// it lies, and its first and last lines are then rewritten around it: the same bytes as
    /// ``stamped(_:)-(Data)`` gives, without a second copy of a text of megabytes.
    static func stamped(canonicalCount count: Int, write: (inout Data) -> Void) throws -> Data {
        let zeros = String(repeating: "0", count: 64)
        let header = Array("  \"\(key)\" : \"\(zeros)\",\n".utf8)
        let copy = Array(",\n  \"\(copyKey)\" : \"\(zeros)\"".utf8)
        let open = Array("{\n".utf8), close = Array("\n}".utf8)
        var stored = Data()
        stored.reserveCapacity(header.count + count + copy.count + 1)
        stored.append(contentsOf: repeatElement(0, count: header.count))
        write(&stored)
        let start = stored.startIndex + header.count
        // "{", at least one member line, "}".
        guard stored.count == header.count + count, count > open.count + close.count,
              stored[start..<(start + open.count)].elementsEqual(open), stored.suffix(close.count).elementsEqual(close) else {
            throw TSBackupError(.failed, "Internal error: a manifest did not encode as a JSON object on lines of its own; it was not stored.")
        }
        // The checksum covers the canonical text with its final newline, hashed where it lies (a
        // slice of Data shares its storage). Through FileSystem, which the fuzz build replaces,
        // not swift-crypto directly.
        stored.append(UInt8(ascii: "\n"))
        let hex = Array(FileSystem.sha256(of: stored[start...]).utf8)
        stored.removeLast()
        // "{\n" and the checksum line where the room and the canonical "{\n" were.
        let first = open + Array("  \"\(key)\" : \"".utf8) + hex + Array("\",\n".utf8)
        precondition(first.count == header.count + open.count)
        stored.replaceSubrange(stored.startIndex..<(stored.startIndex + first.count), with: first)
        // The canonical "\n}" becomes the copy's line and "\n}\n".
        stored.removeLast(close.count)
        stored.append(contentsOf: Array(",\n  \"\(copyKey)\" : \"".utf8) + hex + Array("\"\n}\n".utf8))
        return stored
    }

    /// `canonical` (a JSON object as JSONOutput encodes it, with a final newline) with the two
    /// checksum lines added. Works on the bytes around the members, without splitting the text
    /// into lines: a manifest of 50,000 chunks has hundreds of thousands of them.
    static func stamped(_ canonical: String) throws -> Data {
        try stamped(Data(canonical.utf8))
    }

    static func stamped(_ bytes: Data) throws -> Data {
        let open = Array("{\n".utf8), close = Array("\n}\n".utf8)
        // "{", at least one member line, "}", "" (the final newline).
        guard bytes.count > open.count + close.count, bytes.starts(with: open), bytes.suffix(close.count).elementsEqual(close) else {
            throw TSBackupError(.failed, "Internal error: a manifest did not encode as a JSON object on lines of its own; it was not stored.")
        }
        let hex = FileSystem.sha256(of: bytes)
        var stored = Data()
        stored.reserveCapacity(bytes.count + 2 * (hex.utf8.count + 40))
        stored += open
        stored += Array("  \"\(key)\" : \"\(hex)\",\n".utf8)
        stored += bytes[(bytes.startIndex + open.count)..<(bytes.endIndex - close.count)]
        stored += Array(",\n  \"\(copyKey)\" : \"\(hex)\"".utf8)
        stored += close
        return stored
    }

    /// Checks stored manifest text (already decrypted) against the checksum it carries. Works on
    /// bytes, not characters, so that no byte is normalized or merged ("\r\n") before hashing;
    /// and on line boundaries, not on a copy of every line, so a large manifest reads quickly.
    static func open(_ stored: Data) -> Outcome {
        let newline = UInt8(ascii: "\n")
        let bytes = [UInt8](stored)
        // Line i spans starts[i] ..< ends[i]; the text has one line more than newlines.
        var ends: [Int] = []
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count, let found = memchr(base + offset, Int32(newline), buffer.count - offset) {
                let index = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
                ends.append(index)
                offset = index + 1
            }
        }
        ends.append(bytes.count)
        let lineCount = ends.count
        func line(_ index: Int) -> ArraySlice<UInt8> { bytes[(index == 0 ? 0 : ends[index - 1] + 1)..<ends[index]] }

        let header = lineCount > 1 ? value(of: key, in: line(1), comma: true) : nil
        let copyIndex = lineCount - 3
        let copy = copyIndex > 1 ? value(of: copyKey, in: line(copyIndex), comma: false) : nil
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
        guard line(copyIndex - 1).last == UInt8(ascii: ",") else { return .corrupt(reason: "the line before its checksum's copy is damaged") }
        var canonical: [UInt8] = []
        canonical.reserveCapacity(bytes.count)
        var first = true
        for index in 0..<lineCount where index != 1 && index != copyIndex {
            if !first { canonical.append(newline) }
            first = false
            let text = line(index)
            canonical += index == copyIndex - 1 ? text.dropLast() : text
        }
        let content = Data(canonical)
        guard FileSystem.sha256(of: content) == header else {
            return .corrupt(reason: "its content differs from the SHA-256 it carries")
        }
        return .checked(content: content)
    }

    /// The hex of a checksum line `  "<name>" : "<64 hex>"` (with a trailing comma when `comma`).
    private static func value(of name: String, in line: ArraySlice<UInt8>, comma: Bool) -> String? {
        let prefix = Array("  \"\(name)\" : \"".utf8)
        let suffix = Array((comma ? "\"," : "\"").utf8)
        guard line.count == prefix.count + 64 + suffix.count,
              line.starts(with: prefix), Array(line.suffix(suffix.count)) == suffix else { return nil }
        let hex = line.dropFirst(prefix.count).prefix(64)
        guard hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }) else { return nil }
        return String(decoding: hex, as: UTF8.self)
    }
}

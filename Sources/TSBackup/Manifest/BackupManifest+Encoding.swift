import Foundation

extension BackupManifest {
    /// `JSONOutput.encodeData(self)`, byte for byte, built without the encoder's tree for the
    /// two lists that grow with the chunk count (`files` and `chunk_tables`: two entries per
    /// chunk). JSONEncoder holds the whole manifest as a tree of values before it writes a byte,
    /// several times the size of the text; at tens of thousands of chunks that tree was the
    /// largest thing a backup held. The rest of the manifest is encoded as always, with one
    /// placeholder in each list, and the lists are written into the text where the placeholders
    /// are, in the encoder's own pretty format. Whenever that is not certain to give the same
    /// bytes (an entry with a character the encoder escapes, a placeholder not found exactly
    /// once), the whole manifest goes through the encoder as before.
    func canonicalJSON() throws -> Data {
        guard files.count + chunkTables.count >= 2 * BackupManifest.splicedListThreshold,
              !files.isEmpty, !chunkTables.isEmpty,
              files.allSatisfy({ Self.plainJSONText($0.path) && Self.plainJSONText($0.sha256) }),
              chunkTables.allSatisfy(Self.plainJSONText) else {
            return try JSONOutput.encodeData(self)
        }
        var skeleton = self
        skeleton.files = [FileEntry(path: Self.filesPlaceholder, bytes: 0, sha256: "")]
        skeleton.chunkTables = [Self.chunkTablesPlaceholder]
        let text = try JSONOutput.encodeData(skeleton)
        // The placeholders as the encoder writes them inside a top-level key's list.
        let fileBlock = Data("    {\n      \"bytes\" : 0,\n      \"path\" : \"\(Self.filesPlaceholder)\",\n      \"sha256\" : \"\"\n    }".utf8)
        let chunkBlock = Data("    \"\(Self.chunkTablesPlaceholder)\"".utf8)
        guard let fileRange = Self.onlyRange(of: fileBlock, in: text), let chunkRange = Self.onlyRange(of: chunkBlock, in: text) else {
            return try JSONOutput.encodeData(self)
        }
        var out = Data()
        out.reserveCapacity(text.count + files.count * 160 + chunkTables.count * 48)
        let (first, second) = fileRange.lowerBound < chunkRange.lowerBound ? (fileRange, chunkRange) : (chunkRange, fileRange)
        func writeList(for range: Range<Data.Index>) {
            if range == fileRange {
                for (index, file) in files.enumerated() {
                    if index > 0 { out.append(contentsOf: Array(",\n".utf8)) }
                    out.append(contentsOf: Array("    {\n      \"bytes\" : \(file.bytes),\n      \"path\" : \"\(file.path)\",\n      \"sha256\" : \"\(file.sha256)\"\n    }".utf8))
                }
            } else {
                for (index, chunk) in chunkTables.enumerated() {
                    if index > 0 { out.append(contentsOf: Array(",\n".utf8)) }
                    out.append(contentsOf: Array("    \"\(chunk)\"".utf8))
                }
            }
        }
        out.append(text[text.startIndex..<first.lowerBound])
        writeList(for: first)
        out.append(text[first.upperBound..<second.lowerBound])
        writeList(for: second)
        out.append(text[second.upperBound..<text.endIndex])
        return out
    }

    /// Below this many entries per list the plain encoder is used: its tree is small.
    static let splicedListThreshold = 256
    static let filesPlaceholder = "tsbackup-placeholder-files-0c7e1d"
    static let chunkTablesPlaceholder = "tsbackup-placeholder-chunk-tables-0c7e1d"

    /// Text JSONEncoder writes as it is between quotes (with `.withoutEscapingSlashes`): printable
    /// ASCII without `"` and `\`.
    static func plainJSONText(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }

    /// The range of `needle` in `haystack` when it occurs exactly once.
    static func onlyRange(of needle: Data, in haystack: Data) -> Range<Data.Index>? {
        guard let found = haystack.range(of: needle) else { return nil }
        guard haystack.range(of: needle, in: found.upperBound..<haystack.endIndex) == nil else { return nil }
        return found
    }
}

import Foundation

extension BackupManifest {
    /// `JSONOutput.encodeData(self)`, byte for byte, built without the encoder's tree for the
    /// lists that grow with the chunk count (`files`, `chunk_tables` and each
    /// `chunk_path.batches[].chunks`: three entries per chunk). JSONEncoder holds the whole
    /// manifest as a tree of values before it writes a byte, several times the size of the text;
    /// at tens of thousands of chunks that tree was the largest thing a backup held. The rest of
    /// the manifest is encoded as always, with one placeholder in each list, and the lists are
    /// written into the text where the placeholders are, in the encoder's own pretty format, into
    /// one buffer of the exact final size. Whenever that is not certain to give the same bytes
    /// (an entry with a character the encoder escapes, a placeholder not found exactly once),
    /// the whole manifest goes through the encoder as before.
    func canonicalJSON() throws -> Data {
        guard let spliced = try splicedText() else { return try JSONOutput.encodeData(self) }
        var out = Data()
        out.reserveCapacity(spliced.count)
        spliced.write(into: &out)
        return out
    }

    /// The manifest's text as the skeleton's pieces and the lists to write between them; nil
    /// when the lists are small (the encoder's tree is small too) or cannot be spliced exactly.
    func splicedText() throws -> SplicedText? {
        let batches = chunkPath?.batches ?? []
        let batchChunks = batches.reduce(0) { $0 + $1.chunks.count }
        guard files.count + chunkTables.count + batchChunks >= 2 * BackupManifest.splicedListThreshold,
              !files.isEmpty, !chunkTables.isEmpty,
              files.allSatisfy({ Self.plainJSONText($0.path) && Self.plainJSONText($0.sha256) }),
              chunkTables.allSatisfy(Self.plainJSONText),
              batches.allSatisfy({ $0.chunks.allSatisfy(Self.plainJSONText) }) else {
            return nil
        }
        var skeleton = self
        skeleton.files = [FileEntry(path: Self.filesPlaceholder, bytes: 0, sha256: "")]
        skeleton.chunkTables = [Self.chunkTablesPlaceholder]
        // Each batch's list gets a placeholder of its own; an empty list stays with the encoder.
        var spliceBatches: [Int] = []
        for index in batches.indices where !batches[index].chunks.isEmpty {
            skeleton.chunkPath?.batches[index].chunks = [Self.batchPlaceholder(index)]
            spliceBatches.append(index)
        }
        let text = try JSONOutput.encodeData(skeleton)
        // The files placeholder as the encoder writes it inside a top-level key's list.
        let fileBlock = Data("    {\n      \"bytes\" : 0,\n      \"path\" : \"\(Self.filesPlaceholder)\",\n      \"sha256\" : \"\"\n    }".utf8)
        guard let fileRange = Self.onlyRange(of: fileBlock, in: text),
              let chunkRange = Self.onlyRange(of: Data("\"\(Self.chunkTablesPlaceholder)\"".utf8), in: text) else {
            return nil
        }
        var splices: [(Range<Data.Index>, SplicedText.List)] = [(fileRange, .files(files)), (chunkRange, .strings(chunkTables, indent: 0))]
        for index in spliceBatches {
            guard let range = Self.onlyRange(of: Data("\"\(Self.batchPlaceholder(index))\"".utf8), in: text) else { return nil }
            splices.append((range, .strings(batches[index].chunks, indent: 0)))
        }
        splices.sort { $0.0.lowerBound < $1.0.lowerBound }
        var pieces: [SplicedText.Piece] = []
        var position = text.startIndex
        for (range, list) in splices {
            guard range.lowerBound >= position else { return nil }
            pieces.append(.text(position..<range.lowerBound))
            if case .strings(let strings, _) = list {
                // A string list continues at the indentation the placeholder was written at.
                guard let lineStart = text[position..<range.lowerBound].lastIndex(of: UInt8(ascii: "\n")) else { return nil }
                let indent = range.lowerBound - lineStart - 1
                guard text[(lineStart + 1)..<range.lowerBound].allSatisfy({ $0 == UInt8(ascii: " ") }) else { return nil }
                pieces.append(.list(.strings(strings, indent: indent)))
            } else {
                pieces.append(.list(list))
            }
            position = range.upperBound
        }
        pieces.append(.text(position..<text.endIndex))
        return SplicedText(skeleton: text, pieces: pieces)
    }

    /// A manifest's canonical text in pieces: slices of the encoder's skeleton and the lists
    /// written between them. ``count`` is exact, so the text can be written into one buffer
    /// allocated once (``write(into:)``).
    struct SplicedText {
        enum List {
            /// `files[]` entries, each an object in the encoder's layout at the top level's depth.
            case files([FileEntry])
            /// Strings, the first at the placeholder's place, the others on lines of `indent` spaces.
            case strings([String], indent: Int)
        }

        enum Piece {
            case text(Range<Data.Index>)
            case list(List)
        }

        var skeleton: Data
        var pieces: [Piece]

        var count: Int {
            pieces.reduce(0) { total, piece in
                switch piece {
                case .text(let range): return total + range.count
                case .list(.files(let files)):
                    return total + files.reduce(0) { $0 + Self.fileEntryFixed + String($1.bytes).utf8.count + $1.path.utf8.count + $1.sha256.utf8.count }
                        + max(0, files.count - 1) * 2
                case .list(.strings(let strings, let indent)):
                    return total + strings.reduce(0) { $0 + $1.utf8.count + 2 } + max(0, strings.count - 1) * (2 + indent)
                }
            }
        }

        /// Bytes of a files entry besides its three values (see ``write(into:)``).
        static let fileEntryFixed = "    {\n      \"bytes\" : ,\n      \"path\" : \"\",\n      \"sha256\" : \"\"\n    }".utf8.count

        func write(into out: inout Data) {
            for piece in pieces {
                switch piece {
                case .text(let range):
                    out.append(skeleton[range])
                case .list(.files(let files)):
                    for (index, file) in files.enumerated() {
                        if index > 0 { out.append(contentsOf: ",\n".utf8) }
                        out.append(contentsOf: "    {\n      \"bytes\" : \(file.bytes),\n      \"path\" : \"".utf8)
                        out.append(contentsOf: file.path.utf8)
                        out.append(contentsOf: "\",\n      \"sha256\" : \"".utf8)
                        out.append(contentsOf: file.sha256.utf8)
                        out.append(contentsOf: "\"\n    }".utf8)
                    }
                case .list(.strings(let strings, let indent)):
                    let separator = Data(",\n".utf8) + Data(repeating: UInt8(ascii: " "), count: indent)
                    for (index, string) in strings.enumerated() {
                        if index > 0 { out.append(separator) }
                        out.append(UInt8(ascii: "\""))
                        out.append(contentsOf: string.utf8)
                        out.append(UInt8(ascii: "\""))
                    }
                }
            }
        }
    }

    /// Below this many entries in the lists the plain encoder is used: its tree is small.
    static let splicedListThreshold = 256
    static let filesPlaceholder = "tsbackup-placeholder-files-0c7e1d"
    static let chunkTablesPlaceholder = "tsbackup-placeholder-chunk-tables-0c7e1d"
    static func batchPlaceholder(_ index: Int) -> String { "tsbackup-placeholder-batch-\(index)-chunks-0c7e1d" }

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

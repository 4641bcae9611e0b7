import Foundation

/// The table of contents of a pg_dump archive, as `pg_restore --list` prints it.
public struct ArchiveContents: Sendable {
    public struct Item: Sendable, Equatable {
        public var dumpID: Int
        /// "TABLE DATA", "SEQUENCE SET", "EXTENSION", "TABLE", "FK CONSTRAINT", ...
        public var type: String
        public var schema: String
        public var name: String
        /// The owning role, for object types that have one.
        public var owner: String?
        /// The line as printed, for `pg_restore -L` lists.
        public var line: String
    }

    public var items: [Item]
    /// Header lines, e.g. "; Dumped from database version: 15.20 (...)".
    public var header: [String: String]

    static let knownTypes = [
        "TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL", "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW", "TABLE ATTACH", "INDEX ATTACH", "SCHEMA", "EXTENSION", "COMMENT", "TABLE", "SEQUENCE",
        "INDEX", "CONSTRAINT", "TRIGGER", "VIEW", "FUNCTION", "PROCEDURE", "TYPE", "DOMAIN", "ACL", "DEFAULT", "RULE",
        "POLICY", "ROW SECURITY", "STATISTICS", "AGGREGATE", "CAST", "COLLATION", "PUBLICATION", "EVENT TRIGGER",
    ]

    /// Types whose list line ends with the owning role.
    static let ownedTypes: Set<String> = ["TABLE", "TABLE DATA", "SEQUENCE", "VIEW", "MATERIALIZED VIEW", "FUNCTION", "PROCEDURE",
                                          "SCHEMA", "TYPE", "DOMAIN", "AGGREGATE"]

    /// `knownTypes` as bytes with the space that follows a type in a list line, in the order of
    /// `knownTypes` (where one type is the prefix of another, the longer comes first), built once.
    static let typePrefixes: [[UInt8]] = knownTypes.map { Array(($0 + " ").utf8) }

    /// One entry line of `pg_restore --list`: "<id>; <tableoid> <oid> <TYPE> <schema> <name> ... <owner>",
    /// as byte ranges of the line.
    struct ParsedLine {
        var dumpID: Int
        /// Index into `knownTypes`.
        var typeIndex: Int
        var schema: Range<Int>
        var name: Range<Int>
        var owner: Range<Int>?
        var type: String { ArchiveContents.knownTypes[typeIndex] }
    }

    /// Parses one list line on its bytes: the backup checks the table of contents of archives
    /// with tens of thousands of chunks (six entries each), where a parse through Substring and
    /// String operations cost about a millisecond per chunk in a debug build. nil for comments
    /// and lines of unknown form. Splits as `split(separator: " ")` would: runs of spaces
    /// separate words, and after the two numbers the type starts one space on.
    static func parse(_ line: UnsafeRawBufferPointer) -> ParsedLine? {
        let space = UInt8(ascii: " ")
        let count = line.count
        var semicolon = 0
        while semicolon < count, line[semicolon] != UInt8(ascii: ";") { semicolon += 1 }
        guard semicolon < count,
              let id = Int(String(decoding: UnsafeRawBufferPointer(rebasing: line[0..<semicolon]), as: UTF8.self)) else { return nil }
        // The table oid and the oid.
        var index = semicolon + 1
        for _ in 0..<2 {
            while index < count, line[index] == space { index += 1 }
            guard index < count else { return nil }
            while index < count, line[index] != space { index += 1 }
            guard index < count else { return nil }
        }
        index += 1
        guard index < count else { return nil }
        var typeIndex: Int?
        for (candidate, prefix) in typePrefixes.enumerated() where count - index >= prefix.count {
            var matches = true
            for offset in 0..<prefix.count where line[index + offset] != prefix[offset] {
                matches = false
                break
            }
            if matches {
                typeIndex = candidate
                break
            }
        }
        guard let typeIndex else { return nil }
        index += typePrefixes[typeIndex].count
        var words: [Range<Int>] = []
        while index < count {
            while index < count, line[index] == space { index += 1 }
            guard index < count else { break }
            let start = index
            while index < count, line[index] != space { index += 1 }
            words.append(start..<index)
        }
        guard words.count >= 2 else { return nil }
        let owned = ownedTypes.contains(knownTypes[typeIndex]) && words.count >= 3
        return ParsedLine(dumpID: id, typeIndex: typeIndex, schema: words[0], name: words[1], owner: owned ? words[words.count - 1] : nil)
    }

    /// Calls `body` with each non-empty line of `text` (split at "\n"), found with memchr.
    static func forEachLine(in text: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        guard let base = text.baseAddress else { return }
        var start = 0
        while start < text.count {
            let end: Int
            if let found = memchr(base + start, Int32(UInt8(ascii: "\n")), text.count - start) {
                end = base.distance(to: UnsafeRawPointer(found))
            } else {
                end = text.count
            }
            if end > start { body(UnsafeRawBufferPointer(rebasing: text[start..<end])) }
            start = end + 1
        }
    }

    /// Parses `pg_restore --list` output.
    ///
    /// Schema, name and owner strings repeat across entries (every chunk's entries share a
    /// schema and an owner; a chunk's TABLE, TABLE DATA and DEFAULT entries share its name), so
    /// each distinct value is stored once and shared by the items that name it.
    public init(listing: String) {
        var items: [Item] = []
        var header: [String: String] = [:]
        var interned: Set<String> = []
        func intern(_ bytes: UnsafeRawBufferPointer) -> String {
            let text = String(decoding: bytes, as: UTF8.self)
            return interned.insert(text).memberAfterInsert
        }
        var text = listing
        text.withUTF8 { utf8 in
            Self.forEachLine(in: UnsafeRawBufferPointer(utf8)) { line in
                if line[0] == UInt8(ascii: ";") {
                    let comment = String(decoding: line, as: UTF8.self)
                    let text = comment.dropFirst().trimmingPrefix(while: { $0 == " " })
                    if let colon = text.firstIndex(of: ":") {
                        header[String(text[..<colon]).trimmingCharacters(in: .whitespaces)] =
                            String(text[text.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                    }
                    return
                }
                guard let parsed = Self.parse(line) else { return }
                items.append(Item(dumpID: parsed.dumpID, type: parsed.type,
                                  schema: intern(UnsafeRawBufferPointer(rebasing: line[parsed.schema])),
                                  name: intern(UnsafeRawBufferPointer(rebasing: line[parsed.name])),
                                  owner: parsed.owner.map { intern(UnsafeRawBufferPointer(rebasing: line[$0])) },
                                  line: String(decoding: line, as: UTF8.self)))
            }
        }
        self.items = items
        self.header = header
    }

    /// Every role that owns an object in the archive.
    public var owners: Set<String> { Set(items.compactMap(\.owner)) }

    public func contains(type: String, schema: String, name: String) -> Bool {
        items.contains { $0.type == type && $0.schema == schema && $0.name == name }
    }

    /// TimescaleDB catalog tables whose data every restorable dump carries.
    public static let requiredCatalogData = [
        ("_timescaledb_catalog", "hypertable"), ("_timescaledb_catalog", "dimension"),
        ("_timescaledb_catalog", "dimension_slice"), ("_timescaledb_catalog", "chunk"),
        ("_timescaledb_catalog", "chunk_constraint"), ("_timescaledb_catalog", "metadata"),
        ("_timescaledb_config", "bgw_job"),
    ]

    /// What is missing for a restorable TimescaleDB archive: the extension, the catalog data, and
    /// one TABLE and TABLE DATA entry per chunk ("schema.name"). Empty when complete.
    public func missingTimescaleEntries(chunks: [String], timescaleInstalled: Bool, dataCopied: [String] = []) -> [String] {
        var check = ArchiveCompleteness(chunks: chunks, timescaleInstalled: timescaleInstalled)
        for item in items { check.take(type: item.type, schema: item.schema, name: item.name) }
        check.dataCopied(dataCopied)
        return check.missing
    }
}

/// The completeness check of ``ArchiveContents/missingTimescaleEntries(chunks:timescaleInstalled:)``,
/// fed one entry at a time: the backup streams `pg_restore --list` through it and keeps only a
/// flag per chunk, not the listing (30,000 lines at 5,000 chunks, which as ``ArchiveContents``
/// items took about 3 kB per chunk of the backup's memory).
public struct ArchiveCompleteness: Sendable {
    private let chunks: [String]
    private let chunkIndex: [String: Int]
    private var tableFound: [Bool]
    private var dataFound: [Bool]
    private var extensionFound = false
    private var catalogDataFound: Set<String> = []
    private let timescaleInstalled: Bool

    public init(chunks: [String], timescaleInstalled: Bool) {
        self.chunks = chunks
        self.chunkIndex = Dictionary(chunks.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        self.tableFound = Array(repeating: false, count: chunks.count)
        self.dataFound = Array(repeating: false, count: chunks.count)
        self.timescaleInstalled = timescaleInstalled
    }

    /// Takes one line of `pg_restore --list` (comments and unknown lines are ignored). Only the
    /// extension, TABLE and TABLE DATA lines build a string: the chunk's "schema.name".
    public mutating func take(line: UnsafeRawBufferPointer) {
        guard let parsed = ArchiveContents.parse(line) else { return }
        let type = parsed.type
        guard type == "EXTENSION" || type == "TABLE" || type == "TABLE DATA" else { return }
        take(type: type, schema: String(decoding: UnsafeRawBufferPointer(rebasing: line[parsed.schema]), as: UTF8.self),
             name: String(decoding: UnsafeRawBufferPointer(rebasing: line[parsed.name]), as: UTF8.self))
    }

    /// Takes one line given as text (tests, small listings).
    public mutating func take(line: Substring) {
        var text = String(line)
        text.withUTF8 { take(line: UnsafeRawBufferPointer($0)) }
    }

    mutating func take(type: String, schema: String, name: String) {
        switch type {
        case "EXTENSION":
            if name == "timescaledb" { extensionFound = true }
        case "TABLE":
            if let index = chunkIndex["\(schema).\(name)"] { tableFound[index] = true }
        case "TABLE DATA":
            let qualified = "\(schema).\(name)"
            if let index = chunkIndex[qualified] { dataFound[index] = true }
            if ArchiveContents.requiredCatalogData.contains(where: { $0.0 == schema && $0.1 == name }) {
                catalogDataFound.insert(qualified)
            }
        default:
            break
        }
    }

    /// Counts the data of `chunks` as present: their rows are in a batched backup's data files
    /// (``BackupManifest/ChunkPath/DataForm/copyFiles``), not in TABLE DATA entries.
    public mutating func dataCopied(_ chunks: [String]) {
        for chunk in chunks {
            if let index = chunkIndex[chunk] { dataFound[index] = true }
        }
    }

    /// The missing entries, in the order ``ArchiveContents/missingTimescaleEntries(chunks:timescaleInstalled:)``
    /// has always named them; empty when complete or when TimescaleDB is not installed.
    public var missing: [String] {
        guard timescaleInstalled else { return [] }
        var missing: [String] = []
        if !extensionFound { missing.append("EXTENSION timescaledb") }
        for (schema, name) in ArchiveContents.requiredCatalogData where !catalogDataFound.contains("\(schema).\(name)") {
            missing.append("TABLE DATA \(schema).\(name)")
        }
        for (index, chunk) in chunks.enumerated() {
            // A name listed twice counts where it was first listed.
            let first = chunkIndex[chunk] ?? index
            if !tableFound[first] { missing.append("TABLE \(chunk)") }
            if !dataFound[first] { missing.append("TABLE DATA \(chunk)") }
        }
        return missing
    }
}

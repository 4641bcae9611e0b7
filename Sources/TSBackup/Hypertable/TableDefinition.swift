import Foundation

/// A table's definition as `pg_dump --schema-only --table` prints it, split into the objects
/// pg_dump names in its `-- Name: ...; Type: ...` headers, so an import can run each object at
/// the right moment (constraints before the load, indexes and triggers after it) and skip the
/// ones the target cannot take.
public struct TableDefinition: Sendable, Equatable {
    public struct Object: Sendable, Equatable {
        /// pg_dump's type: "TABLE", "CONSTRAINT", "INDEX", "TRIGGER", "FK CONSTRAINT", "COMMENT", "ACL", ...
        public var type: String
        /// pg_dump's name, e.g. "conditions conditions_device_id_fkey".
        public var name: String
        /// The SQL statements, each without its terminating semicolon.
        public var statements: [String]
    }

    public var objects: [Object]

    /// Parses pg_dump's plain output. The preamble (SET commands) and psql meta-commands
    /// (`\restrict`) are dropped: the importer sets up its own session.
    public init(pgDumpOutput text: String) {
        var objects: [Object] = []
        var current: Object?
        var body = ""
        func flush() {
            if var object = current {
                object.statements = SQLText.statements(body)
                objects.append(object)
            }
            body = ""
        }
        for line in Self.lines(text) {
            let content = Self.content(of: line)
            if content.hasPrefix("-- Name: "), let header = Self.header(content) {
                flush()
                current = Object(type: header.type, name: header.name, statements: [])
                continue
            }
            if content.hasPrefix("\\") { continue }
            if current != nil { body += line + "\n" }
        }
        flush()
        self.objects = objects
    }

    /// The text's lines, split at each "\n" byte, so a "\r" before it stays at the end of its
    /// line: the lines joined with "\n" give back the text byte for byte, CRLF or not. (Splitting
    /// on the Character "\n" finds no line in CRLF text, where "\r\n" is one Character.)
    static func lines(_ text: String) -> [Substring] {
        text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { text[$0.startIndex..<$0.endIndex] }
    }

    /// A line without the "\r" a CRLF line ending leaves on it, for matching pg_dump's headers.
    static func content(of line: Substring) -> Substring {
        line.utf8.last == UInt8(ascii: "\r") ? line[..<line.utf8.index(before: line.utf8.endIndex)] : line
    }

    /// "-- Name: readings ts_insert_blocker; Type: TRIGGER; Schema: iot; Owner: postgres"
    static func header(_ line: Substring) -> (name: String, type: String)? {
        let fields = line.dropFirst("-- ".count).components(separatedBy: "; ")
        guard fields.count >= 2, fields[0].hasPrefix("Name: "), fields[1].hasPrefix("Type: ") else { return nil }
        return (String(fields[0].dropFirst("Name: ".count)), String(fields[1].dropFirst("Type: ".count)))
    }

    /// TimescaleDB's trigger on every hypertable's root table; `create_hypertable` adds it again
    /// and refuses to run while it exists.
    public static func isInsertBlocker(_ object: Object) -> Bool {
        object.type == "TRIGGER" && object.name.split(separator: " ").last == "ts_insert_blocker"
    }

    /// The pg_dump text without the objects `drop` selects, headers and all, for storing.
    public static func removing(from text: String, where drop: (Object) -> Bool) -> (text: String, removed: [Object]) {
        var kept: [Substring] = []
        var removed: [Object] = []
        var skipping = false
        var pendingSeparator: [Substring] = []
        for line in Self.lines(text) {
            let content = Self.content(of: line)
            // A header is preceded by a lone "--" line; hold it until we know whether it is kept.
            if content == "--" {
                pendingSeparator.append(line)
                continue
            }
            // A comment right after a "--" line starts the next section: an object or the footer.
            if content.hasPrefix("-- "), !pendingSeparator.isEmpty {
                skipping = false
                if content.hasPrefix("-- Name: "), let header = Self.header(content) {
                    let object = Object(type: header.type, name: header.name, statements: [])
                    if drop(object) {
                        skipping = true
                        removed.append(object)
                    }
                }
            }
            if !skipping {
                kept += pendingSeparator
                kept.append(line)
            }
            pendingSeparator = []
        }
        kept += pendingSeparator
        return (kept.joined(separator: "\n"), removed)
    }
}

/// Just enough of PostgreSQL's lexical rules to split statements and rename identifiers safely:
/// quoted identifiers, string literals (also E'' and dollar quotes) and comments are never torn.
enum SQLText {
    enum Token: Equatable {
        /// An identifier or keyword; `quoted` ones keep their case and characters.
        case word(String, quoted: Bool)
        case string(String)
        case symbol(Character)
        /// Whitespace, comments and anything copied through unchanged.
        case other(String)
    }

    /// Tokens with their exact source text, so unchanged tokens are written back byte for byte.
    ///
    /// Scans the UTF-8 bytes as PostgreSQL does (``SQLTextScanner``). On ASCII scripts without
    /// "\r" the tokens are those the Character-by-Character reading this once was gives;
    /// elsewhere they are PostgreSQL's, like ``SQLScript/lex(_:)``'s: SQLTextEquivalenceTests
    /// compares it with both.
    static func tokenize(_ sql: String) -> [(token: Token, text: String)] {
        var scanner = SQLTextScanner(sql)
        return scanner.tokens()
    }

    /// Splits a script on semicolons outside quotes and comments; comments are removed and
    /// empty statements dropped.
    ///
    /// A comment separates tokens as whitespace does (scan.l), so where one stood between two
    /// tokens with no whitespace on either side, a space takes its place: `a/*c*/b` is `a b`,
    /// never `ab`, and `-/**/-` stays two minus signs instead of becoming the start of a comment
    /// that would hide the rest of the statement. Elsewhere the comment simply goes.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        /// Whether a comment was dropped since the last token kept.
        var afterComment = false
        func flush() {
            // Trimmed of PostgreSQL's whitespace only: U+00A0 at the end of `x\u{A0}` is part of the name.
            let bytes = Array(current.utf8)
            if let first = bytes.firstIndex(where: { !SQLScript.isSpace($0) }), let last = bytes.lastIndex(where: { !SQLScript.isSpace($0) }) {
                statements.append(String(decoding: bytes[first...last], as: UTF8.self))
            }
            current = ""
            afterComment = false
        }
        // One pass: a statement is the texts of its tokens but comments. (Tokenizing each
        // statement again to strip them, as this once did, gives the same tokens: a statement
        // starts after a ";" token and ends before one.)
        for (token, text) in tokenize(sql) {
            if token == .symbol(";") {
                flush()
            } else if case .other = token, text.utf8.starts(with: "--".utf8) || text.utf8.starts(with: "/*".utf8) {
                afterComment = true
            } else {
                if afterComment, let before = current.utf8.last, !SQLScript.isSpace(before),
                   let after = text.utf8.first, !SQLScript.isSpace(after) {
                    current += " "
                }
                afterComment = false
                current += text
            }
        }
        flush()
        return statements
    }

    /// An identifier as pg_dump would print it: bare when it is lower case and plain, else quoted.
    static func identifier(_ name: String) -> String {
        let plain = !name.isEmpty && name.first.map { $0.isLowercase || $0 == "_" } == true
            && name.allSatisfy { ($0.isLowercase && $0.isASCII) || $0.isNumber || $0 == "_" }
        return plain && !reservedWords.contains(name) ? name : quoteIdentifier(name)
    }

    /// Words pg_dump always quotes when they are identifiers (a superset is harmless).
    static let reservedWords: Set<String> = [
        "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case", "cast", "check",
        "collate", "column", "constraint", "create", "current_catalog", "current_date", "current_role", "current_time",
        "current_timestamp", "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except",
        "false", "fetch", "for", "foreign", "from", "grant", "group", "having", "in", "initially", "intersect", "into",
        "lateral", "leading", "limit", "localtime", "localtimestamp", "not", "null", "offset", "on", "only", "or", "order",
        "placing", "primary", "references", "returning", "select", "session_user", "some", "symmetric", "table", "then",
        "to", "trailing", "true", "union", "unique", "user", "using", "variadic", "when", "where", "window", "with",
        "time", "timestamp", "interval", "value", "values", "name", "type", "position", "authorization", "binary",
    ]

    /// The qualified names (`schema.name`) following `keyword` (e.g. REFERENCES, FUNCTION) in `sql`.
    static func qualifiedNames(after keyword: String, in sql: String) -> [(schema: String, name: String)] {
        qualifiedNames(after: keyword, inTokens: tokenize(sql))
    }

    /// The same for tokens already made (SQLTextEquivalenceTests hands over the original tokenizer's).
    static func qualifiedNames(after keyword: String, inTokens all: [(token: Token, text: String)]) -> [(schema: String, name: String)] {
        let tokens = all.filter { if case .other = $0.token { return false }; return true }.map(\.token)
        var found: [(String, String)] = []
        for (i, token) in tokens.enumerated() where token == .word(keyword.lowercased(), quoted: false) {
            guard i + 3 < tokens.count, case .word(let schema, _) = tokens[i + 1], tokens[i + 2] == .symbol("."),
                  case .word(let name, _) = tokens[i + 3] else { continue }
            found.append((schema, name))
        }
        return found
    }
}

/// Renames a table, and the indexes, constraints and sequences that belong to it, in its stored
/// definition: the new table may sit beside the original, and index and sequence names are
/// unique per schema.
struct DefinitionRenamer {
    let from: (schema: String, name: String)
    let to: (schema: String, name: String)
    /// Old object name -> new object name (indexes, constraints, sequences).
    let objectNames: [String: String]

    init(definition: TableDefinition, from: (schema: String, name: String), to: (schema: String, name: String)) {
        self.from = from
        self.to = to
        var names: [String: String] = [:]
        for object in definition.objects {
            for statement in object.statements {
                let tokens = SQLText.tokenize(statement).map(\.token).filter { if case .other = $0 { return false }; return true }
                for (i, token) in tokens.enumerated() {
                    guard case .word(let keyword, false) = token, ["index", "constraint", "sequence"].contains(keyword) else { continue }
                    var j = i + 1
                    // GENERATED ... AS IDENTITY (SEQUENCE NAME schema.name ...)
                    if keyword == "sequence", j + 1 < tokens.count, tokens[j] == .word("name", quoted: false), case .word = tokens[j + 1] { j += 1 }
                    // CREATE SEQUENCE schema.name / ADD CONSTRAINT name / CREATE INDEX name ON
                    if j + 2 < tokens.count, tokens[j + 1] == .symbol("."), case .word = tokens[j + 2] { j += 2 }
                    guard j < tokens.count, case .word(let name, let quoted) = tokens[j] else { continue }
                    if !quoted, ["on", "if", "concurrently"].contains(name) { continue }
                    if name == from.name { continue }
                    names[name] = Self.renamed(name, from: from.name, to: to.name)
                }
            }
        }
        objectNames = names
    }

    /// "conditions_time_idx" for "conditions" -> "copy" gives "copy_time_idx"; other names get
    /// the new table's name in front. Cut to PostgreSQL's 63 bytes.
    static func renamed(_ name: String, from old: String, to new: String) -> String {
        let result = name.hasPrefix(old) ? new + name.dropFirst(old.count) : new + "_" + name
        var bytes = Array(result.utf8)
        if bytes.count > 63 {
            bytes = Array(bytes.prefix(63))
            while String(bytes: bytes, encoding: .utf8) == nil { bytes.removeLast() }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func rewrite(_ statement: String) -> String {
        let tokens = SQLText.tokenize(statement)
        var out = ""
        var i = 0
        var previousWord: String?
        /// Index of the next token that is not whitespace or a comment.
        func next(_ k: Int) -> Int? {
            var j = k
            while j < tokens.count { if case .other = tokens[j].token { j += 1 } else { return j } }
            return nil
        }
        while i < tokens.count {
            let (token, text) = tokens[i]
            if case .word(let word, let quoted) = token {
                // schema . name
                if word == from.schema, let dot = next(i + 1), tokens[dot].token == .symbol("."),
                   let nameIndex = next(dot + 1), case .word(let name, _) = tokens[nameIndex].token {
                    if name == from.name {
                        out += SQLText.identifier(to.schema) + "." + SQLText.identifier(to.name)
                        i = nameIndex + 1
                        previousWord = name
                        continue
                    }
                    if let renamed = objectNames[name] {
                        out += SQLText.identifier(to.schema) + "." + SQLText.identifier(renamed)
                        i = nameIndex + 1
                        previousWord = name
                        continue
                    }
                }
                if let renamed = objectNames[word], let previousWord, ["index", "constraint", "sequence", "on"].contains(previousWord) || (previousWord == "cluster") {
                    out += SQLText.identifier(renamed)
                } else {
                    out += text
                }
                previousWord = quoted ? nil : word
            } else if case .string(let value) = token, text.hasPrefix("'") {
                // nextval('schema.sequence'::regclass)
                let parts = value.split(separator: ".", maxSplits: 1).map(String.init)
                if parts.count == 2, parts[0] == from.schema || parts[0] == SQLText.identifier(from.schema),
                   let renamed = objectNames[parts[1]] ?? objectNames[parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))] {
                    let qualified = SQLText.identifier(to.schema) + "." + SQLText.identifier(renamed)
                    out += SQLLiteral.quote(qualified)
                } else {
                    out += text
                }
            } else {
                out += text
                if case .symbol = token { previousWord = nil }
            }
            i += 1
        }
        return out
    }
}

import Foundation

/// A lexer and statement splitter for the SQL scripts a repository stores (roles.sql, a
/// hypertable's definition), so tsbackup can decide statement by statement what it runs.
///
/// It follows PostgreSQL's lexical rules where a script could hide a statement boundary:
/// `'...'` with `''`, `E'...'` with backslash escapes, `"..."` identifiers, `$tag$...$tag$`
/// bodies, `--` comments to the end of the line, nested `/* */` comments, and psql
/// meta-commands (a line starting with `\` where a statement would start). A `;` inside any of
/// these does not end a statement.
public enum SQLScript {
    public struct Token: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// An unquoted word (keyword or identifier); `value` is lower-cased.
            case word
            /// A `"quoted"` identifier; `value` is the name with `""` undoubled.
            case quotedIdentifier
            /// A string constant of any form; `value` is its content (escapes not interpreted).
            case string
            case number
            /// One character of punctuation or an operator; `;` ends a statement.
            case symbol
            case comment
            case whitespace
            /// A psql meta-command line (`\restrict key`); `value` is the line.
            case metaCommand
        }
        public var kind: Kind
        public var value: String
        /// The token as written.
        public var text: String
    }

    /// One statement of a script.
    public struct Statement: Sendable, Equatable {
        /// Its tokens without whitespace and comments.
        public var tokens: [Token]
        /// The statement as written, comments and surrounding whitespace removed, without `;`.
        public var text: String
        /// The line it starts on (1-based), for messages.
        public var line: Int
        /// True for a psql meta-command line.
        public var isMetaCommand: Bool { tokens.first?.kind == .metaCommand }

        /// The lower-cased leading unquoted words, up to `count`: ["create", "role"].
        public func leadingWords(_ count: Int) -> [String] {
            Array(tokens.prefix(count).prefix { $0.kind == .word }.map(\.value))
        }

        /// The statement for a message: one line, at most `limit` characters.
        public func excerpt(limit: Int = 120) -> String {
            let single = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            return single.count <= limit ? single : String(single.prefix(limit)) + "..."
        }
    }

    /// Splits `script` into statements; empty statements (`;;`, comments only) are dropped. An
    /// unterminated quote or comment runs to the end and makes the last statement.
    public static func split(_ script: String) -> [Statement] {
        var statements: [Statement] = []
        var tokens: [Token] = []
        var line = 1
        var startLine = 1
        // Whether `tokens` holds more than whitespace and comments. Kept as a flag, not found
        // by scanning `tokens` for every token: a script of nothing but comments made that scan
        // quadratic: 120 kB of them took a minute (found while writing its fuzz target; Fuzz/corpus/sql/regression-*).
        var started = false
        func flush() {
            let meaningful = tokens.filter { $0.kind != .whitespace && $0.kind != .comment }
            if !meaningful.isEmpty {
                let text = tokens.map { $0.kind == .comment ? " " : $0.text }.joined().trimmingCharacters(in: .whitespacesAndNewlines)
                statements.append(Statement(tokens: meaningful, text: text, line: startLine))
            }
            tokens = []
            started = false
        }
        for token in lex(script) {
            let meaningful = token.kind != .whitespace && token.kind != .comment
            if !started, meaningful {
                startLine = line
            }
            line += token.text.utf8.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            if token.kind == .symbol && token.value == ";" {
                flush()
            } else if token.kind == .metaCommand {
                flush()
                tokens = [token]
                flush()
            } else {
                tokens.append(token)
                started = started || meaningful
            }
        }
        flush()
        return statements
    }

    /// The tokens of `script`, whitespace and comments included, in order; their texts joined
    /// give back `script`.
    ///
    /// Reads UTF-8 bytes and classifies them as PostgreSQL's scanner (scan.l) does, never by
    /// Swift Character: a `'` followed by a combining mark is a quote there (as a Character it
    /// is not), U+037E is an identifier byte sequence there (as a Character it equals ";"), and
    /// "\r\n" is two bytes, the first of which ends a `--` comment. Any byte from 0x80 up is part
    /// of an identifier; whitespace is space, \t, \n, \r, \f and \v; digits are ASCII.
    public static func lex(_ script: String) -> [Token] {
        let bytes = Array(script.utf8)
        let n = bytes.count
        var tokens: [Token] = []
        var i = 0
        var atStatementStart = true
        func byte(_ k: Int) -> UInt8? { k < n ? bytes[k] : nil }
        func text(_ from: Int, _ to: Int) -> String { String(decoding: bytes[from..<to], as: UTF8.self) }

        while i < n {
            let start = i
            let c = bytes[i]
            let next = byte(i + 1)
            if isSpace(c) {
                while i < n, isSpace(bytes[i]) { i += 1 }
                tokens.append(Token(kind: .whitespace, value: "", text: text(start, i)))
                continue
            }
            if c == UInt8(ascii: "\\") && atStatementStart {
                // psql reads a meta-command to the end of the line.
                while i < n, !isNewline(bytes[i]) { i += 1 }
                let line = text(start, i)
                tokens.append(Token(kind: .metaCommand, value: line, text: line))
                continue
            }
            if c == UInt8(ascii: "-") && next == UInt8(ascii: "-") {
                // scan.l: "--" and everything up to \n or \r.
                while i < n, !isNewline(bytes[i]) { i += 1 }
                tokens.append(Token(kind: .comment, value: "", text: text(start, i)))
                continue
            }
            if c == UInt8(ascii: "/") && next == UInt8(ascii: "*") {
                var depth = 0
                while i < n {
                    if bytes[i] == UInt8(ascii: "/"), byte(i + 1) == UInt8(ascii: "*") { depth += 1; i += 2; continue }
                    if bytes[i] == UInt8(ascii: "*"), byte(i + 1) == UInt8(ascii: "/") {
                        depth -= 1; i += 2
                        if depth == 0 { break }
                        continue
                    }
                    i += 1
                }
                tokens.append(Token(kind: .comment, value: "", text: text(start, i)))
                continue
            }
            atStatementStart = false
            if c | 0x20 == UInt8(ascii: "e"), next == UInt8(ascii: "'") {
                // Escape string: a backslash escapes the next byte, `''` is a quote.
                i += 2
                var value: [UInt8] = []
                while i < n {
                    if bytes[i] == UInt8(ascii: "\\"), i + 1 < n { value.append(bytes[i]); value.append(bytes[i + 1]); i += 2; continue }
                    if bytes[i] == UInt8(ascii: "'") {
                        if byte(i + 1) == UInt8(ascii: "'") { value.append(bytes[i]); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(bytes[i]); i += 1
                }
                tokens.append(Token(kind: .string, value: String(decoding: value, as: UTF8.self), text: text(start, i)))
                continue
            }
            if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                // standard_conforming_strings: only a doubled quote stands for itself.
                i += 1
                var value: [UInt8] = []
                while i < n {
                    if bytes[i] == c {
                        if byte(i + 1) == c { value.append(c); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(bytes[i]); i += 1
                }
                let decoded = String(decoding: value, as: UTF8.self)
                tokens.append(Token(kind: c == UInt8(ascii: "'") ? .string : .quotedIdentifier, value: decoded, text: text(start, i)))
                continue
            }
            if c == UInt8(ascii: "$"), let tagEnd = dollarTagEnd(bytes, from: i) {
                // The body ends at the first byte-for-byte copy of the tag (scan.l compares with strcmp).
                let tag = bytes[i...tagEnd]
                i = tagEnd + 1
                let bodyStart = i
                var bodyEnd = n
                var j = i
                while j + tag.count <= n {
                    if bytes[j] == UInt8(ascii: "$"), bytes[j..<(j + tag.count)].elementsEqual(tag) { bodyEnd = j; break }
                    j += 1
                }
                i = min(n, bodyEnd + tag.count)
                tokens.append(Token(kind: .string, value: text(bodyStart, bodyEnd), text: text(start, i)))
                continue
            }
            if isIdentifierStart(c) {
                while i < n, isIdentifierStart(bytes[i]) || isDigit(bytes[i]) || bytes[i] == UInt8(ascii: "$") { i += 1 }
                let word = text(start, i)
                tokens.append(Token(kind: .word, value: asciiLowercased(bytes[start..<i]), text: word))
                continue
            }
            if isDigit(c) {
                while i < n, isDigit(bytes[i]) || bytes[i] == UInt8(ascii: ".") { i += 1 }
                tokens.append(Token(kind: .number, value: text(start, i), text: text(start, i)))
                continue
            }
            // Any other byte is ASCII punctuation (bytes from 0x80 up are identifier bytes).
            i += 1
            tokens.append(Token(kind: .symbol, value: text(start, i), text: text(start, i)))
            if c == UInt8(ascii: ";") { atStatementStart = true }
        }
        return tokens
    }

    // scan.l's classes, byte by byte.

    /// `space [ \t\n\r\f\v]`.
    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }
    /// `newline [\n\r]`: what ends a `--` comment.
    static func isNewline(_ b: UInt8) -> Bool { b == 0x0A || b == 0x0D }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    /// `ident_start [A-Za-z\200-\377_]`.
    static func isIdentifierStart(_ b: UInt8) -> Bool { (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x5F || b >= 0x80 }

    /// An unquoted identifier as PostgreSQL folds it: ASCII letters only (downcase_identifier
    /// leaves multibyte characters alone; Swift's lowercased() would turn U+212A KELVIN SIGN into "k").
    static func asciiLowercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// `$tag$` (or `$$`) starting at `i`: the index of its closing `$`. scan.l's dolqdelim: a tag
    /// is `[A-Za-z\200-\377_][A-Za-z\200-\377_0-9]*` (`$1` is a parameter).
    static func dollarTagEnd(_ bytes: [UInt8], from i: Int) -> Int? {
        var j = i + 1
        while j < bytes.count, isIdentifierStart(bytes[j]) || isDigit(bytes[j]) {
            if j == i + 1 && isDigit(bytes[j]) { return nil }
            j += 1
        }
        return j < bytes.count && bytes[j] == UInt8(ascii: "$") ? j : nil
    }
}

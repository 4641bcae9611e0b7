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
            line += token.text.filter(\.isNewline).count
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
    public static func lex(_ script: String) -> [Token] {
        let chars = Array(script)
        var tokens: [Token] = []
        var i = 0
        var atStatementStart = true
        func isWordStart(_ c: Character) -> Bool { c.isLetter || c == "_" }
        func isWordPart(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" || c == "$" }
        func text(_ from: Int, _ to: Int) -> String { String(chars[from..<to]) }

        while i < chars.count {
            let start = i
            let c = chars[i]
            let next: Character? = i + 1 < chars.count ? chars[i + 1] : nil
            if c.isWhitespace {
                while i < chars.count, chars[i].isWhitespace { i += 1 }
                tokens.append(Token(kind: .whitespace, value: "", text: text(start, i)))
                continue
            }
            if c == "\\" && atStatementStart {
                // psql reads a meta-command to the end of the line.
                while i < chars.count, !chars[i].isNewline { i += 1 }
                let line = text(start, i)
                tokens.append(Token(kind: .metaCommand, value: line, text: line))
                continue
            }
            if c == "-" && next == "-" {
                while i < chars.count, !chars[i].isNewline { i += 1 }
                tokens.append(Token(kind: .comment, value: "", text: text(start, i)))
                continue
            }
            if c == "/" && next == "*" {
                var depth = 0
                while i < chars.count {
                    if chars[i] == "/", i + 1 < chars.count, chars[i + 1] == "*" { depth += 1; i += 2; continue }
                    if chars[i] == "*", i + 1 < chars.count, chars[i + 1] == "/" {
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
            if (c == "e" || c == "E"), next == "'" {
                // Escape string: a backslash escapes the next character, `''` is a quote.
                i += 2
                var value = ""
                while i < chars.count {
                    if chars[i] == "\\", i + 1 < chars.count { value.append(chars[i]); value.append(chars[i + 1]); i += 2; continue }
                    if chars[i] == "'" {
                        if i + 1 < chars.count, chars[i + 1] == "'" { value.append("'"); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(chars[i]); i += 1
                }
                tokens.append(Token(kind: .string, value: value, text: text(start, i)))
                continue
            }
            if c == "'" || c == "\"" {
                i += 1
                var value = ""
                while i < chars.count {
                    if chars[i] == c {
                        if i + 1 < chars.count, chars[i + 1] == c { value.append(c); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(chars[i]); i += 1
                }
                tokens.append(Token(kind: c == "'" ? .string : .quotedIdentifier, value: value, text: text(start, i)))
                continue
            }
            if c == "$", let tagEnd = dollarTagEnd(chars, from: i) {
                let tag = Array(chars[i...tagEnd])
                i = tagEnd + 1
                let bodyStart = i
                var bodyEnd = chars.count
                var j = i
                while j + tag.count <= chars.count {
                    if chars[j] == "$", Array(chars[j..<(j + tag.count)]) == tag { bodyEnd = j; break }
                    j += 1
                }
                i = min(chars.count, bodyEnd + tag.count)
                tokens.append(Token(kind: .string, value: text(bodyStart, bodyEnd), text: text(start, i)))
                continue
            }
            if isWordStart(c) {
                while i < chars.count, isWordPart(chars[i]) { i += 1 }
                let word = text(start, i)
                tokens.append(Token(kind: .word, value: word.lowercased(), text: word))
                continue
            }
            if c.isNumber {
                while i < chars.count, chars[i].isNumber || chars[i] == "." { i += 1 }
                tokens.append(Token(kind: .number, value: text(start, i), text: text(start, i)))
                continue
            }
            i += 1
            tokens.append(Token(kind: .symbol, value: String(c), text: String(c)))
            if c == ";" { atStatementStart = true }
        }
        return tokens
    }

    /// `$tag$` (or `$$`) starting at `i`: the index of its closing `$`. A tag is an identifier
    /// that does not start with a digit (`$1` is a parameter). Also used by TableDefinition's
    /// tokenizer.
    static func dollarTagEnd(_ chars: [Character], from i: Int) -> Int? {
        var j = i + 1
        while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" {
            if j == i + 1 && chars[j].isNumber { return nil }
            j += 1
        }
        return j < chars.count && chars[j] == "$" ? j : nil
    }
}

/// ``SQLText/tokenize(_:)``'s scanner: it walks the script's UTF-8 bytes and classifies them as
/// PostgreSQL's scanner (src/backend/parser/scan.l) does, never by Swift Character.
///
/// A Character (grapheme cluster) is the wrong unit for SQL: `'` followed by a combining mark is
/// one Character and no quote, but PostgreSQL reads a quote byte; U+037E GREEK QUESTION MARK is
/// canonically equivalent to ";", but PostgreSQL reads identifier bytes; "\r\n" is one Character,
/// but PostgreSQL ends a `--` comment at the "\r". So here, as in scan.l: whitespace is space,
/// \t, \n, \r, \f and \v; an identifier starts with an ASCII letter, `_` or any byte from 0x80 up
/// and goes on with those, digits and `$`; digits are ASCII; `--` runs to \n or \r; `/* */`
/// nests; `'...'` and `"..."` end at a quote that is not doubled (standard_conforming_strings);
/// `E'...'` (wherever a token starts with it) also takes backslash escapes; `$tag$` ends at the
/// first byte-for-byte copy of the tag. Every other byte is ASCII punctuation, a symbol.
struct SQLTextScanner {
    typealias Token = SQLText.Token

    private let bytes: [UInt8]

    init(_ sql: String) {
        bytes = Array(sql.utf8)
    }

    private var count: Int { bytes.count }

    @inline(__always)
    private func byte(_ i: Int) -> UInt8? { i < count ? bytes[i] : nil }

    private func text(_ start: Int, _ end: Int) -> String {
        String(decoding: bytes[start..<end], as: UTF8.self)
    }

    mutating func tokens() -> [(token: Token, text: String)] {
        var tokens: [(token: Token, text: String)] = []
        var i = 0
        let dash = UInt8(ascii: "-"), slash = UInt8(ascii: "/"), star = UInt8(ascii: "*"), doubleQuote = UInt8(ascii: "\"")
        let quote = UInt8(ascii: "'"), dollar = UInt8(ascii: "$"), dot = UInt8(ascii: ".")
        while i < count {
            let start = i
            let c = bytes[i]
            let after = byte(i + 1)
            if c == dash && after == dash {
                while i < count && !SQLScript.isNewline(bytes[i]) { i += 1 }
                let comment = text(start, i)
                tokens.append((.other(comment), comment))
            } else if c == slash && after == star {
                var depth = 0
                repeat {
                    if bytes[i] == slash && byte(i + 1) == star { depth += 1; i += 2 }
                    else if bytes[i] == star && byte(i + 1) == slash { depth -= 1; i += 2 }
                    else { i += 1 }
                } while depth > 0 && i < count
                let comment = text(start, i)
                tokens.append((.other(comment), comment))
            } else if c == doubleQuote {
                let (value, end) = quoted(from: i + 1, by: doubleQuote, escapes: false)
                i = end
                tokens.append((.word(value, quoted: true), text(start, i)))
            } else if c == quote || (c | 0x20 == UInt8(ascii: "e") && after == quote) {
                let escapes = c != quote
                let (value, end) = quoted(from: escapes ? i + 2 : i + 1, by: quote, escapes: escapes)
                i = end
                tokens.append((.string(value), text(start, i)))
            } else if c == dollar, let tagEnd = SQLScript.dollarTagEnd(bytes, from: i) {
                let tag = bytes[i...tagEnd]
                i = tagEnd + 1
                let bodyStart = i
                var bodyEnd = count
                var candidate = i
                while candidate + tag.count <= count {
                    if bytes[candidate] == dollar, bytes[candidate..<(candidate + tag.count)].elementsEqual(tag) { bodyEnd = candidate; break }
                    candidate += 1
                }
                i = min(count, bodyEnd + tag.count)
                tokens.append((.string(text(bodyStart, bodyEnd)), text(start, i)))
            } else if SQLScript.isIdentifierStart(c) {
                while i < count && (SQLScript.isIdentifierStart(bytes[i]) || SQLScript.isDigit(bytes[i]) || bytes[i] == dollar) { i += 1 }
                tokens.append((.word(SQLScript.asciiLowercased(bytes[start..<i]), quoted: false), text(start, i)))
            } else if SQLScript.isSpace(c) {
                while i < count && SQLScript.isSpace(bytes[i]) { i += 1 }
                let run = text(start, i)
                tokens.append((.other(run), run))
            } else if SQLScript.isDigit(c) {
                while i < count && (SQLScript.isDigit(bytes[i]) || bytes[i] == dot) { i += 1 }
                let run = text(start, i)
                tokens.append((.other(run), run))
            } else {
                // ASCII punctuation: bytes from 0x80 up are identifier bytes.
                i += 1
                tokens.append((.symbol(Character(Unicode.Scalar(c))), text(start, i)))
            }
        }
        return tokens
    }

    /// A quoted token's content from `start` (after the opening quote) to the closing `quote`
    /// (or the end): a doubled quote is one, and with `escapes` a backslash takes the next byte
    /// as it is. Returns the content and where the token ends.
    private func quoted(from start: Int, by quote: UInt8, escapes: Bool) -> (value: String, end: Int) {
        var value: [UInt8] = []
        var i = start
        while i < count {
            if escapes && bytes[i] == UInt8(ascii: "\\") && i + 1 < count {
                value.append(bytes[i + 1])
                i += 2
                continue
            }
            if bytes[i] == quote {
                if byte(i + 1) == quote { value.append(quote); i += 2; continue }
                i += 1
                break
            }
            value.append(bytes[i])
            i += 1
        }
        return (String(decoding: value, as: UTF8.self), i)
    }
}

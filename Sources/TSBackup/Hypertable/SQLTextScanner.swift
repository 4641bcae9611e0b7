/// ``SQLText/tokenize(_:)``'s scanner: it walks the script's UTF-8 bytes and gives the tokens a
/// reading Character by Character gives.
///
/// The unit it steps by is still the Character (grapheme cluster), and a Character's class is
/// its first scalar's (`isLetter`, `isNumber` and `isWhitespace` are defined that way), so
/// `'` followed by a combining mark is no quote here either, and "\r\n" is one unit. What makes it
/// fast: in an ASCII script (pg_dump's definitions are) every byte is a unit but for "\r\n", so
/// no grapheme breaking runs at all; in any other script the Character boundaries are found once,
/// up front, instead of building an array of Characters and a String per Character.
struct SQLTextScanner {
    typealias Token = SQLText.Token

    private let source: String
    private let bytes: [UInt8]
    /// For a script that is not all ASCII: whether a Character starts at each byte offset
    /// (`count + 1` entries); empty for an ASCII script.
    private let boundaries: [Bool]

    init(_ sql: String) {
        source = sql
        bytes = Array(sql.utf8)
        if bytes.allSatisfy({ $0 < 0x80 }) {
            boundaries = []
        } else {
            var marks = [Bool](repeating: false, count: bytes.count + 1)
            let utf8 = sql.utf8
            var index = sql.startIndex
            marks[0] = true
            while index < sql.endIndex {
                index = sql.index(after: index)
                marks[utf8.distance(from: utf8.startIndex, to: index)] = true
            }
            boundaries = marks
        }
    }

    private var count: Int { bytes.count }

    /// The end of the Character that starts at `i` (`i < count`).
    @inline(__always)
    private func next(_ i: Int) -> Int {
        if boundaries.isEmpty {
            return bytes[i] == 0x0D && i + 1 < count && bytes[i + 1] == 0x0A ? i + 2 : i + 1
        }
        var j = i + 1
        while !boundaries[j] { j += 1 }
        return j
    }

    /// Whether the Character at `i` is exactly the ASCII character `byte` (for the characters
    /// compared here no other Character is canonically equivalent to one).
    @inline(__always)
    private func isUnit(_ i: Int, _ byte: UInt8) -> Bool {
        i < count && bytes[i] == byte && next(i) == i + 1
    }

    /// The first scalar of the Character at `i`.
    private func scalar(at i: Int) -> Unicode.Scalar {
        let b0 = UInt32(bytes[i])
        if b0 < 0x80 { return Unicode.Scalar(UInt8(b0)) }
        func continuation(_ k: Int) -> UInt32 { UInt32(bytes[i + k] & 0x3F) }
        let value: UInt32
        if b0 < 0xE0 {
            value = (b0 & 0x1F) << 6 | continuation(1)
        } else if b0 < 0xF0 {
            value = (b0 & 0x0F) << 12 | continuation(1) << 6 | continuation(2)
        } else {
            value = (b0 & 0x07) << 18 | continuation(1) << 12 | continuation(2) << 6 | continuation(3)
        }
        return Unicode.Scalar(value) ?? "\u{FFFD}"
    }

    // Character.isLetter / isNumber / isWhitespace: the first scalar's Alphabetic, Numeric_Type
    // and White_Space properties; for ASCII those are A-Z a-z, 0-9, and \t \n \v \f \r space.
    private func isLetter(_ i: Int) -> Bool {
        let b = bytes[i]
        if b < 0x80 { return (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }
        return scalar(at: i).properties.isAlphabetic
    }

    private func isNumber(_ i: Int) -> Bool {
        let b = bytes[i]
        if b < 0x80 { return b >= 0x30 && b <= 0x39 }
        return scalar(at: i).properties.numericType != nil
    }

    private func isWhitespace(_ i: Int) -> Bool {
        let b = bytes[i]
        if b < 0x80 { return b == 0x20 || (b >= 0x09 && b <= 0x0D) }
        return scalar(at: i).properties.isWhitespace
    }

    private func isWordPart(_ i: Int) -> Bool {
        isLetter(i) || isNumber(i) || isUnit(i, UInt8(ascii: "_")) || isUnit(i, UInt8(ascii: "$"))
    }

    private func text(_ start: Int, _ end: Int) -> String {
        String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// The Character that starts at `i` (a Character boundary), as the script's own.
    private func character(at i: Int) -> Character {
        if bytes[i] < 0x80 && next(i) == i + 1 { return Character(Unicode.Scalar(bytes[i])) }
        return source[source.utf8.index(source.utf8.startIndex, offsetBy: i)]
    }

    /// Two Characters compared as `Character`s are (canonical equivalence), bytes first.
    private func sameCharacter(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
        if a.count == 1 && b.count == 1 { return bytes[a.lowerBound] == bytes[b.lowerBound] }
        if bytes[a].elementsEqual(bytes[b]) { return true }
        return character(at: a.lowerBound) == character(at: b.lowerBound)
    }

    /// `$tag$` starting at `i`: the offset of its closing `$`. A tag is letters, digits and `_`,
    /// not starting with a digit (`$1` is a parameter).
    private func dollarTagEnd(from i: Int) -> Int? {
        var j = next(i)
        let first = j
        while j < count, isLetter(j) || isNumber(j) || isUnit(j, UInt8(ascii: "_")) {
            if j == first && isNumber(j) { return nil }
            j = next(j)
        }
        return isUnit(j, UInt8(ascii: "$")) ? j : nil
    }

    mutating func tokens() -> [(token: Token, text: String)] {
        var tokens: [(token: Token, text: String)] = []
        var lastIsWord = false
        var i = 0
        let dash = UInt8(ascii: "-"), slash = UInt8(ascii: "/"), star = UInt8(ascii: "*"), doubleQuote = UInt8(ascii: "\"")
        let quote = UInt8(ascii: "'"), dollar = UInt8(ascii: "$"), newline = UInt8(ascii: "\n")
        while i < count {
            let start = i
            let after = next(i)
            if isUnit(i, dash) && isUnit(after, dash) {
                while i < count && !isUnit(i, newline) { i = next(i) }
                let comment = text(start, i)
                tokens.append((.other(comment), comment))
                lastIsWord = false
            } else if isUnit(i, slash) && isUnit(after, star) {
                var depth = 0
                repeat {
                    let second = next(i)
                    if isUnit(i, slash) && isUnit(second, star) { depth += 1; i = next(second) }
                    else if isUnit(i, star) && isUnit(second, slash) { depth -= 1; i = next(second) }
                    else { i = second }
                } while depth > 0 && i < count
                let comment = text(start, i)
                tokens.append((.other(comment), comment))
                lastIsWord = false
            } else if isUnit(i, doubleQuote) {
                let (value, end) = quoted(from: after, by: doubleQuote, escapes: false)
                i = end
                tokens.append((.word(value, quoted: true), text(start, i)))
                lastIsWord = true
            } else if isUnit(i, quote) || ((isUnit(i, UInt8(ascii: "E")) || isUnit(i, UInt8(ascii: "e"))) && isUnit(after, quote) && !lastIsWord) {
                let escapes = !isUnit(i, quote)
                let (value, end) = quoted(from: escapes ? next(after) : after, by: quote, escapes: escapes)
                i = end
                tokens.append((.string(value), text(start, i)))
                lastIsWord = false
            } else if isUnit(i, dollar), let tagEnd = dollarTagEnd(from: i) {
                var tag: [Range<Int>] = []
                var k = i
                while k <= tagEnd { let end = next(k); tag.append(k..<end); k = end }
                i = next(tagEnd)
                let bodyStart = i
                var bodyEnd = count
                var candidate = i
                // The body ends at the next Character-for-Character copy of the tag.
                while candidate < count {
                    if isUnit(candidate, dollar), matches(tag, at: candidate) { bodyEnd = candidate; break }
                    candidate = next(candidate)
                }
                i = bodyEnd
                for _ in tag where i < count { i = next(i) }
                tokens.append((.string(text(bodyStart, bodyEnd)), text(start, i)))
                lastIsWord = false
            } else if isLetter(i) || isUnit(i, UInt8(ascii: "_")) {
                while i < count && isWordPart(i) { i = next(i) }
                let word = text(start, i)
                tokens.append((.word(word.lowercased(), quoted: false), word))
                lastIsWord = true
            } else if isWhitespace(i) || isNumber(i) {
                let whitespace = isWhitespace(i)
                while i < count && isWhitespace(i) == whitespace && (whitespace || isNumber(i) || isUnit(i, UInt8(ascii: "."))) { i = next(i) }
                let run = text(start, i)
                tokens.append((.other(run), run))
                lastIsWord = false
            } else {
                i = after
                tokens.append((.symbol(character(at: start)), text(start, i)))
                lastIsWord = false
            }
        }
        return tokens
    }

    /// A quoted token's content from `start` (after the opening quote) to the closing `quote`
    /// (or the end): a doubled quote is one, and with `escapes` a backslash takes the next
    /// Character as it is. Returns the content and where the token ends.
    private func quoted(from start: Int, by quote: UInt8, escapes: Bool) -> (value: String, end: Int) {
        var value: [UInt8] = []
        var i = start
        while i < count {
            let end = next(i)
            if escapes && isUnit(i, UInt8(ascii: "\\")) && end < count {
                let escaped = next(end)
                value.append(contentsOf: bytes[end..<escaped])
                i = escaped
                continue
            }
            if isUnit(i, quote) {
                if isUnit(end, quote) { value.append(quote); i = next(end); continue }
                i = end
                break
            }
            value.append(contentsOf: bytes[i..<end])
            i = end
        }
        return (String(decoding: value, as: UTF8.self), i)
    }

    /// Whether the Characters from `start` on are those of `tag` (the first, `$`, already matched).
    private func matches(_ tag: [Range<Int>], at start: Int) -> Bool {
        var position = start
        for unit in tag {
            guard position < count else { return false }
            let end = next(position)
            if !sameCharacter(position..<end, unit) { return false }
            position = end
        }
        return true
    }
}

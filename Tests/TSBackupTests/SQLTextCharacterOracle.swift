import Foundation
@testable import TSBackup

/// `SQLText`'s tokenizer as it was before it scanned UTF-8 bytes: Character by Character, over
/// `Array(sql)`. Kept here only as the reference the byte scanner is compared with
/// (SQLTextEquivalenceTests): same tokens, same statements, same qualified names (found by the
/// one `SQLText.qualifiedNames` in the tokens each gives). Its `$tag$` rule is SQLScript's, as it was.
enum SQLTextCharacterOracle {
    typealias Token = SQLText.Token

    /// Tokens with their exact source text, so unchanged tokens are written back byte for byte.
    static func tokenize(_ sql: String) -> [(token: Token, text: String)] {
        let chars = Array(sql)
        var tokens: [(Token, String)] = []
        var i = 0
        func isWordStart(_ c: Character) -> Bool { c.isLetter || c == "_" }
        func isWordPart(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" || c == "$" }
        while i < chars.count {
            let c = chars[i]
            let start = i
            if c == "-" && i + 1 < chars.count && chars[i + 1] == "-" {
                while i < chars.count && chars[i] != "\n" { i += 1 }
                tokens.append((.other(String(chars[start..<i])), String(chars[start..<i])))
            } else if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                var depth = 0
                repeat {
                    if chars[i] == "/" && i + 1 < chars.count && chars[i + 1] == "*" { depth += 1; i += 2 }
                    else if chars[i] == "*" && i + 1 < chars.count && chars[i + 1] == "/" { depth -= 1; i += 2 }
                    else { i += 1 }
                } while depth > 0 && i < chars.count
                tokens.append((.other(String(chars[start..<i])), String(chars[start..<i])))
            } else if c == "\"" {
                var value = ""
                i += 1
                while i < chars.count {
                    if chars[i] == "\"" {
                        if i + 1 < chars.count && chars[i + 1] == "\"" { value.append("\""); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(chars[i])
                    i += 1
                }
                tokens.append((.word(value, quoted: true), String(chars[start..<i])))
            } else if c == "'" || ((c == "E" || c == "e") && i + 1 < chars.count && chars[i + 1] == "'" && !(tokens.last.map { isWordLike($0.0) } ?? false)) {
                let escapes = c != "'"
                if escapes { i += 1 }
                var value = ""
                i += 1
                while i < chars.count {
                    if escapes && chars[i] == "\\" && i + 1 < chars.count { value.append(chars[i + 1]); i += 2; continue }
                    if chars[i] == "'" {
                        if i + 1 < chars.count && chars[i + 1] == "'" { value.append("'"); i += 2; continue }
                        i += 1
                        break
                    }
                    value.append(chars[i])
                    i += 1
                }
                tokens.append((.string(value), String(chars[start..<i])))
            } else if c == "$", let tagEnd = dollarTagEnd(chars, from: i) {
                let tag = String(chars[i...tagEnd])
                i = tagEnd + 1
                var bodyEnd = i
                while bodyEnd < chars.count && !String(chars[bodyEnd..<min(chars.count, bodyEnd + tag.count)]).elementsEqual(tag) { bodyEnd += 1 }
                let value = String(chars[i..<min(bodyEnd, chars.count)])
                i = min(chars.count, bodyEnd + tag.count)
                tokens.append((.string(value), String(chars[start..<i])))
            } else if isWordStart(c) {
                while i < chars.count && isWordPart(chars[i]) { i += 1 }
                let text = String(chars[start..<i])
                tokens.append((.word(text.lowercased(), quoted: false), text))
            } else if c.isWhitespace || c.isNumber {
                while i < chars.count && (chars[i].isWhitespace == c.isWhitespace) && (c.isWhitespace || chars[i].isNumber || chars[i] == ".") { i += 1 }
                tokens.append((.other(String(chars[start..<i])), String(chars[start..<i])))
            } else {
                i += 1
                tokens.append((.symbol(c), String(c)))
            }
        }
        return tokens
    }

    private static func isWordLike(_ token: Token) -> Bool {
        if case .word = token { return true }
        return false
    }

    /// Splits a script on semicolons outside quotes and comments; empty statements are dropped.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        for (token, text) in tokenize(sql) {
            if token == .symbol(";") {
                statements.append(current)
                current = ""
            } else {
                current += text
            }
        }
        statements.append(current)
        return statements.map { stripComments($0).trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    /// Comments out; one between two tokens with no whitespace on either side leaves a space
    /// (added with the same rule in `SQLText.statements`: `a/*c*/b` once became `ab`).
    private static func stripComments(_ sql: String) -> String {
        var out = ""
        var afterComment = false
        for (token, text) in tokenize(sql) {
            if case .other(let value) = token, value.hasPrefix("--") || value.hasPrefix("/*") {
                afterComment = true
                continue
            }
            if afterComment, let before = out.last, !before.isWhitespace, let after = text.first, !after.isWhitespace { out += " " }
            afterComment = false
            out += text
        }
        return out
    }

    static func qualifiedNames(after keyword: String, in sql: String) -> [(schema: String, name: String)] {
        SQLText.qualifiedNames(after: keyword, inTokens: tokenize(sql))
    }

    /// SQLScript's Character-wise `$tag$` rule, as it was.
    static func dollarTagEnd(_ chars: [Character], from i: Int) -> Int? {
        var j = i + 1
        while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" {
            if j == i + 1 && chars[j].isNumber { return nil }
            j += 1
        }
        return j < chars.count && chars[j] == "$" ? j : nil
    }
}

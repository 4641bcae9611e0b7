import Foundation
import Testing
@testable import TSBackup

/// `SQLText` scans UTF-8 bytes; before, it read `Array(sql)` Character by Character
/// (`SQLTextCharacterOracle`, kept in this target). Since the byte scanner reads bytes as
/// PostgreSQL does (issue 14: the Character reading let a repository writer hide a statement),
/// the two agree only where Characters and PostgreSQL agree: on ASCII without "\r", and without
/// `E'` right after a quoted identifier. There both must give the same tokens (kind, value and
/// exact text), statements and qualified names. Everywhere (those inputs included) SQLText must
/// give the tokens of ``SQLScript/lex(_:)``, the policy's lexer, written separately: the same
/// boundaries, kinds and names. Inputs: the fuzz corpus, the unit tests' definitions, hand-made
/// edge cases and seeded random scripts built from the pieces that matter to the lexer (quotes,
/// comments, dollar tags, CRLF, combining marks, canonically equivalent characters, non-ASCII
/// letters and digits). SQLScriptPostgresLexingTests tests the intended differences themselves.
@Suite("SQLText: the byte scanner against the Character-wise original and SQLScript")
struct SQLTextEquivalenceTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus/sql").standardizedFileURL

    static func corpusScripts() throws -> [(name: String, text: String)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted()
        return try names.map { ($0, String(decoding: try Data(contentsOf: corpus.appendingPathComponent($0)), as: UTF8.self)) }
    }

    /// Where the byte scanner differs from the Character-wise original by design: a byte from
    /// 0x80 up (an identifier byte to PostgreSQL, where Characters saw letters, combining marks,
    /// symbols, whitespace, digits and canonical equivalents of ";"), a "\r" (it ends a `--`
    /// comment, and "\r\n" was one Character), or `"E'` (an escape string after a quoted identifier).
    static func differsByDesign(_ sql: String) -> Bool {
        let bytes = Array(sql.utf8)
        if bytes.contains(where: { $0 >= 0x80 || $0 == 0x0D }) { return true }
        return sql.contains("\"E'") || sql.contains("\"e'")
    }

    /// Fails with the first difference, naming the input. Returns whether the input was compared
    /// with the Character-wise original (counted, so that a test excluding everything would show).
    @discardableResult
    static func expectSame(_ sql: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let new = SQLText.tokenize(sql)
        #expect(new.map(\.text).joined() == sql, "\(name): the texts give back the input", sourceLocation: sourceLocation)
        expectSQLScriptTokens(sql, new, name, sourceLocation: sourceLocation)
        if differsByDesign(sql) { return false }
        let old = SQLTextCharacterOracle.tokenize(sql)
        let sameTokens = new.count == old.count && zip(new, old).allSatisfy { $0.token == $1.token && $0.text == $1.text }
        if !sameTokens {
            let at = (0..<min(new.count, old.count)).first { new[$0].token != old[$0].token || new[$0].text != old[$0].text } ?? min(new.count, old.count)
            Issue.record("\(name): tokens differ at \(at): \(new.dropFirst(at).prefix(3)) vs \(old.dropFirst(at).prefix(3)) (input \(sql.debugDescription.prefix(300)))",
                         sourceLocation: sourceLocation)
            return true
        }
        #expect(SQLText.statements(sql) == SQLTextCharacterOracle.statements(sql), "\(name): statements", sourceLocation: sourceLocation)
        for keyword in ["references", "function"] {
            let newNames = SQLText.qualifiedNames(after: keyword, in: sql).map { "\($0.schema).\($0.name)" }
            let oldNames = SQLTextCharacterOracle.qualifiedNames(after: keyword, in: sql).map { "\($0.schema).\($0.name)" }
            #expect(newNames == oldNames, "\(name): names after \(keyword)", sourceLocation: sourceLocation)
        }
        return true
    }

    /// SQLText's tokens against SQLScript's: same texts, same kinds (identifiers, strings,
    /// symbols; everything else is `.other` in SQLText), same identifier names. Inputs where
    /// SQLScript sees a psql meta-command (a `\` where a statement starts; SQLText has none) are left out.
    static func expectSQLScriptTokens(_ sql: String, _ new: [(token: SQLText.Token, text: String)], _ name: String,
                                      sourceLocation: SourceLocation) {
        let script = SQLScript.lex(sql)
        if script.contains(where: { $0.kind == .metaCommand }) { return }
        func described(_ token: SQLText.Token) -> String {
            switch token {
            case .word(let value, let quoted): return "word \(quoted) \(value)"
            case .string: return "string"
            case .symbol: return "symbol"
            case .other: return "other"
            }
        }
        func described(_ token: SQLScript.Token) -> String {
            switch token.kind {
            case .word: return "word false \(token.value)"
            case .quotedIdentifier: return "word true \(token.value)"
            case .string: return "string"
            case .symbol: return "symbol"
            default: return "other"
            }
        }
        let a = new.map { described($0.token) + " " + $0.text }
        let b = script.map { described($0) + " " + $0.text }
        if a != b {
            let at = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
            Issue.record("\(name): SQLText and SQLScript differ at token \(at): \(a.dropFirst(at).prefix(3)) vs \(b.dropFirst(at).prefix(3)) (input \(sql.debugDescription.prefix(300)))",
                         sourceLocation: sourceLocation)
        }
    }

    @Test func fuzzCorpusAndUnitTestDefinitions() throws {
        let scripts = try Self.corpusScripts()
        #expect(scripts.count >= 4)
        for (name, text) in scripts { Self.expectSame(text, name) }
        Self.expectSame(HypertableExportDefinitionTests.dump, "HypertableExportDefinitionTests.dump")
        // Each object's body, as TableDefinition hands it over.
        for (name, text) in scripts {
            for object in TableDefinition(pgDumpOutput: text).objects {
                for statement in object.statements { Self.expectSame(statement, "\(name): \(object.name)") }
            }
        }
    }

    static let edgeCases: [String] = [
        "", ";", ";;", " ", "\r\n", "--", "-- x\r\nSELECT 1;", "/*", "/* /* */", "/* a /* b */ c */ d;", "*/",
        "\"", "\"\"", "\"a\"\"b\"", "'", "''", "'it''s'", "E'a\\'b'", "e'\\", "xE'a'", "\"q\"E'a'", "E", "E'",
        "$", "$$", "$$ ; $$;", "$a$ x $a$", "$a$ x $A$ y", "$1", "$_$;$_$", "$a", "$a$", "$é$ ; $é$", "$é$ ; $e\u{301}$ ;",
        "$K$ ; $\u{212A}$ ;", "$\u{212A}$ x $K$", "$a\u{301}$ ; $a\u{301}$", "\u{600}$$ ; $$", "$$\u{600}$$ ; $$",
        "'\u{301}; SELECT 1", "\"\u{301}\";", "-\u{301}- x", "--\u{301}\nx", "/\u{301}* x */", "a\u{301}b", "\u{301}",
        "SELECT 1\u{37E} SELECT 2", "\u{1FEF}", "\u{212A}ey", "\u{FEFF}SELECT", "x\u{200D}y", "🇺🇸🇺", "👩‍💻;",
        "\u{1100}\u{1161}\u{11A8} x", "٣٤.٥ x", "Ⅻ", "1.2.3e5", " \u{85}\u{A0}\u{2028} ", "\r", "\r\r\n\n",
        "CREATE TABLE \"My\"\"T\" (a int REFERENCES public.devices(id), b int REFERENCES \"S\".\"T\");",
        "ALTER TABLE ONLY public.conditions ADD CONSTRAINT c FOREIGN KEY (d) REFERENCES public.devices(id);",
        "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION _timescaledb_functions.insert_blocker();",
    ]

    @Test func handMadeEdgeCases() {
        let compared = Self.edgeCases.enumerated().filter { Self.expectSame($0.element, "edge case \($0.offset)") }.count
        #expect(compared >= 30, "compared with the original: \(compared) of \(Self.edgeCases.count)")
    }

    /// The pieces random scripts are made of.
    static let pieces: [String] = [
        "--", "-", "/*", "*/", "/", "*", "\"", "\"\"", "'", "''", "E'", "e'", "E", "\\", "\\'", "$", "$$", "$a$", "$tag$",
        "$1", "$é$", "$e\u{301}$", "$\u{212A}$", "$K$", ";", ".", " ", "  ", "\n", "\r\n", "\r", "\t", "\u{0B}", "abc", "ABC",
        "_x", "x$y", "123", "1.5", "é", "e\u{301}", "\u{301}", "'\u{301}", "\"\u{301}", "-\u{301}", "\u{37E}", "\u{212A}",
        "K", "\u{1FEF}", "👩‍💻", "🇺🇸", "🇺", "\u{600}", "\u{1100}", "\u{1161}", "\u{85}", "\u{A0}", "\u{2028}", "٣", "Ⅻ",
        "references", "REFERENCES", "function", "public", "\"My Table\"", "(", ")", ",", "\u{FEFF}", "\u{200D}", "\u{FE0F}",
        "ß", "İ", "\u{1F600}", "\u{0}", "\u{7F}", "\u{1C}",
    ]

    /// A small deterministic generator (xorshift64*), so a failure replays.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
    }

    @Test func seededRandomScripts() {
        var random = Generator(state: 0x5EED_5EED_1234_5678)
        var compared = 0
        for index in 0..<4_000 {
            let length = Int.random(in: 0...40, using: &random)
            let sql = (0..<length).map { _ in Self.pieces.randomElement(using: &random)! }.joined()
            if Self.expectSame(sql, "random script \(index)") { compared += 1 }
        }
        // The same pieces without those that differ by design, so the original still sees many.
        let plain = Self.pieces.filter { !Self.differsByDesign($0) }
        for index in 0..<4_000 {
            let length = Int.random(in: 0...40, using: &random)
            let sql = (0..<length).map { _ in plain.randomElement(using: &random)! }.joined()
            if Self.expectSame(sql, "plain random script \(index)") { compared += 1 }
        }
        #expect(compared >= 4_000, "compared with the original: \(compared) of 8,000")
    }

    /// Cuts of the corpus at arbitrary byte offsets (repaired as tsbackup reads bytes), with
    /// random pieces spliced in.
    @Test func corpusCutsAndSplices() throws {
        var random = Generator(state: 0xC0FF_EE00_DEAD_BEEF)
        let scripts = try Self.corpusScripts().map { Array($0.text.utf8) }
        for index in 0..<600 {
            let bytes = scripts.randomElement(using: &random)!
            let start = Int.random(in: 0..<max(1, bytes.count), using: &random)
            let end = min(bytes.count, start + Int.random(in: 0...3_000, using: &random))
            var text = String(decoding: bytes[start..<end], as: UTF8.self)
            for _ in 0..<Int.random(in: 0...4, using: &random) {
                let offset = Int.random(in: 0...text.utf8.count, using: &random)
                var cut = Array(text.utf8)
                cut.insert(contentsOf: Array(Self.pieces.randomElement(using: &random)!.utf8), at: offset)
                text = String(decoding: cut, as: UTF8.self)
            }
            Self.expectSame(text, "corpus cut \(index)")
        }
    }

    /// The input that made CI's fuzz run time out (6,000 comments, 36 kB) and its like, compared
    /// here; with TSBACKUP_BENCH=1 it also prints how long each tokenizer takes (no assertion on
    /// time: a figure for docs, not a test).
    @Test func largeInputs() throws {
        let comments = String(repeating: "/*c*/", count: 6_000) + "SELECT 1;"
        let nested = String(repeating: "/* a /* b */ ", count: 2_000) + String(repeating: "*/", count: 2_000)
        let dollars = "$body$" + String(repeating: "$ x $bod $body ", count: 2_000) + "$body$;"
        let words = String(repeating: "CREATE INDEX ix ON public.t USING btree (a, \"B\"); ", count: 700)
        let unicode = String(repeating: "COMMENT ON TABLE t IS 'Überwachung – ☃ e\u{301}'; ", count: 700)
        let inputs = [("comments", comments), ("nested", nested), ("dollars", dollars), ("words", words), ("unicode", unicode)]
            + (try Self.corpusScripts())
        for (name, sql) in inputs { Self.expectSame(sql, name) }
        guard ProcessInfo.processInfo.environment["TSBACKUP_BENCH"] == "1" else { return }
        for (name, sql) in inputs {
            let clock = ContinuousClock()
            let rounds = 5
            let old = clock.measure { for _ in 0..<rounds { _ = SQLTextCharacterOracle.statements(sql) } } / rounds
            let new = clock.measure { for _ in 0..<rounds { _ = SQLText.statements(sql) } } / rounds
            print("SQLText.statements \(name) (\(sql.utf8.count) bytes): Character-wise \(old), bytes \(new)")
        }
    }
}

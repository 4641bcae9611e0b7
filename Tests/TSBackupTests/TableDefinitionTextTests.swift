import Foundation
import Testing
@testable import TSBackup

/// How the importer cuts a stored definition into statements: comments stand for whitespace,
/// and CRLF text reads as LF text does.
@Suite("TableDefinition and SQLText: comments separate tokens, CRLF lines are lines")
struct TableDefinitionTextTests {
    @Test("a removed comment leaves a space where it alone separated two tokens")
    func commentsSeparateTokens() {
        #expect(SQLText.statements("SELECT a/*c*/b FROM t") == ["SELECT a b FROM t"])
        #expect(SQLText.statements("SELECT 1--c\nFROM x") == ["SELECT 1\nFROM x"])
        #expect(SQLText.statements("SELECT 1--c\rFROM x;") == ["SELECT 1\rFROM x"])
        // Two comments in a row still leave one space; so does a nested one.
        #expect(SQLText.statements("a/*x*//*y*/b") == ["a b"])
        #expect(SQLText.statements("a/* /* x */ */b") == ["a b"])
        // "-" "-" and "/" "*" must not become the start of a comment that hides the rest.
        #expect(SQLText.statements("SELECT 5 -/**/- 2, 3") == ["SELECT 5 - - 2, 3"])
        #expect(SQLText.statements("SELECT 6 //**/* 2") == ["SELECT 6 / * 2"])
        // Where whitespace is already there, or the comment ends the statement, nothing is added.
        #expect(SQLText.statements("a /*c*/b; a/*c*/ b; a/*c*/\nb") == ["a b", "a b", "a\nb"])
        #expect(SQLText.statements("SELECT 1/*c*/; /*c*/SELECT 2") == ["SELECT 1", "SELECT 2"])
        #expect(SQLText.statements("CREATE TABLE t (a int) -- note\n;") == ["CREATE TABLE t (a int)"])
        // Inside strings and quoted identifiers comments are text.
        #expect(SQLText.statements("SELECT 'a/*c*/b', \"x--y\"") == ["SELECT 'a/*c*/b', \"x--y\""])
        // What the importer sends is one statement of the same tokens PostgreSQL reads.
        for sql in ["SELECT a/*c*/b FROM t", "SELECT 5 -/**/- 2, 3"] {
            let sent = SQLText.statements(sql)
            let words = { (text: String) in SQLScript.lex(text).filter { $0.kind != .whitespace && $0.kind != .comment }.map(\.text) }
            #expect(sent.count == 1 && words(sent[0]) == words(sql), "\(sql)")
        }
    }

    static func crlf(_ text: String) -> String { text.replacingOccurrences(of: "\n", with: "\r\n") }

    @Test("pg_dump output with CRLF line endings gives the objects and statements LF output gives")
    func crlfDefinition() throws {
        let lf = HypertableExportDefinitionTests.dump
        let crlf = Self.crlf(lf)
        #expect(crlf.utf8.count > lf.utf8.count)
        let fromLF = TableDefinition(pgDumpOutput: lf)
        let fromCRLF = TableDefinition(pgDumpOutput: crlf)
        #expect(fromCRLF.objects.count == 5)
        #expect(fromCRLF.objects.map(\.type) == fromLF.objects.map(\.type))
        #expect(fromCRLF.objects.map(\.name) == fromLF.objects.map(\.name))
        #expect(fromCRLF.objects.map(\.name).contains("conditions conditions_device_id_fkey"))
        // The statements keep their own line endings; otherwise they are the same.
        let asLF = { (text: String) in text.replacingOccurrences(of: "\r\n", with: "\n") }
        #expect(fromCRLF.objects.map { $0.statements.map(asLF) } == fromLF.objects.map(\.statements))
        #expect(fromCRLF.objects[0].statements[0].contains("NOT NULL,\r\n"))
        #expect(fromCRLF.objects[1].statements == ["COMMENT ON TABLE public.conditions IS 'it''s; here'"])

        // Removing the insert blocker works alike and leaves the rest byte for byte.
        let (text, removed) = TableDefinition.removing(from: crlf, where: TableDefinition.isInsertBlocker)
        #expect(removed.map(\.name) == ["conditions ts_insert_blocker"])
        #expect(text == Self.crlf(TableDefinition.removing(from: lf, where: TableDefinition.isInsertBlocker).text))
        #expect(!text.contains("ts_insert_blocker") && text.contains("conditions_device_id_fkey"))
        // The import's policy accepts the CRLF definition as it accepts the LF one.
        let stored = TableDefinition.removing(from: lf, where: TableDefinition.isInsertBlocker).text
        try DefinitionPolicy.check(stored, table: (schema: "public", name: "conditions"), file: "schema.sql", id: "X")
        try DefinitionPolicy.check(Self.crlf(stored), table: (schema: "public", name: "conditions"), file: "schema.sql", id: "X")
        // With nothing removed, the text comes back byte for byte, CRLF or LF.
        #expect(TableDefinition.removing(from: crlf, where: { _ in false }).text == crlf)
        #expect(TableDefinition.removing(from: lf, where: { _ in false }).text == lf)
    }
}

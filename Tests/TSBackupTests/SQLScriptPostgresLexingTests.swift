import Foundation
import Testing
@testable import TSBackup

/// Both SQL lexers (SQLScript: the policy for roles.sql and hypertable definitions; SQLText: the
/// importer's statement splitting) read bytes as PostgreSQL's scan.l does. They once stepped
/// through Swift Characters, and a repository writer could use every place where a grapheme
/// cluster is not what the server reads. The cases here are such places (the end-to-end ones,
/// HostileRepositoryLexingTests, were run against the Character-wise build and failed there).
@Suite("SQLScript and SQLText lex as PostgreSQL does, not by Swift Character")
struct SQLScriptPostgresLexingTests {
    static let header = "--\n-- Name: conditions; Type: TABLE; Schema: public; Owner: postgres\n--\n\n"

    static func refusal(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let error as TSBackupError { return error.message } catch { return "\(error)" }
    }

    @Test("a quote followed by a combining mark is a quote: what hid inside a string is a statement")
    func quoteWithCombiningMark() throws {
        // As Characters, "'\u{301}" was no quote, so the rest of the line looked like one string
        // constant, and SET is never run: roles.sql was accepted. PostgreSQL reads
        // SET ... = '<U+0301>'; DROP DATABASE victim; and a comment.
        let script = "SET client_min_messages = '\u{301}'; DROP DATABASE victim; --'\n"
        #expect(SQLScript.split(script).map { $0.leadingWords(2) } == [["set", "client_min_messages"], ["drop", "database"]])
        #expect(SQLText.statements(script) == ["SET client_min_messages = '\u{301}'", "DROP DATABASE victim"])
        let message = Self.refusal { _ = try RoleScript(parsing: "CREATE ROLE evil;\n" + script) }
        #expect(message?.contains("DROP DATABASE victim") == true, "\(message ?? "accepted")")
        let string = try #require(SQLScript.lex("'\u{301}'").first)
        #expect(string.kind == .string && string.value == "\u{301}")
    }

    @Test("a double quote followed by a combining mark starts an identifier: the index is on another table")
    func doubleQuoteWithCombiningMark() throws {
        // Character-wise: CREATE INDEX <symbol> ON public.conditions (a) "<identifier>" ; the
        // policy found `ON public.conditions`. PostgreSQL: CREATE INDEX "<name>" ON public.accounts (id).
        let index = "CREATE INDEX \"\u{301} ON public.conditions (a)\" ON public.accounts USING btree (id) -- \"\n;\n"
        let definition = Self.header + "CREATE TABLE public.conditions (a int);\n"
            + "--\n-- Name: conditions_x; Type: INDEX; Schema: public; Owner: postgres\n--\n\n" + index
        let message = Self.refusal { try DefinitionPolicy.check(definition, table: (schema: "public", name: "conditions"), file: "schema.sql", id: "X") }
        #expect(message?.contains("it acts on public.accounts") == true, "\(message ?? "accepted")")
        let statement = try #require(SQLScript.split(index).first)
        #expect(statement.tokens[2].kind == .quotedIdentifier && statement.tokens[2].value == "\u{301} ON public.conditions (a)")
        #expect(SQLText.statements(index) == ["CREATE INDEX \"\u{301} ON public.conditions (a)\" ON public.accounts USING btree (id)"])
    }

    @Test("U+037E GREEK QUESTION MARK is an identifier byte sequence, not a semicolon")
    func greekQuestionMark() {
        let script = "SELECT 1 AS a\u{37E}b; SELECT 2"
        #expect(SQLText.statements(script) == ["SELECT 1 AS a\u{37E}b", "SELECT 2"])
        #expect(SQLScript.split(script).map(\.text) == ["SELECT 1 AS a\u{37E}b", "SELECT 2"])
        #expect(SQLScript.lex("a\u{37E}b").map(\.kind) == [.word])
    }

    @Test("\"--\" ends at \\r: a CRLF script's next line is a statement, not more comment")
    func crlfComments() {
        let script = "CREATE TABLE t (a int);\r\n-- a note\r\nALTER TABLE t ADD b int;\r\n-- more\rSELECT 1;\n"
        // Character-wise SQLText ran the comment on to the next bare "\n" and dropped the ALTER TABLE.
        #expect(SQLText.statements(script) == ["CREATE TABLE t (a int)", "ALTER TABLE t ADD b int", "SELECT 1"])
        #expect(SQLScript.split(script).map(\.text) == ["CREATE TABLE t (a int)", "ALTER TABLE t ADD b int", "SELECT 1"])
        #expect(SQLScript.split(script).map(\.line) == [1, 3, 4])
    }

    @Test("scan.l's classes: whitespace is ASCII, bytes from 0x80 up are identifier bytes, digits are ASCII, folding is ASCII")
    func classes() {
        // U+2028 and U+0085 were newlines to Character.isNewline: a comment ended there, not at the server.
        #expect(SQLScript.split("-- x\u{2028}DROP TABLE t;\u{85}").isEmpty)
        #expect(SQLText.statements("-- x\u{2028}DROP TABLE t;\u{85}").isEmpty)
        // U+00A0 is part of a name, not space around it; the statement keeps it.
        #expect(SQLScript.lex("x\u{A0}y").map(\.kind) == [.word])
        #expect(SQLText.statements("ALTER TABLE t OWNER TO x\u{A0};") == ["ALTER TABLE t OWNER TO x\u{A0}"])
        // \f and \v are whitespace.
        #expect(SQLScript.lex("a\u{0C}\u{0B}b").map(\.kind) == [.word, .whitespace, .word])
        // Arabic-Indic digits are identifier bytes; KELVIN SIGN is not folded to "k".
        #expect(SQLScript.lex("\u{663}").map(\.kind) == [.word])
        #expect(SQLScript.lex("\u{212A}EY").first?.value == "\u{212A}ey")
        #expect(SQLText.tokenize("\u{212A}EY").first?.token == .word("\u{212A}ey", quoted: false))
        // A dollar tag compares bytes: é and e + U+0301 are different tags.
        #expect(SQLScript.split("SELECT $é$ ; $e\u{301}$ ; $é$; SELECT 2").count == 2)
        #expect(SQLText.statements("SELECT $é$ ; $e\u{301}$ ; $é$; SELECT 2").count == 2)
        // E'' starts wherever a token does, also right after a quoted identifier.
        #expect(SQLText.statements("SELECT \"q\"E'a\\'; b'; SELECT 2") == ["SELECT \"q\"E'a\\'; b'", "SELECT 2"])
        #expect(SQLScript.split("SELECT \"q\"E'a\\'; b'; SELECT 2").count == 2)
    }
}

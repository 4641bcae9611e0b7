import Foundation
import Testing
@testable import TSBackup

@Suite("SQL script splitting")
struct SQLScriptTests {
    @Test("semicolons inside quotes, dollar quotes, identifiers and comments do not end a statement")
    func quoting() {
        let script = """
            SELECT 'a;b', 'it''s;';
            SELECT E'x\\';y', "col;""x";
            CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
            DO $$ BEGIN PERFORM 1; END $$;
            -- a comment; still a comment
            SELECT 1 /* nested /* inner; */ still; */ + 2;
            SELECT $1::text, a$b;
            """
        let statements = SQLScript.split(script)
        #expect(statements.map(\.text) == [
            "SELECT 'a;b', 'it''s;'",
            "SELECT E'x\\';y', \"col;\"\"x\"",
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT 1   + 2",
            "SELECT $1::text, a$b",
        ])
        #expect(statements.map(\.line) == [1, 2, 3, 4, 6, 7])
        #expect(statements[1].tokens[1].value == "x\\';y")
        #expect(statements[1].tokens[3] == .init(kind: .quotedIdentifier, value: "col;\"x", text: "\"col;\"\"x\""))
        #expect(statements[3].leadingWords(2) == ["do"])
    }

    @Test("psql meta-commands are statements of their own, only where a statement starts")
    func metaCommands() {
        let statements = SQLScript.split("\\restrict abc\nSET a = 1;\n\\! rm -rf /\nSELECT 1")
        #expect(statements.map(\.isMetaCommand) == [true, false, true, false])
        #expect(statements[2].text == "\\! rm -rf /")
    }

    @Test("an unterminated quote runs to the end; lexing keeps every character")
    func unterminated() {
        let script = "SELECT 'open; DROP TABLE x; -- "
        #expect(SQLScript.split(script).count == 1)
        #expect(SQLScript.lex(script).map(\.text).joined() == script)
        let dollar = "SELECT $q$ ; $q; x $q$; SELECT 2"
        #expect(SQLScript.split(dollar).map(\.text) == ["SELECT $q$ ; $q; x $q$", "SELECT 2"])
        #expect(SQLScript.split(";; -- nothing\n;").isEmpty)
    }
}

@Suite("identifier and literal quoting")
struct SQLQuotingTests {
    static let hostile = ["plain", "Mixed Case", "a\"b", "x\"; DROP DATABASE prod; --", "new\nline", "semi;colon", "'single'", "back\\slash", ""]

    @Test("every identifier is quoted, inner quotes doubled, and reads back as one name", arguments: hostile)
    func identifier(_ name: String) {
        let quoted = SQLIdentifier.quote(name)
        #expect(quoted.hasPrefix("\"") && quoted.hasSuffix("\""))
        let tokens = SQLScript.lex(quoted)
        #expect(tokens.count == 1)
        #expect(tokens.first?.kind == .quotedIdentifier)
        #expect(tokens.first?.value == name)
        #expect(quoteIdentifier(name) == quoted)
        let statement = SQLScript.split("CREATE ROLE \(quoted); SELECT 1")
        #expect(statement.count == 2)
    }

    @Test("every literal is one string constant", arguments: hostile)
    func literal(_ value: String) {
        let quoted = SQLLiteral.quote(value)
        let tokens = SQLScript.lex(quoted)
        #expect(tokens.count == 1)
        #expect(tokens.first?.kind == .string)
        #expect(SQLScript.split("SELECT \(quoted); SELECT 2").count == 2)
    }

    @Test("qualified names and backslashes")
    func forms() {
        #expect(SQLIdentifier.qualified("my schema", "t\"x") == "\"my schema\".\"t\"\"x\"")
        #expect(SQLLiteral.quote("it's") == "'it''s'")
        #expect(SQLLiteral.quote("a\\b") == "E'a\\\\b'")
    }
}

@Suite("roles.sql is parsed, not run")
struct RoleScriptTests {
    static let dumpall = """
        --
        -- PostgreSQL database cluster dump
        --

        \\restrict k3y

        SET default_transaction_read_only = off;

        SET client_encoding = 'UTF8';
        SET standard_conforming_strings = on;

        --
        -- Roles
        --

        CREATE ROLE postgres;
        ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
        CREATE ROLE "Odd;""Name";
        ALTER ROLE "Odd;""Name" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00';
        COMMENT ON ROLE "Odd;""Name" IS 'the owner; of things';
        ALTER ROLE "Odd;""Name" SET search_path TO 'app', 'public';

        --
        -- Role memberships
        --

        GRANT pg_read_all_data TO "Odd;""Name" GRANTED BY postgres;

        \\unrestrict k3y

        --
        -- PostgreSQL database cluster dump complete
        --

        """

    @Test("pg_dumpall's output is accepted; only CREATE and ALTER ... WITH are kept, rebuilt and quoted")
    func accepted() throws {
        let script = try RoleScript(parsing: Self.dumpall)
        #expect(script.statements(for: "Odd;\"Name") == [
            "CREATE ROLE \"Odd;\"\"Name\"",
            "ALTER ROLE \"Odd;\"\"Name\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00'",
        ])
        #expect(script.statements(for: "postgres").count == 2)
        #expect(script.statements(for: "nobody").isEmpty)
        // tsbackup's own rebuild from pg_roles.
        let rebuilt = try RoleScript(parsing: "-- Roles\nCREATE ROLE \"app\";\nALTER ROLE \"app\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\nGRANT \"app\" TO \"web\";\n")
        #expect(rebuilt.statements(for: "app").count == 2)
    }

    @Test("anything else refuses the whole file, naming the statement", arguments: [
        ("DROP DATABASE prod;", "DROP DATABASE prod"),
        ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';", "TO PROGRAM"),
        ("CREATE ROLE evil; DROP TABLE x;", "DROP TABLE x"),
        ("CREATE ROLE evil SUPERUSER;", "CREATE ROLE evil SUPERUSER"),
        ("ALTER ROLE evil WITH LOGIN PASSWORD 'known';", "PASSWORD"),
        ("ALTER ROLE evil WITH LOGIN; SELECT pg_terminate_backend(1);", "pg_terminate_backend"),
        ("ALTER ROLE evil RENAME TO postgres;", "RENAME"),
        ("GRANT ALL ON DATABASE prod TO evil;", "GRANT ALL ON DATABASE"),
        ("DO $$ BEGIN EXECUTE 'DROP DATABASE prod'; END $$;", "DO $$"),
        ("\\! touch /tmp/x", "\\!"),
        ("COMMENT ON ROLE evil IS 'x'; DROP ROLE postgres;", "DROP ROLE"),
        ("SET role = (SELECT 'x');\nDROP SCHEMA public;", "DROP SCHEMA"),
    ])
    func refused(_ tampered: String, _ named: String) {
        do {
            _ = try RoleScript(parsing: Self.dumpall + tampered + "\n")
            Issue.record("accepted \(tampered)")
        } catch let error as TSBackupError {
            #expect(error.kind == .failed)
            #expect(error.message.contains(named), "\(error.message)")
            #expect(error.message.contains("refused the restore before running anything"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite("a stored hypertable definition holds one table's statements only")
struct DefinitionPolicyTests {
    static let table = (schema: "public", name: "conditions")

    func check(_ text: String) throws {
        try DefinitionPolicy.check(text, table: Self.table, file: "schema.sql", id: "X")
    }

    @Test("pg_dump's definition of a table, with sequences, identity, comments and grants, is accepted")
    func accepted() throws {
        try check(HypertableExportDefinitionTests.dump)
        try check("""
            SET default_tablespace = '';
            --
            -- Name: conditions; Type: TABLE; Schema: public; Owner: postgres
            --

            CREATE TABLE public.conditions (id integer NOT NULL, s integer NOT NULL, "time" timestamptz);
            ALTER TABLE public.conditions OWNER TO postgres;
            ALTER TABLE public.conditions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
                SEQUENCE NAME public.conditions_id_seq START WITH 1
            );
            --
            -- Name: conditions_s_seq; Type: SEQUENCE; Schema: public; Owner: postgres
            --
            CREATE SEQUENCE public.conditions_s_seq AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;
            ALTER TABLE public.conditions_s_seq OWNER TO postgres;
            --
            -- Name: conditions_s_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres
            --
            ALTER SEQUENCE public.conditions_s_seq OWNED BY public.conditions.s;
            --
            -- Name: conditions s; Type: DEFAULT; Schema: public; Owner: postgres
            --
            ALTER TABLE ONLY public.conditions ALTER COLUMN s SET DEFAULT nextval('public.conditions_s_seq'::regclass);
            --
            -- Name: conditions conditions_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
            --
            ALTER TABLE ONLY public.conditions ADD CONSTRAINT conditions_pkey PRIMARY KEY (id, "time");
            --
            -- Name: conditions_s_idx; Type: INDEX; Schema: public; Owner: postgres
            --
            CREATE UNIQUE INDEX conditions_s_idx ON public.conditions USING btree (s, "time");
            --
            -- Name: INDEX conditions_s_idx; Type: COMMENT; Schema: public; Owner: postgres
            --
            COMMENT ON INDEX public.conditions_s_idx IS 'fast; lookups';
            --
            -- Name: COLUMN conditions.s; Type: COMMENT; Schema: public; Owner: postgres
            --
            COMMENT ON COLUMN public.conditions.s IS 'a ''number''';
            --
            -- Name: TABLE conditions; Type: ACL; Schema: public; Owner: postgres
            --
            GRANT SELECT ON TABLE public.conditions TO reader;
            REVOKE ALL ON TABLE public.conditions FROM PUBLIC;
            """)
    }

    static let header = "--\n-- Name: conditions; Type: TABLE; Schema: public; Owner: postgres\n--\n\n"

    @Test("other statements are refused, naming them", arguments: [
        (header + "CREATE TABLE public.conditions (a int);\nCREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;", "CREATE FUNCTION public.f()"),
        (header + "CREATE TABLE public.conditions (a int);\nDO $$ BEGIN EXECUTE 'DROP DATABASE prod'; END $$;", "DO $$"),
        (header + "CREATE TABLE public.conditions (a int);\nCOPY public.conditions TO PROGRAM 'touch /tmp/x';", "COPY public.conditions TO PROGRAM"),
        (header + "CREATE TABLE public.conditions AS SELECT pg_terminate_backend(1);", "CREATE TABLE ... AS"),
        (header + "CREATE TABLE public.conditions (a int);\nALTER TABLE public.accounts OWNER TO evil;", "public.accounts"),
        (header + "CREATE TABLE public.other (a int);", "public.other"),
        (header + "CREATE TABLE public.conditions (a int);\nGRANT ALL ON TABLE public.accounts TO evil;", "GRANT ALL ON TABLE public.accounts"),
        (header + "CREATE TABLE public.conditions (a int);\nGRANT pg_write_server_files TO evil;", "pg_write_server_files"),
        (header + "CREATE TABLE public.conditions (a int);\nGRANT ALL ON TABLE public.conditions, public.accounts TO evil;", "more than one object"),
        (header + "CREATE TABLE public.conditions (a int);\nREVOKE ALL ON TABLE public.conditions, public.accounts FROM PUBLIC;", "more than one object"),
        (header + "CREATE TABLE public.conditions (a int);\n\\! touch /tmp/x", "psql meta-command"),
        ("SET search_path = public;\nSELECT pg_terminate_backend(1);\n" + header + "CREATE TABLE public.conditions (a int);", "pg_terminate_backend"),
        ("--\n-- Name: f; Type: RULE; Schema: public; Owner: postgres\n--\n\nCREATE RULE r AS ON INSERT TO public.conditions DO ALSO DELETE FROM public.accounts;", "CREATE RULE"),
        ("--\n-- Name: x; Type: INDEX; Schema: public; Owner: postgres\n--\n\nALTER TABLE public.conditions OWNER TO evil;", "not a statement of a INDEX"),
        (header + "CREATE TABLE public.conditions (a int);\nCREATE TRIGGER t BEFORE INSERT ON public.accounts FOR EACH ROW EXECUTE FUNCTION f();", "public.accounts"),
    ])
    func refused(_ text: String, _ named: String) {
        do {
            try check(text)
            Issue.record("accepted \(text)")
        } catch let error as TSBackupError {
            #expect(error.kind == .failed)
            #expect(error.message.contains(named), "\(error.message)")
            #expect(error.message.contains("refused the import before running anything"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite("manifest file names stay inside their entry")
struct EntryPathTests {
    @Test("plain relative names pass", arguments: ["roles.sql", "dump/toc.dat", "data/0001.copy.zst", "schema.sql"])
    func accepted(_ path: String) throws {
        #expect(try EntryPath.validate(path) == path)
    }

    @Test("names leaving the entry are refused", arguments: ["../../etc/hostname", "/etc/passwd", "dump/../../x", "a//b", "./x", "", "a\\..\\b", "x\ny", "dump/.."])
    func refused(_ path: String) {
        #expect(throws: TSBackupError.self) { try EntryPath.validate(path) }
    }

    @Test("a symbolic link inside the entry is refused; a missing file is left to the caller")
    func symlinks() throws {
        let directory = NSTemporaryDirectory() + "entrypath-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/dump", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "x".write(toFile: directory + "/dump/toc.dat", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory + "/roles.sql", withDestinationPath: "/etc/hostname")
        try FileManager.default.createSymbolicLink(atPath: directory + "/linked", withDestinationPath: "/etc")
        #expect(try EntryPath.resolve("dump/toc.dat", in: directory) == directory + "/dump/toc.dat")
        #expect(try EntryPath.resolve("missing.sql", in: directory) == directory + "/missing.sql")
        #expect(throws: TSBackupError.self) { try EntryPath.resolve("roles.sql", in: directory) }
        #expect(throws: TSBackupError.self) { try EntryPath.resolve("linked/hostname", in: directory) }
    }
}

@Suite("child processes print their messages in English")
struct ChildEnvironmentTests {
    @Test("LC_MESSAGES=C; LC_ALL and LANGUAGE, which would override it, are removed; callers may still set them")
    func locale() {
        let german = ["LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8", "LANGUAGE": "de", "PATH": "/usr/bin"]
        let child = ChildEnvironment.resolved(inheriting: german, ["PGPASSWORD": "s", "PGOPTIONS": nil])
        #expect(child["LC_MESSAGES"] == "C")
        #expect(child["LC_ALL"] == nil)
        #expect(child["LANGUAGE"] == nil)
        #expect(child["LANG"] == "de_DE.UTF-8")
        #expect(child["PGPASSWORD"] == "s")
        #expect(child["PATH"] == "/usr/bin")
        let explicit = ChildEnvironment.resolved(inheriting: [:], ["LC_ALL": "de_DE.UTF-8"])
        #expect(explicit["LC_ALL"] == "de_DE.UTF-8")
    }
}

import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Issue 14, item 5: tsbackup's SQL lexers once stepped through Swift Characters while the server
/// reads bytes, so a repository writer could make the policy see one thing and the server run
/// another. Each test here failed with the Character-wise lexers (run against the tsbackup built
/// from the commit before, via TSBACKUP_TEST_BINARY: see the branch's report).
@Suite("hostile repositories: the SQL lexers read definitions and roles.sql as PostgreSQL does")
struct HostileRepositoryLexingTests {
    /// A definition with its own INDEX object appended, as pg_dump would write one.
    static func appendingIndexObject(_ definition: String, _ statement: String) -> String {
        definition + "\n--\n-- Name: events_hostile_idx; Type: INDEX; Schema: public; Owner: postgres\n--\n\n" + statement + "\n"
    }

    @Test("a `\"` followed by a combining mark hides the table an index is on: the import is refused, nothing is created")
    func combiningMarkIndex() async throws {
        let exported = try await ExportedEvents("hostlex")
        defer { exported.scratch.remove() }
        let (cluster, repository, entry) = (exported.cluster, exported.repository, exported.entry)
        let export = exported.export
        let original = try exported.definition()
        // Read by Characters: CREATE INDEX <symbol> ON public.events (...) "<identifier>" ; an index on
        // the exported table. Read by PostgreSQL: CREATE INDEX "<name>" ON public.devices (id).
        let payload = "CREATE INDEX \"\u{301} ON public.events USING btree (id)\" ON public.devices USING btree (id) -- \"\n;"
        try tamper(entry: entry, file: export.definitionFile, with: Self.appendingIndexObject(original, payload))

        let target = uniqueDatabaseName("hostlex_dst")
        try await cluster.createDatabase(target)
        try await cluster.withSuperuser(database: target) { try await $0.execute("CREATE TABLE public.devices (id int)") }
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 1, "\(imported.standardOutput) \(imported.standardError)")
        #expect(imported.standardError.contains("it acts on public.devices"), "\(imported.standardError)")
        #expect(imported.standardError.contains(export.definitionFile))
        let (events, devicesIndexes) = try await cluster.withSuperuser(database: target) {
            try await $0.row("""
                SELECT to_regclass('public.events') IS NOT NULL,
                       (SELECT count(*) FROM pg_index WHERE indrelid = 'public.devices'::regclass)
                """, as: (Bool, Int64).self)
        }
        #expect(!events)
        #expect(devicesIndexes == 0)
    }

    @Test("a `--` comment ends at \\r: in a CRLF definition the next line is run, as the server would")
    func crlfComment() async throws {
        let exported = try await ExportedEvents("hostcrlf")
        defer { exported.scratch.remove() }
        let (cluster, repository) = (exported.cluster, exported.repository)
        let export = exported.export
        // Character-wise, "\r\n" is not "\n", so the importer took the comment to run on over the
        // ALTER TABLE to the next bare "\n" and silently left the constraint out; the policy's
        // lexer (and PostgreSQL) saw the ALTER TABLE.
        try exported.tamperDefinition(insertingAfterCreateTable: "-- a note\r\nALTER TABLE public.events ADD CONSTRAINT events_crlf_check CHECK (true);\r\n")

        let target = uniqueDatabaseName("hostcrlf_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        let constraints = try await cluster.withSuperuser(database: target) {
            try await $0.value("SELECT count(*) FROM pg_constraint WHERE conname = 'events_crlf_check' AND conrelid = 'public.events'::regclass", as: Int64.self)
        }
        #expect(constraints == 1)
    }

    @Test("a definition stored with CRLF line endings throughout imports as the LF one does")
    func crlfDefinition() async throws {
        let exported = try await ExportedEvents("hostcrlfall")
        defer { exported.scratch.remove() }
        let (cluster, repository, export) = (exported.cluster, exported.repository, exported.export)
        let original = try exported.definition()
        #expect(!original.contains("\r"))
        // TableDefinition split the text on the Character "\n", which CRLF text does not
        // contain: it found no object, and the import created nothing.
        try tamper(entry: exported.entry, file: export.definitionFile, with: original.replacingOccurrences(of: "\n", with: "\r\n"))

        let target = uniqueDatabaseName("hostcrlfall_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        // Counted through the hypertable's root, and its indexes, against the source's.
        let query = """
            SELECT (SELECT count(*) FROM public.events),
                   (SELECT count(*) FROM pg_index WHERE indrelid = 'public.events'::regclass),
                   (SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public' AND hypertable_name = 'events')
            """
        let source = try await cluster.withSuperuser(database: exported.database) { try await $0.row("\(unescaped: query)", as: (Int64, Int64, Int64).self) }
        let copy = try await cluster.withSuperuser(database: target) { try await $0.row("\(unescaped: query)", as: (Int64, Int64, Int64).self) }
        #expect(source.0 > 0 && source.1 > 0 && source.2 == 1)
        #expect(copy == source)
    }

    @Test("the server splits scripts where SQLScript does: quote with combining mark, U+037E, CRLF comments")
    func serverAgrees() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let scratch = try ScratchDirectory("hostsplit")
        defer { scratch.remove() }
        let psql = try await PostgresTools.locate("psql", minimumMajor: 15).path
        let env: [String: String?] = ["PGPASSWORD": cluster.superuserPassword, "PGHOST": "127.0.0.1", "PGPORT": String(cluster.port),
                                      "PGUSER": SandboxCluster.superuser, "PGDATABASE": "postgres", "PGOPTIONS": nil]
        let scripts = [
            "SELECT '\u{301}' AS a;\nSELECT 'two';\n",
            "SELECT 'three' AS a\u{37E}b;\nSELECT 'four';\n",
            "SELECT 'five';\r\n-- a note\r\nSELECT 'six';\r\n",
            "SELECT 'seven' AS \"\u{301}\";\nSELECT 'eight' -- x\u{2028}; SELECT 'not run'\n;\n",
        ]
        for (index, script) in scripts.enumerated() {
            let file = scratch.path + "/script\(index).sql"
            try script.write(toFile: file, atomically: false, encoding: .utf8)
            // What PostgreSQL (through psql, whose lexer follows the server's) runs: one line per statement.
            let run = try await ProcessRunner.run(psql, ["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", file], environment: env)
            #expect(run.exitCode == 0, "script \(index): \(run.standardError)")
            let server = run.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
            // What tsbackup's lexer splits, each statement sent alone (the extended protocol refuses two).
            let ours = try await cluster.withSuperuser { session in
                var values: [String] = []
                for statement in SQLScript.split(script) {
                    values.append(try await session.value(PostgresQuery(unsafeSQL: statement.text), as: String.self))
                }
                return values
            }
            #expect(ours == server, "script \(index): \(script.debugDescription)")
            #expect(server.count == 2, "script \(index): \(server)")
        }
    }
}

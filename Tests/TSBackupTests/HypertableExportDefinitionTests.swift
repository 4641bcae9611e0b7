import Testing
@testable import TSBackup

@Suite("HypertableExport definition handling")
struct HypertableExportDefinitionTests {
    static let dump = """
        --
        -- PostgreSQL database dump
        --

        \\restrict abc

        SET statement_timeout = 0;
        SELECT pg_catalog.set_config('search_path', '', false);

        --
        -- Name: conditions; Type: TABLE; Schema: public; Owner: postgres
        --

        CREATE TABLE public.conditions (
            "time" timestamp with time zone NOT NULL,
            device_id integer NOT NULL,
            note text DEFAULT 'a;b'::text,
            id bigint DEFAULT nextval('public.conditions_id_seq'::regclass),
            CONSTRAINT conditions_check CHECK ((device_id > 0))
        );


        ALTER TABLE public.conditions OWNER TO postgres;

        --
        -- Name: TABLE conditions; Type: COMMENT; Schema: public; Owner: postgres
        --

        COMMENT ON TABLE public.conditions IS 'it''s; here';


        --
        -- Name: conditions_time_idx; Type: INDEX; Schema: public; Owner: postgres
        --

        CREATE INDEX conditions_time_idx ON public.conditions USING btree ("time" DESC);


        --
        -- Name: conditions ts_insert_blocker; Type: TRIGGER; Schema: public; Owner: postgres
        --

        CREATE TRIGGER ts_insert_blocker BEFORE INSERT ON public.conditions FOR EACH ROW EXECUTE FUNCTION _timescaledb_functions.insert_blocker();


        --
        -- Name: conditions conditions_device_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
        --

        ALTER TABLE ONLY public.conditions
            ADD CONSTRAINT conditions_device_id_fkey FOREIGN KEY (device_id) REFERENCES public.devices(id);


        --
        -- PostgreSQL database dump complete
        --

        \\unrestrict abc

        """

    @Test("pg_dump output splits into objects and statements; the insert blocker is removed")
    func parse() {
        let (text, removed) = TableDefinition.removing(from: Self.dump, where: TableDefinition.isInsertBlocker)
        #expect(removed.map(\.name) == ["conditions ts_insert_blocker"])
        #expect(!text.contains("ts_insert_blocker"))
        #expect(text.contains("conditions_device_id_fkey"))
        #expect(text.contains("PostgreSQL database dump complete"))
        let definition = TableDefinition(pgDumpOutput: text)
        #expect(definition.objects.map(\.type) == ["TABLE", "COMMENT", "INDEX", "FK CONSTRAINT"])
        #expect(definition.objects[0].statements.count == 2)
        #expect(definition.objects[0].statements[0].contains("DEFAULT 'a;b'::text"))
        #expect(definition.objects[1].statements == ["COMMENT ON TABLE public.conditions IS 'it''s; here'"])
        #expect(SQLText.qualifiedNames(after: "references", in: definition.objects[3].statements[0]).map { "\($0.schema).\($0.name)" } == ["public.devices"])
        #expect(HypertableImport.isOwnerChange(definition.objects[0].statements[1]))
        #expect(HypertableImport.onHypertable(definition.objects[3].statements[0]).hasPrefix("ALTER TABLE public.conditions\n"))
    }

    @Test("renaming touches the table and its indexes, constraints and sequences, never values or columns")
    func rename() {
        let definition = TableDefinition(pgDumpOutput: Self.dump)
        let renamer = DefinitionRenamer(definition: definition, from: ("public", "conditions"), to: ("Archive", "old conditions"))
        let all = definition.objects.flatMap(\.statements).map(renamer.rewrite).joined(separator: ";\n")
        #expect(all.contains(#"CREATE TABLE "Archive"."old conditions" ("#))
        #expect(all.contains(#"CONSTRAINT "old conditions_check" CHECK"#))
        #expect(all.contains(#"CREATE INDEX "old conditions_time_idx" ON "Archive"."old conditions" USING btree ("time" DESC)"#))
        #expect(all.contains(#"ADD CONSTRAINT "old conditions_device_id_fkey" FOREIGN KEY (device_id) REFERENCES public.devices(id)"#))
        #expect(all.contains("IS 'it''s; here'"))
        #expect(all.contains("DEFAULT 'a;b'::text"))
        let identity = TableDefinition(pgDumpOutput: """
            --
            -- Name: idt; Type: TABLE; Schema: public; Owner: postgres
            --

            ALTER TABLE public.idt ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
                SEQUENCE NAME public.idt_id_seq
                START WITH 1
            );
            ALTER TABLE ONLY public.idt ALTER COLUMN s SET DEFAULT nextval('public.idt_s_seq'::regclass);
            ALTER SEQUENCE public.idt_s_seq OWNED BY public.idt.s;
            """)
        let identityRenamer = DefinitionRenamer(definition: identity, from: ("public", "idt"), to: ("public", "idt2"))
        let renamed = identity.objects.flatMap(\.statements).map(identityRenamer.rewrite)
        #expect(renamed[0].contains("SEQUENCE NAME public.idt2_id_seq"))
        #expect(renamed[1].contains("nextval('public.idt2_s_seq'::regclass)"))
        #expect(renamed[2] == "ALTER SEQUENCE public.idt2_s_seq OWNED BY public.idt2.s")
        #expect(DefinitionRenamer.renamed(String(repeating: "x", count: 70), from: "conditions", to: "c").utf8.count == 63)
    }

    @Test("table names from the command line follow SQL's folding and quoting")
    func names() throws {
        #expect(try QualifiedName.parse("IoT.Readings", option: "--table") == ("iot", "readings"))
        #expect(try QualifiedName.parse(#""My Schema"."A.b""#, option: "--table") == ("My Schema", "A.b"))
        #expect(try QualifiedName.parse("events", option: "--table") == ("public", "events"))
        #expect(throws: TSBackupError.self) { try QualifiedName.parse("a.b.c", option: "--table") }
    }
}

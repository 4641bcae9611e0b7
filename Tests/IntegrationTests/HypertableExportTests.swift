import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Runs `export-hypertable` as the superuser unless told otherwise; returns the result and, when
/// it succeeded, the entry's manifest.
func exportHypertable(_ cluster: SandboxCluster, _ database: String, table: String, repository: String,
                      _ extra: [String] = [], user: String = SandboxCluster.superuser, password: String? = nil) async throws -> (ProcessResult, HypertableManifest?) {
    let result = try await CLI.run(
        ["export-hypertable", "--db", cluster.url(database: database, user: user), "--table", table, "--repo", repository, "--json"] + extra,
        environment: ["PGPASSWORD": password ?? cluster.superuserPassword])
    guard result.exitCode == 0,
          let summary = try? JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)) else { return (result, nil) }
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(repository)/backups/\(summary.id)/manifest.json"))
    return (result, try JSONOutput.decode(HypertableManifest.self, from: data))
}

func importHypertable(_ cluster: SandboxCluster, _ id: String, into database: String, repository: String, _ extra: [String] = [],
                      user: String = SandboxCluster.superuser, password: String? = nil) async throws -> (ProcessResult, HypertableImport.Report?) {
    let result = try await CLI.run(
        ["import-hypertable", id, "--repo", repository, "--target", cluster.url(database: database, user: user), "--json"] + extra,
        environment: ["PGPASSWORD": password ?? cluster.superuserPassword])
    return (result, try? JSONOutput.decode(HypertableImport.Report.self, from: Data(result.standardOutput.utf8)))
}

/// The rows of a table in one stable text: md5 over the sorted text of every row.
func orderedRowsDigest(_ cluster: SandboxCluster, _ database: String, _ table: String, where condition: String = "true") async throws -> (Int64, String) {
    try await cluster.withSuperuser(database: database) { session in
        try await session.execute("SET TimeZone = 'UTC'")
        return try await session.row(PostgresQuery(unsafeSQL: """
            SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM \(table) t WHERE \(condition)
            """), as: (Int64, String).self)
    }
}

func dimensions(_ cluster: SandboxCluster, _ database: String, schema: String, name: String) async throws -> [String] {
    try await cluster.withSuperuser(database: database) { session in
        try await session.values(
            """
            SELECT concat_ws(' ', column_name, column_type::text, dimension_type, time_interval::text, integer_interval::text, num_partitions::text)
            FROM timescaledb_information.dimensions WHERE hypertable_schema = \(schema) AND hypertable_name = \(name) ORDER BY dimension_number
            """, as: String.self)
    }
}

@Suite("HypertableExport: single hypertables out and back in")
struct HypertableExportTests {
    @Test("each sample hypertable comes back with identical rows and dimensions", arguments: [
        ("public", "conditions"), ("public", "events"), ("iot", "readings"),
    ])
    func roundTrip(schema: String, name: String) async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_src")
        let scratch = try ScratchDirectory("hx-roundtrip")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        // A file per chunk here, so the import loads several files in parallel.
        let (exported, manifest) = try await exportHypertable(cluster, source, table: "\(schema).\(name)", repository: repository, ["--chunks-per-file", "1"])
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        #expect(export.kind == "hypertable")
        #expect(export.dataFiles.allSatisfy { $0.chunks.count == 1 })
        #expect(export.definitionRemoved == ["TRIGGER \(name) ts_insert_blocker"])
        #expect(!(try String(contentsOfFile: "\(repository)/backups/\(export.id)/schema.sql", encoding: .utf8)).contains("ts_insert_blocker"))
        let chunkCount = try await cluster.withSuperuser(database: source) {
            try await $0.value("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = \(schema) AND hypertable_name = \(name)", as: Int64.self)
        }
        #expect(export.chunkCount == Int(chunkCount))
        #expect(Set(export.dataFiles.flatMap(\.chunks)).count == Int(chunkCount))
        let sourceRows = try await orderedRowsDigest(cluster, source, "\(quoteIdentifier(schema)).\(quoteIdentifier(name))")
        #expect(export.rowCount == sourceRows.0)
        #expect(export.dataFiles.reduce(0) { $0 + $1.rows } == sourceRows.0)

        let target = uniqueDatabaseName("hx_dst")
        try await cluster.createDatabase(target)
        let (imported, report) = try await importHypertable(cluster, export.id, into: target, repository: repository, ["--jobs", "3"])
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(report?.verified == true)
        #expect(report?.rows == sourceRows.0)
        let targetRows = try await orderedRowsDigest(cluster, target, "\(quoteIdentifier(schema)).\(quoteIdentifier(name))")
        #expect(targetRows == sourceRows)
        let sourceDimensions = try await dimensions(cluster, source, schema: schema, name: name)
        #expect(try await dimensions(cluster, target, schema: schema, name: name) == sourceDimensions)
        #expect(sourceDimensions.count == (name == "readings" ? 2 : 1))

        if name == "conditions" {
            // devices is not in the target: the foreign key is skipped, loudly.
            #expect(report?.skipped.contains { $0.contains("conditions_device_id_fkey") && $0.contains("public.devices") } == true)
            let indexes = try await cluster.withSuperuser(database: target) {
                try await $0.values("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'conditions' ORDER BY 1", as: String.self)
            }
            #expect(indexes == ["conditions_device_time_idx", "conditions_time_idx"])
            let comment = try await cluster.withSuperuser(database: target) {
                try await $0.value("SELECT obj_description('public.conditions'::regclass)", as: String?.self)
            }
            #expect(comment == "Readings from every device")
        }
        // The new hypertable takes inserts (no stale insert blocker, dimensions in place).
        try await cluster.withSuperuser(database: target) { session in
            let insert = switch name {
            case "conditions": "INSERT INTO public.conditions (time, device_id, temperature) VALUES ('2027-01-01', 1, 1)"
            case "events": "INSERT INTO public.events VALUES (999999, 1, 'boot', NULL)"
            default: "INSERT INTO iot.readings VALUES ('2027-01-01', 1, 1)"
            }
            try await session.execute(insert)
        }

        let verify = try await CLI.run(["verify", export.id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput)")
        let list = try await CLI.run(["list", "--repo", repository])
        #expect(list.standardOutput.contains(export.id) && list.standardOutput.contains("hypertable \(schema).\(name)"))
        let show = try await CLI.run(["show", export.id, "--repo", repository])
        #expect(show.exitCode == 0 && show.standardOutput.contains(export.contentHash))
    }

    @Test("a time window exports exactly the rows in it, for time and integer dimensions")
    func window() async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_win")
        let scratch = try ScratchDirectory("hx-window")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        let (exported, manifest) = try await exportHypertable(cluster, source, table: "public.conditions", repository: repository,
                                                              ["--since", "2026-01-05", "--until", "2026-01-07 12:00:00+00"])
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        let condition = "time >= '2026-01-05 00:00:00+00' AND time < '2026-01-07 12:00:00+00'"
        let expected = try await orderedRowsDigest(cluster, source, "public.conditions", where: condition)
        #expect(expected.0 == 4 * 60)
        #expect(export.rowCount == expected.0)
        #expect(export.window?.column == "time" && export.window?.since == "2026-01-05" && export.window?.until == "2026-01-07 12:00:00+00")
        #expect(export.chunkCount == 3, "only the chunks overlapping the window")

        let target = uniqueDatabaseName("hx_win_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(try await orderedRowsDigest(cluster, target, "public.conditions") == expected)

        let (integer, integerManifest) = try await exportHypertable(cluster, source, table: "public.events", repository: repository,
                                                                    ["--since", "150", "--until", "420"])
        #expect(integer.exitCode == 0, "\(integer.standardError)")
        #expect(integerManifest?.rowCount == 270)
        #expect(integerManifest?.chunkCount == 4)
        let digest = try await orderedRowsDigest(cluster, source, "public.events", where: "seq >= 150 AND seq < 420")
        let (importedEvents, _) = try await importHypertable(cluster, try #require(integerManifest).id, into: target, repository: repository)
        #expect(importedEvents.exitCode == 0, "\(importedEvents.standardError)")
        #expect(try await orderedRowsDigest(cluster, target, "public.events") == digest)

        let (bad, _) = try await exportHypertable(cluster, source, table: "public.events", repository: repository, ["--since", "yesterday-ish"])
        #expect(bad.exitCode == 64)
        #expect(bad.standardError.contains("--since"))
        let (reversed, _) = try await exportHypertable(cluster, source, table: "public.conditions", repository: repository,
                                                       ["--since", "2026-01-07", "--until", "2026-01-05"])
        #expect(reversed.exitCode == 64)
    }

    @Test("import under another name beside the original keeps both intact")
    func importBesideOriginal() async throws {
        let (cluster, database) = try await makeSampleDatabase("hx_as")
        let scratch = try ScratchDirectory("hx-as")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let original = try await orderedRowsDigest(cluster, database, "public.conditions")

        let (_, manifest) = try await exportHypertable(cluster, database, table: "public.conditions", repository: repository)
        let export = try #require(manifest)
        let (imported, report) = try await importHypertable(cluster, export.id, into: database, repository: repository, ["--as", "public.conditions_copy"])
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(report?.skipped.isEmpty == true, "devices exists here, so the foreign key is created")
        #expect(try await orderedRowsDigest(cluster, database, "public.conditions_copy") == original)
        #expect(try await orderedRowsDigest(cluster, database, "public.conditions") == original)
        let (indexes, foreignKeys) = try await cluster.withSuperuser(database: database) { session in
            (try await session.values("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'conditions_copy' ORDER BY 1", as: String.self),
             try await session.values("SELECT conname::text FROM pg_constraint WHERE conrelid = 'public.conditions_copy'::regclass AND contype = 'f'", as: String.self))
        }
        #expect(indexes == ["conditions_copy_device_time_idx", "conditions_copy_time_idx"])
        #expect(foreignKeys == ["conditions_copy_device_id_fkey"])

        // A space-partitioned table with a UNIQUE constraint, into another schema.
        let (_, readings) = try await exportHypertable(cluster, database, table: "iot.readings", repository: repository)
        let (again, _) = try await importHypertable(cluster, try #require(readings).id, into: database, repository: repository, ["--as", "archive.readings_2026"])
        #expect(again.exitCode == 0, "\(again.standardError)")
        #expect(try await orderedRowsDigest(cluster, database, "archive.readings_2026") == orderedRowsDigest(cluster, database, "iot.readings"))
        #expect(try await dimensions(cluster, database, schema: "archive", name: "readings_2026").count == 2)
        let unique = try await cluster.withSuperuser(database: database) {
            try await $0.values("SELECT conname::text FROM pg_constraint WHERE conrelid = 'archive.readings_2026'::regclass AND contype = 'u'", as: String.self)
        }
        #expect(unique == ["readings_2026_sensor_id_time_key"])

        // Rows the target's foreign key rejects: the import is undone, not left half-made.
        let strict = uniqueDatabaseName("hx_fk")
        try await cluster.createDatabase(strict)
        try await cluster.withSuperuser(database: strict) { session in
            try await session.execute("CREATE TABLE public.devices (id integer PRIMARY KEY)")
            try await session.execute("INSERT INTO public.devices VALUES (1)")
        }
        let (rejected, _) = try await importHypertable(cluster, export.id, into: strict, repository: repository)
        #expect(rejected.exitCode == 1)
        #expect(rejected.standardError.contains("conditions_device_id_fkey") && rejected.standardError.contains("undone"))
        let left = try await cluster.withSuperuser(database: strict) {
            try await $0.value("SELECT to_regclass('public.conditions') IS NOT NULL", as: Bool.self)
        }
        #expect(!left)
    }

    @Test("identity, serial and generated columns come back; sequences continue after the imported rows")
    func sequencesAndGeneratedColumns() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let database = uniqueDatabaseName("hx_seq")
        try await cluster.createDatabase(database)
        try await cluster.withSuperuser(database: database) { session in
            for statement in [
                "CREATE TABLE public.ticks (id bigint GENERATED ALWAYS AS IDENTITY, n serial, time timestamptz NOT NULL, price numeric(10,2), doubled numeric GENERATED ALWAYS AS (price * 2) STORED, PRIMARY KEY (id, time))",
                "SELECT create_hypertable('public.ticks', 'time', chunk_time_interval => interval '1 day')",
                "INSERT INTO public.ticks (time, price) SELECT timestamptz '2026-01-01' + g * interval '1 hour', g / 7.0 FROM generate_series(1, 200) g",
            ] { try await session.execute(statement) }
        }
        let scratch = try ScratchDirectory("hx-seq")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let (exported, manifest) = try await exportHypertable(cluster, database, table: "public.ticks", repository: repository)
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        #expect(export.columns.filter(\.generated).map(\.name) == ["doubled"])
        let (imported, _) = try await importHypertable(cluster, export.id, into: database, repository: repository, ["--as", "public.ticks_copy"])
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(try await orderedRowsDigest(cluster, database, "public.ticks_copy") == orderedRowsDigest(cluster, database, "public.ticks"))
        let (id, n) = try await cluster.withSuperuser(database: database) {
            try await $0.row("INSERT INTO public.ticks_copy (time, price) VALUES ('2026-02-01', 1) RETURNING id, n", as: (Int64, Int32).self)
        }
        #expect(id == 201 && n == 201)
    }

    @Test("a reader exports and a non-superuser database owner imports")
    func nonSuperusers() async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_roles")
        let scratch = try ScratchDirectory("hx-roles")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let suffix = UUID().uuidString.prefix(6).lowercased()
        let reader = "hx_reader_\(suffix)", owner = "hx_owner_\(suffix)"
        try await cluster.createRole(reader, password: "reader-pw")
        try await cluster.createRole(owner, password: "owner-pw")
        try await cluster.withSuperuser(database: source) { session in
            try await session.execute("GRANT USAGE ON SCHEMA iot TO \(reader)")
            try await session.execute("GRANT SELECT ON iot.readings TO \(reader)")
        }
        let (exported, manifest) = try await exportHypertable(cluster, source, table: "iot.readings", repository: repository,
                                                              user: reader, password: "reader-pw")
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)

        let target = uniqueDatabaseName("hx_owned")
        try await cluster.createDatabase(target, owner: owner, timescaleDB: false)
        try await DatabaseSession.with(cluster.settings(database: target, user: owner, password: "owner-pw")) { session in
            try await session.execute("CREATE EXTENSION timescaledb")
        }
        let (imported, report) = try await importHypertable(cluster, export.id, into: target, repository: repository,
                                                            user: owner, password: "owner-pw")
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(report?.verified == true)
        #expect(try await orderedRowsDigest(cluster, target, "iot.readings") == orderedRowsDigest(cluster, source, "iot.readings"))
        let tableOwner = try await cluster.withSuperuser(database: target) {
            try await $0.value("SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'iot.readings'::regclass", as: String.self)
        }
        #expect(tableOwner == owner)

        // Without SELECT the export is refused before anything is written.
        let (refused, _) = try await exportHypertable(cluster, source, table: "public.conditions", repository: repository,
                                                      user: reader, password: "reader-pw")
        #expect(refused.exitCode == 3, "\(refused.standardError)")
    }

    @Test("an export taken while rows are inserted is consistent with its snapshot")
    func consistentUnderWrites() async throws {
        let (cluster, database) = try await makeSampleDatabase("hx_busy")
        let scratch = try ScratchDirectory("hx-busy")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"

        // Writes are under way before the export starts and go on after it ended (states, not times).
        let writer = ConditionsWriter(cluster, database, from: "2026-01-01", step: "mins")
        try await writer.waitForBatches(2)
        let (exported, manifest) = try await exportHypertable(cluster, database, table: "public.conditions", repository: repository, ["--jobs", "3", "--chunks-per-file", "4"])
        try await writer.waitForBatches(writer.committed + 2)
        let batches = try await writer.stop()
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        #expect(batches > 1)
        let now = try await orderedRowsDigest(cluster, database, "public.conditions")
        #expect(now.0 > export.rowCount, "the writer kept writing after the snapshot")
        #expect(export.rowCount > Int64(SampleData(.small).expected.conditionsRows))

        // The files hold exactly the rows the snapshot counted and hashed.
        let target = uniqueDatabaseName("hx_busy_dst")
        try await cluster.createDatabase(target)
        let (imported, report) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(report?.rows == export.rowCount)
        #expect(report?.contentHash == export.contentHash)
    }

    @Test("a corrupt data file is named by verify and refused by import")
    func corruption() async throws {
        let (cluster, database) = try await makeSampleDatabase("hx_bad")
        let scratch = try ScratchDirectory("hx-bad")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let (_, manifest) = try await exportHypertable(cluster, database, table: "public.events", repository: repository, ["--chunks-per-file", "3"])
        let export = try #require(manifest)
        #expect(export.dataFiles.count == 4)
        let victim = try #require(export.dataFiles.dropFirst(2).first)
        let path = "\(repository)/backups/\(export.id)/\(victim.path)"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))

        let verify = try await CLI.run(["verify", export.id, "--repo", repository])
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains(victim.path))

        let target = uniqueDatabaseName("hx_bad_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 1)
        #expect(imported.standardError.contains(victim.path))
        let left = try await cluster.withSuperuser(database: target) {
            try await $0.value("SELECT to_regclass('public.events') IS NOT NULL", as: Bool.self)
        }
        #expect(!left, "a failed import drops the table it created")

        let delete = try await CLI.run(["delete", export.id, "--repo", repository, "--yes"])
        #expect(delete.exitCode == 0, "\(delete.standardError)")
        #expect(!FileManager.default.fileExists(atPath: "\(repository)/backups/\(export.id)"))
    }

    @Test("refusals: table exists, extension missing, not a hypertable; missing trigger functions are skipped")
    func refusals() async throws {
        let (cluster, database) = try await makeSampleDatabase("hx_no")
        let scratch = try ScratchDirectory("hx-no")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        try await cluster.withSuperuser(database: database) { session in
            try await session.execute("CREATE FUNCTION public.stamp_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
            try await session.execute("CREATE TRIGGER stamp BEFORE INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION public.stamp_event()")
        }

        let (notHypertable, _) = try await exportHypertable(cluster, database, table: "public.devices", repository: repository)
        #expect(notHypertable.exitCode == 64)
        #expect(notHypertable.standardError.contains("not a hypertable"))
        let (missing, _) = try await exportHypertable(cluster, database, table: "public.nothing", repository: repository)
        #expect(missing.exitCode == 4)

        let (_, manifest) = try await exportHypertable(cluster, database, table: "public.events", repository: repository)
        let export = try #require(manifest)

        let (exists, _) = try await importHypertable(cluster, export.id, into: database, repository: repository)
        #expect(exists.exitCode == 5)
        #expect(exists.standardError.contains("already exists"))
        #expect(try await orderedRowsDigest(cluster, database, "public.events").0 == Int64(SampleData(.small).expected.eventsRows))

        let plain = uniqueDatabaseName("hx_plain")
        try await cluster.createDatabase(plain, timescaleDB: false)
        let (noExtension, _) = try await importHypertable(cluster, export.id, into: plain, repository: repository)
        #expect(noExtension.exitCode == 5)
        #expect(noExtension.standardError.contains("CREATE EXTENSION timescaledb"))

        let target = uniqueDatabaseName("hx_no_fn")
        try await cluster.createDatabase(target)
        let (imported, report) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        #expect(report?.skipped.contains { $0.contains("stamp") && $0.contains("public.stamp_event") } == true)
        #expect(report?.warnings.contains { $0.contains("public.stamp_event") } == true)

        // A type the target lacks: refused before anything is created.
        try await cluster.withSuperuser(database: database) { session in
            try await session.execute("CREATE TYPE public.level AS ENUM ('low', 'high')")
            try await session.execute("ALTER TABLE public.events ADD COLUMN severity public.level")
        }
        let (_, withType) = try await exportHypertable(cluster, database, table: "public.events", repository: repository)
        let (noType, _) = try await importHypertable(cluster, try #require(withType).id, into: target, repository: repository, ["--as", "public.events_typed"])
        #expect(noType.exitCode == 5)
        #expect(noType.standardError.contains("public.level"))
        let made = try await cluster.withSuperuser(database: target) {
            try await $0.value("SELECT to_regclass('public.events_typed') IS NOT NULL", as: Bool.self)
        }
        #expect(!made)
    }
}

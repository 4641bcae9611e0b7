import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

@Suite("inspect against a real PostgreSQL 15 + TimescaleDB cluster")
struct InspectTests {
    @Test("the extension in the cluster is the one scripts/setup.sh installed")
    func extensionVersionIsTheInstalledOne() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let name = uniqueDatabaseName("ext")
        try await cluster.createDatabase(name)
        let version = try await cluster.withSuperuser(database: name) {
            try await $0.value("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", as: String.self)
        }
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        #expect(version == installed)
        let preload = try await cluster.withSuperuser {
            try await $0.value("SELECT current_setting('shared_preload_libraries')", as: String.self)
        }
        #expect(preload.contains("timescaledb"))
    }

    @Test("inspect --json reports the chunk counts, dimensions and sizes SQL returns")
    func jsonMatchesDirectSQL() async throws {
        let (cluster, database) = try await makeSampleDatabase("inspect")
        let result = try await CLI.run(["inspect", "--db", cluster.url(database: database), "--json"],
                                       environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(result.exitCode == 0, "\(result.standardError)")
        let report = try JSONOutput.decode(ServerInspection.self, from: Data(result.standardOutput.utf8))

        let truth = try await cluster.withSuperuser(database: database) { session in
            try await session.rows(
                """
                SELECT h.schema_name::text, h.table_name::text,
                       (SELECT count(*) FROM _timescaledb_catalog.chunk c WHERE c.hypertable_id = h.id AND NOT c.dropped),
                       hypertable_size(format('%I.%I', h.schema_name, h.table_name)::regclass)
                FROM _timescaledb_catalog.hypertable h ORDER BY 1, 2
                """, as: (String, String, Int64, Int64).self)
        }
        #expect(truth.count == 3)
        #expect(report.hypertables.map { "\($0.schema).\($0.name)" } == truth.map { "\($0.0).\($0.1)" })
        for (table, expected) in zip(report.hypertables, truth) {
            #expect(Int64(table.chunkCount) == expected.2, "chunks of \(table.name)")
            #expect(table.totalBytes == expected.3, "size of \(table.name)")
            #expect(table.totalBytes == table.tableBytes + table.indexBytes + table.toastBytes)
        }
        let conditions = try #require(report.hypertables.first { $0.name == "conditions" })
        #expect(conditions.chunkCount >= 20)

        // Read in slices of 3 chunks, each on a server session of its own (past 5,000 chunks
        // otherwise): the same sizes, hypertable by hypertable.
        let sliced = try await CLI.run(["inspect", "--db", cluster.url(database: database), "--json"],
                                       environment: ["PGPASSWORD": cluster.superuserPassword, "TSBACKUP_TEST_SIZES_CHUNKS_PER_SESSION": "3"])
        #expect(sliced.exitCode == 0, "\(sliced.standardError)")
        let slicedReport = try JSONOutput.decode(ServerInspection.self, from: Data(sliced.standardOutput.utf8))
        #expect(slicedReport.hypertables.map(\.name) == report.hypertables.map(\.name))
        for (table, expected) in zip(slicedReport.hypertables, truth) {
            #expect(table.totalBytes == expected.3, "size of \(table.name), read in slices")
            #expect(table.totalBytes == table.tableBytes + table.indexBytes + table.toastBytes)
        }

        let dimensions = try await cluster.withSuperuser(database: database) { session in
            try await session.rows(
                """
                SELECT h.table_name::text, d.column_name::text, d.column_type::regtype::text,
                       d.interval_length, d.num_slices::int8
                FROM _timescaledb_catalog.dimension d JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id
                ORDER BY h.table_name, d.id
                """, as: (String, String, String, Int64?, Int64?).self)
        }
        let reported = report.hypertables.sorted { $0.name < $1.name }.flatMap { table in
            table.dimensions.map { (table.name, $0) }
        }
        #expect(reported.count == dimensions.count)
        for ((table, dimension), row) in zip(reported, dimensions) {
            #expect(table == row.0)
            #expect(dimension.column == row.1)
            #expect(dimension.columnType == row.2)
            if dimension.kind == "space" {
                #expect(dimension.partitions.map(Int64.init) == row.4)
            } else if dimension.integerInterval != nil {
                #expect(dimension.integerInterval == row.3)
            } else {
                #expect(dimension.intervalMicroseconds == row.3)
            }
        }
        #expect(conditions.dimensions.first?.timeInterval == "1 day")
        let readings = try #require(report.hypertables.first { $0.name == "readings" })
        #expect(readings.dimensions.map(\.kind) == ["time", "space"])
        #expect(readings.dimensions.last?.partitions == SampleData.Options.small.spacePartitions)

        #expect(report.plainTableCount == 1)
        #expect(report.timescaledb.installed)
        #expect(report.timescaledb.version == PostgresInstallation.installedTimescaleDBVersion())
        #expect(report.timescaledb.catalogVersion == report.timescaledb.version)
        #expect(report.timescaledb.installableVersions.contains(report.timescaledb.version ?? "?"))
        #expect(report.timescaledb.restoring.databaseSetting == false)
        #expect(report.server.majorVersion == 15)
        #expect(report.role.superuser)
        #expect(report.role.capabilities.allSatisfy { $0.allowed })
        #expect(report.lockBudget.sufficient)

        let relations = try await cluster.withSuperuser(database: database) {
            try await $0.value(
                """
                SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r','p','m','f','S','v') AND n.nspname NOT IN ('pg_catalog','information_schema')
                  AND n.nspname NOT LIKE 'pg\\_toast%'
                """, as: Int64.self)
        }
        #expect(Int64(report.lockBudget.relationsToLock) == relations)
        let databaseBytes = try await cluster.withSuperuser(database: database) {
            try await $0.value("SELECT pg_database_size(current_database())", as: Int64.self)
        }
        #expect(report.databaseBytes > 0)
        #expect(abs(report.databaseBytes - databaseBytes) < 1 << 20)
    }

    @Test("the readable report names every hypertable with its chunk count")
    func readableReport() async throws {
        let (cluster, database) = try await makeSampleDatabase("report")
        let result = try await CLI.run(["inspect", "--db", cluster.url(database: database)],
                                       environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(result.exitCode == 0, "\(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n").map(String.init)
        let conditions = try #require(lines.first { $0.contains("public.conditions") })
        #expect(conditions.contains(" 21 "))
        #expect(lines.contains { $0.contains("iot.readings") && $0.contains("sensor_id (hash, 2 partitions)") })
        #expect(lines.contains { $0.contains("public.events") && $0.contains("every 100") })
        #expect(lines.contains { $0.hasPrefix("TimescaleDB") && $0.contains(PostgresInstallation.installedTimescaleDBVersion() ?? "?") })
        #expect(!result.standardOutput.contains(cluster.superuserPassword))
    }

    @Test("a database left in restore mode is reported loudly")
    func restoreModeIsReported() async throws {
        let (cluster, database) = try await makeSampleDatabase("stuck")
        try await cluster.withSuperuser { try await $0.execute("ALTER DATABASE \(database) SET timescaledb.restoring = 'on'") }
        let json = try await CLI.run(["inspect", "--db", cluster.url(database: database), "--json"],
                                     environment: ["PGPASSWORD": cluster.superuserPassword])
        let report = try JSONOutput.decode(ServerInspection.self, from: Data(json.standardOutput.utf8))
        #expect(report.timescaledb.restoring.databaseSetting)
        #expect(report.timescaledb.restoring.session == true)
        #expect(report.timescaledb.restoring.databasesInRestoreMode.contains(database))
        #expect(report.warnings.contains { $0.contains("restore mode") && $0.contains("RESET timescaledb.restoring") })

        let text = try await CLI.run(["inspect", "--db", cluster.url(database: database)],
                                     environment: ["PGPASSWORD": cluster.superuserPassword])
        #expect(text.standardOutput.contains("restore mode  ON"))
        try await cluster.withSuperuser { try await $0.execute("ALTER DATABASE \(database) RESET timescaledb.restoring") }
    }

    @Test("a non-superuser owner sees what it may and may not do")
    func nonSuperuserOwner() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let role = uniqueDatabaseName("owner")
        let password = "Owner pass: 'quoted' & spaced"
        try await cluster.createRole(role, password: password)
        let database = uniqueDatabaseName("owned")
        try await cluster.createDatabase(database, owner: role, timescaleDB: false)
        // TimescaleDB is a trusted extension: the database owner installs it and creates hypertables.
        try await DatabaseSession.with(cluster.settings(database: database, user: role, password: password)) { session in
            try await session.execute("CREATE EXTENSION timescaledb")
            try await SampleData(.small).load(into: session)
        }
        let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let result = try await CLI.run(["inspect", "--json", "--db", "postgres://\(role):\(encoded)@127.0.0.1:\(cluster.port)/\(database)"])
        #expect(result.exitCode == 0, "\(result.standardError)")
        #expect(!result.standardOutput.contains(password) && !result.standardOutput.contains(encoded))
        let report = try JSONOutput.decode(ServerInspection.self, from: Data(result.standardOutput.utf8))
        #expect(report.role.name == role)
        #expect(report.role.superuser == false)
        #expect(report.role.databaseOwner)
        let allowed = Dictionary(uniqueKeysWithValues: report.role.capabilities.map { ($0.action, $0.allowed) })
        #expect(allowed == ["backup": true, "restore": false, "hypertable-export": true, "hypertable-import": true])
        #expect(report.hypertables.allSatisfy { table in table.owner == role })
    }
}

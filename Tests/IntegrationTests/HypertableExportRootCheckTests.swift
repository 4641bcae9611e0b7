import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// The export's figures come from the hypertable root, and a copy that misses rows fails the
/// export. A missed compressed chunk cannot be produced on the Apache-only build, so the miss is
/// made by the TSBACKUP_TEST_SHORT_COPY seam: one chunk's copy reads one row fewer.
@Suite("HypertableExport: every row checked against the hypertable root")
struct HypertableExportRootCheckTests {
    @Test("a chunk copied short fails the export, naming the chunk, and leaves nothing complete-looking")
    func shortCopyFails() async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_short")
        let scratch = try ScratchDirectory("hx-short")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        let chunks = try await cluster.withSuperuser(database: source) {
            try await $0.values(
                """
                SELECT format('%s.%s', chunk_schema, chunk_name) FROM timescaledb_information.chunks
                WHERE hypertable_schema = 'public' AND hypertable_name = 'conditions' ORDER BY range_start
                """, as: String.self)
        }
        #expect(chunks.count >= 3)
        let victim = chunks[1]
        let inRange = try await cluster.withSuperuser(database: source) {
            try await $0.value(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(victim)"), as: Int64.self)
        }
        #expect(inRange > 1)

        let result = try await CLI.run(
            ["export-hypertable", "--db", cluster.url(database: source), "--table", "public.conditions", "--repo", repository, "--chunks-per-file", "2"],
            environment: ["PGPASSWORD": cluster.superuserPassword, "TSBACKUP_TEST_SHORT_COPY": victim])
        #expect(result.exitCode == 1, "\(result.standardOutput)\n\(result.standardError)")
        #expect(result.standardError.contains("\(victim) (uncompressed) copied \(inRange - 1) of \(inRange) rows"), "\(result.standardError)")
        for other in chunks where other != victim {
            #expect(!result.standardError.contains(other + " "), "only the short chunk is named")
        }

        // The entry is marked failed, holds no data, and cannot be imported or verified.
        let list = try await CLI.run(["list", "--repo", repository, "--json"])
        #expect(list.exitCode == 0)
        struct Listed: Decodable { var id: String; var state: String; var manifest: BackupManifest.Summary? }
        let listed = try JSONOutput.decode([Listed].self, from: Data(list.standardOutput.utf8))
        #expect(listed.count == 1)
        let entry = try #require(listed.first)
        #expect(entry.state == "failed" && entry.manifest?.status == "failed")
        #expect(entry.manifest?.error?.contains(victim) == true)
        let contents = try FileManager.default.contentsOfDirectory(atPath: "\(repository)/backups/\(entry.id)")
        #expect(contents == ["manifest.json"], "no data file survives a failed export")
        let target = uniqueDatabaseName("hx_short_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, entry.id, into: target, repository: repository)
        #expect(imported.exitCode == 5, "\(imported.standardError)")
        let verify = try await CLI.run(["verify", entry.id, "--repo", repository])
        #expect(verify.exitCode == 1)

        // Without the seam the same export is complete, with each chunk's figures from the root.
        let (exported, manifest) = try await exportHypertable(cluster, source, table: "public.conditions", repository: repository, ["--chunks-per-file", "2"])
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        let recorded = try #require(export.chunks)
        #expect(recorded.map(\.name) == chunks)
        #expect(recorded.allSatisfy { $0.state == "uncompressed" && $0.status == 0 && $0.rootRows == $0.rows && $0.rangeStart != nil })
        #expect(recorded.reduce(0) { $0 + $1.rows } == export.rowCount)
        #expect(export.rowCount == (try await orderedRowsDigest(cluster, source, "public.conditions")).0)
        #expect(export.continuousAggregates == [])
        let (good, report) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(good.exitCode == 0, "\(good.standardError)")
        #expect(report?.compression == "no chunk was compressed at the source")
        #expect(report?.warnings.contains { $0.contains("Apache-only") } == false, "no compression at the source, nothing to warn about")
    }

    @Test("chunks the catalog marks compressed are recorded and arrive complete and uncompressed on an Apache-only target, with a warning")
    func apacheTargetKeepsRows() async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_apache")
        let scratch = try ScratchDirectory("hx-apache")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        // This build cannot compress, so the catalog is told so by hand (a throwaway database):
        // the first chunk compressed (status 1), the second compressed and written to since
        // (1 | 8). The rows stay in the chunks' own tables, which the export reads either way.
        let marked = try await cluster.withSuperuser(database: source) { session in
            let names = try await session.values(
                """
                SELECT format('%s.%s', chunk_schema, chunk_name) FROM timescaledb_information.chunks
                WHERE hypertable_schema = 'iot' AND hypertable_name = 'readings' ORDER BY range_start, chunk_name LIMIT 2
                """, as: String.self)
            try await session.query("UPDATE _timescaledb_catalog.chunk SET status = 1 WHERE format('%s.%s', schema_name, table_name) = \(names[0])")
            try await session.query("UPDATE _timescaledb_catalog.chunk SET status = 9 WHERE format('%s.%s', schema_name, table_name) = \(names[1])")
            return names
        }
        let (exported, manifest) = try await exportHypertable(cluster, source, table: "iot.readings", repository: repository)
        #expect(exported.exitCode == 0, "\(exported.standardError)")
        let export = try #require(manifest)
        let chunks = try #require(export.chunks)
        #expect(chunks.count == export.chunkCount)
        #expect(chunks.first { $0.name == marked[0] }.map { ($0.state, $0.status) } ?? ("", 0) == ("compressed", 1))
        #expect(chunks.first { $0.name == marked[1] }.map { ($0.state, $0.status) } ?? ("", 0) == ("partially compressed", 9))
        #expect(chunks.filter(\.compressed).count == 2)
        #expect(export.rowCount == (try await orderedRowsDigest(cluster, source, "iot.readings")).0)
        let show = try await CLI.run(["show", export.id, "--repo", repository])
        #expect(show.standardOutput.contains("2 of \(chunks.count) (1 partially), exported decompressed"))

        // What an export from a full build with compression on records.
        var withCompression = export
        withCompression.compression.enabled = true
        withCompression.compression.segmentBy = ["sensor_id"]
        withCompression.compression.orderBy = ["\"time\" DESC"]
        try (try JSONOutput.encode(withCompression) + "\n").write(toFile: "\(repository)/backups/\(export.id)/manifest.json", atomically: true, encoding: .utf8)

        let target = uniqueDatabaseName("hx_apache_dst")
        try await cluster.createDatabase(target)
        let (imported, report) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 0, "\(imported.standardError)")
        let done = try #require(report)
        #expect(done.verified && done.rows == export.rowCount)
        #expect(done.warnings.contains { $0.contains("Apache-only") && $0.contains("2 chunks were compressed at the source") })
        #expect(done.compression.contains("2 chunks were compressed at the source (1 partially)") && done.compression.contains("not compressed here"))
        #expect(done.recompressedChunks.isEmpty)
        #expect(try await orderedRowsDigest(cluster, target, "iot.readings") == orderedRowsDigest(cluster, source, "iot.readings"))

        // The other way import tells a target without compression: ALTER TABLE fails with
        // SQLSTATE 0A000, which the error carries as a code to branch on.
        let state = try await cluster.withSuperuser(database: target) { session -> String? in
            do {
                try await session.execute("ALTER TABLE iot.readings SET (timescaledb.compress)")
                return "no error"
            } catch let error as TSBackupError {
                return error.sqlState
            }
        }
        #expect(state == "0A000")
    }

    @Test("a hypertable with a tiered (OSM) chunk is refused, naming the chunk; continuous aggregates are named")
    func tieredChunkRefused() async throws {
        let (cluster, source) = try await makeSampleDatabase("hx_osm")
        let scratch = try ScratchDirectory("hx-osm")
        defer { scratch.remove() }
        let repository = scratch.path + "/repo"
        // No OSM extension here: the catalog flag is set by hand, in a throwaway database.
        let tiered = try await cluster.withSuperuser(database: source) { session in
            let name = try await session.value(
                """
                SELECT format('%s.%s', chunk_schema, chunk_name) FROM timescaledb_information.chunks
                WHERE hypertable_schema = 'public' AND hypertable_name = 'events' ORDER BY range_start_integer LIMIT 1
                """, as: String.self)
            try await session.query("UPDATE _timescaledb_catalog.chunk SET osm_chunk = true WHERE format('%s.%s', schema_name, table_name) = \(name)")
            return name
        }
        let (result, manifest) = try await exportHypertable(cluster, source, table: "public.events", repository: repository)
        #expect(result.exitCode == 5, "\(result.standardError)")
        #expect(result.standardError.contains(tiered) && result.standardError.contains("tiered"))
        #expect(manifest == nil)
        let list = try await CLI.run(["list", "--repo", repository])
        #expect(!list.standardOutput.contains("complete"))

        // A continuous aggregate on conditions (this build cannot create one: the catalog row is
        // written by hand, naming events as its materialization) is named, not silently dropped.
        try await cluster.withSuperuser(database: source) { session in
            try await session.execute(
                """
                INSERT INTO _timescaledb_catalog.continuous_agg (mat_hypertable_id, raw_hypertable_id, user_view_schema, user_view_name,
                    partial_view_schema, partial_view_name, direct_view_schema, direct_view_name)
                SELECT m.id, r.id, 'public', 'conditions_hourly', '_timescaledb_internal', '_partial_view_x', '_timescaledb_internal', '_direct_view_x'
                FROM _timescaledb_catalog.hypertable m, _timescaledb_catalog.hypertable r
                WHERE m.table_name = 'events' AND r.table_name = 'conditions'
                """)
        }
        let (withCagg, caggManifest) = try await exportHypertable(cluster, source, table: "public.conditions", repository: repository)
        #expect(withCagg.exitCode == 0, "\(withCagg.standardError)")
        #expect(caggManifest?.continuousAggregates == ["public.conditions_hourly"])
        #expect(caggManifest?.warnings.contains { $0.contains("public.conditions_hourly") && $0.contains("not part of the export") } == true)
    }
}

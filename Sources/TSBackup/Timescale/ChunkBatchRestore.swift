import Foundation
import PostgresNIO

/// The restore phases of a backup whose chunks were dumped in batches (manifest `chunk_path`),
/// all between timescaledb_pre_restore() and timescaledb_post_restore():
///
/// 1. the main archive's pre-data, views and materialized views held back (they may select from
///    a batched hypertable, whose root is not in the main archive);
/// 2. the batched roots' tables (the pre-data part of their stored definitions);
/// 3. the held-back views;
/// 4. the batches' pre-data, on `--jobs` processes: the chunk tables, inheriting from the roots;
/// 5. (the main archive's TimescaleDB catalog data, as for every restore), then the catalog rows
///    of chunks that retention dropped after the backup's snapshot are deleted, so the catalog
///    never names a missing table;
/// 6. (the main archive's data and post-data, as for every restore), then the roots' constraints,
///    indexes, triggers and foreign keys;
/// 7. the batches' data and post-data, on `--jobs` processes: rows first (from each batch's
///    data file by COPY FROM STDIN, or in backups of the old form from its archive), then each
///    chunk's indexes and foreign keys (after the main post-data, so referenced keys exist).
final class ChunkBatchRestore: Sendable {
    let path: BackupManifest.ChunkPath
    let directory: String
    let pgRestore: PostgresTool
    let settings: ConnectionSettings
    let jobs: Int
    let roots: [RootDefinition]

    init(path: BackupManifest.ChunkPath, directory: String, pgRestore: PostgresTool, settings: ConnectionSettings, jobs: Int) throws {
        self.path = path
        self.directory = directory
        self.pgRestore = pgRestore
        self.settings = settings
        self.jobs = max(1, jobs)
        let file = directory + "/" + path.rootsFile
        do {
            roots = try JSONOutput.decode([RootDefinition].self, from: Data(contentsOf: URL(fileURLWithPath: file)))
        } catch {
            throw TSBackupError(.failed, "The backup's hypertable root definitions (\(path.rootsFile)) cannot be read: \(error). The backup is damaged; restore another one.")
        }
    }

    /// Whether a main-archive item is held back until the roots exist.
    static func isHeldBack(_ item: ArchiveContents.Item, views: Set<String>) -> Bool {
        if item.type == "VIEW" || item.type == "MATERIALIZED VIEW" { return true }
        guard item.type == "COMMENT" || item.type == "ACL" else { return false }
        // "COMMENT public VIEW v owner", "ACL public TABLE v owner", "COMMENT public COLUMN v.c owner"
        let words = item.line.split(separator: " ").map(String.init)
        guard let kind = words.firstIndex(where: { $0 == "VIEW" || $0 == "TABLE" || $0 == "COLUMN" }), kind + 1 < words.count else { return false }
        let target = words[kind + 1]
        let name = words[kind] == "COLUMN" ? String(target.split(separator: ".").first ?? "") : target
        return views.contains("\(item.schema).\(name)")
    }

    /// Steps 1-4; pg_restore's warnings.
    func restorePreData(_ contents: ArchiveContents, procedure: RestoreProcedure) async throws -> [String] {
        let views = Set(contents.items.filter { $0.type == "VIEW" || $0.type == "MATERIALIZED VIEW" }.map { "\($0.schema).\($0.name)" })
        let heldBack = contents.items.filter { Self.isHeldBack($0, views: views) }
        let first = contents.items.filter { !Self.isHeldBack($0, views: views) }
        let firstList = procedure.listDirectory + "/pre-data-first.list"
        let viewsList = procedure.listDirectory + "/pre-data-views.list"
        try (first.map(\.line).joined(separator: "\n") + "\n").write(toFile: firstList, atomically: true, encoding: .utf8)
        try (heldBack.map(\.line).joined(separator: "\n") + "\n").write(toFile: viewsList, atomically: true, encoding: .utf8)

        var warnings = try await procedure.pgRestore(["--section=pre-data", "--use-list=\(firstList)"], phase: "pre-data")
        try await DatabaseSession.with(settings) { session in
            for root in roots {
                for statement in root.preData {
                    try await session.execute(statement, purpose: "creating the root table of \(root.schema).\(root.name)")
                }
            }
        }
        if !heldBack.isEmpty {
            warnings += try await procedure.pgRestore(["--section=pre-data", "--use-list=\(viewsList)"], phase: "pre-data views")
        }
        warnings += try await eachBatch(phase: "chunk tables") { batch in
            try await batch.pgRestore(["--section=pre-data"], phase: "chunk batch pre-data")
        }
        return warnings
    }

    /// Step 5: deletes the catalog rows of chunks the backup recorded as dropped by retention
    /// (chunk constraints, chunk column stats, the chunk, dimension slices no chunk uses any more;
    /// the other tables referencing chunks cascade).
    func removeDroppedChunks() async throws {
        let ids = path.droppedChunks.map { Int64($0.id) }
        guard !ids.isEmpty else { return }
        try await DatabaseSession.with(settings) { session in
            try await session.execute("BEGIN")
            let slices = try await session.values(
                "SELECT DISTINCT dimension_slice_id::int8 FROM _timescaledb_catalog.chunk_constraint WHERE chunk_id = ANY(\(ids)::int8[]) AND dimension_slice_id IS NOT NULL",
                as: Int64.self, purpose: "finding the dimension slices of dropped chunks")
            try await session.query("DELETE FROM _timescaledb_catalog.chunk_constraint WHERE chunk_id = ANY(\(ids)::int8[])",
                                    purpose: "removing dropped chunks' constraints from the catalog")
            let stats = try await session.value("SELECT to_regclass('_timescaledb_catalog.chunk_column_stats') IS NOT NULL", as: Bool.self)
            if stats {
                try await session.query("DELETE FROM _timescaledb_catalog.chunk_column_stats WHERE chunk_id = ANY(\(ids)::int8[])",
                                        purpose: "removing dropped chunks' column statistics from the catalog")
            }
            try await session.query("DELETE FROM _timescaledb_catalog.chunk WHERE id = ANY(\(ids)::int8[])",
                                    purpose: "removing dropped chunks from the catalog")
            try await session.query(
                """
                DELETE FROM _timescaledb_catalog.dimension_slice s WHERE s.id = ANY(\(slices)::int8[])
                  AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk_constraint c WHERE c.dimension_slice_id = s.id)
                """, purpose: "removing dimension slices of dropped chunks")
            try await session.execute("COMMIT")
        }
    }

    /// Step 6 (after the main archive's post-data).
    func finishRoots() async throws {
        try await DatabaseSession.with(settings) { session in
            for root in roots {
                for statement in root.postData {
                    try await session.execute(statement, purpose: "adding indexes and constraints to \(root.schema).\(root.name)")
                }
            }
        }
    }

    /// Step 7; pg_restore's warnings. A batch with a data file (``BackupManifest/ChunkPath/DataForm/copyFiles``)
    /// has its rows loaded from it by COPY FROM STDIN, then its archive's post-data; an old
    /// batch's archive restores its own data.
    func restoreData() async throws -> [String] {
        try await eachBatch(phase: "chunk data") { batch, procedure in
            if let file = batch.dataFile {
                try await self.load(file, of: batch)
                return try await procedure.pgRestore(["--section=post-data"], phase: "chunk batch post-data")
            }
            return try await procedure.pgRestore(["--section=data", "--section=post-data"], phase: "chunk batch data and post-data")
        }
    }

    /// Loads a batch's data file: each part into its chunk (the batch's chunks, in order) by
    /// COPY FROM STDIN, in one transaction (committed without waiting for its WAL flush, as the
    /// rest of the restore). The file has been checked against its SHA-256 before; its parts and
    /// rows are checked again against the batch as they load.
    func load(_ file: String, of batch: BackupManifest.ChunkPath.Batch) async throws {
        let reader = try ChunkDataFileReader(try EntryPath.resolve(file, in: directory), name: file)
        try await DatabaseSession.with(settings) { session in
            try await session.execute("BEGIN")
            // The settings the rows were copied out with (BatchedDump.copyRows).
            for setting in TableContent.settings where setting.hasPrefix("DateStyle") || setting.hasPrefix("IntervalStyle") || setting.hasPrefix("TimeZone") {
                try await session.execute("SET LOCAL " + setting)
            }
            // The manifest names chunks "schema.name"; TimescaleDB's catalog (restored before
            // this step) tells the two parts apart even when a schema's name holds a dot.
            let tables = Dictionary(try await session.rows(
                """
                SELECT schema_name::text || '.' || table_name::text, schema_name::text, table_name::text
                FROM _timescaledb_catalog.chunk WHERE schema_name::text || '.' || table_name::text = ANY(\(batch.chunks)::text[])
                """, as: (String, String, String).self, purpose: "finding the chunk tables of \(file)").map { ($0.0, ($0.1, $0.2)) },
                uniquingKeysWith: { a, _ in a })
            var rows: Int64 = 0
            var schema: String?
            for chunk in batch.chunks {
                guard let (chunkSchema, name) = tables[chunk] else {
                    throw TSBackupError(.failed, "Chunk \(chunk), whose rows \(file) holds, is not in the restored TimescaleDB catalog; the backup is inconsistent. Run `tsbackup verify` on it and restore another one.")
                }
                // postgres-nio's COPY FROM puts the name in double quotes as one identifier, so
                // the schema comes from the search path, and a double quote in the name is doubled.
                if schema != chunkSchema {
                    try await session.execute("SET LOCAL search_path = \(quoteIdentifier(chunkSchema))")
                    schema = chunkSchema
                }
                let table = name.replacingOccurrences(of: "\"", with: "\"\"")
                var loaded: Int64?
                try await session.copyIn(table: table, purpose: "loading the rows of chunk \(chunk) from \(file)") { writer in
                    loaded = try await reader.nextPart { try await writer.write($0) }
                }
                guard let loaded else {
                    throw ZstdFile.corrupt(file, "it holds rows for fewer than the \(batch.chunks.count) chunks its batch lists")
                }
                rows += loaded
            }
            guard try await reader.nextPart(nil) == nil else {
                throw ZstdFile.corrupt(file, "it holds rows for more than the \(batch.chunks.count) chunks its batch lists")
            }
            guard rows == batch.rowCount else {
                throw ZstdFile.corrupt(file, "it holds \(rows) rows, the manifest records \(batch.rowCount)")
            }
            try await session.execute("COMMIT")
        }
    }

    /// Runs `body` for every batch archive, `jobs` at a time, each with its own pg_restore; the
    /// warnings of all of them.
    private func eachBatch(phase: String, _ body: @escaping @Sendable (RestoreProcedure) async throws -> [String]) async throws -> [String] {
        try await eachBatch(phase: phase) { _, procedure in try await body(procedure) }
    }

    private func eachBatch(phase: String,
                           _ body: @escaping @Sendable (BackupManifest.ChunkPath.Batch, RestoreProcedure) async throws -> [String]) async throws -> [String] {
        let archives = path.batches.map { directory + "/" + $0.archive }
        let procedures = try archives.map { try RestoreProcedure(archive: $0, pgRestore: pgRestore, settings: settings, jobs: 1) }
        defer { procedures.forEach { $0.removeLists() } }
        return try await withThrowingTaskGroup(of: [String].self) { group in
            var pending = zip(path.batches, procedures).makeIterator()
            var warnings: [String] = []
            for _ in 0..<jobs {
                guard let next = pending.next() else { break }
                group.addTask { try await body(next.0, next.1) }
            }
            while let finished = try await group.next() {
                warnings += finished
                if let next = pending.next() {
                    group.addTask { try await body(next.0, next.1) }
                }
            }
            return warnings
        }
    }
}

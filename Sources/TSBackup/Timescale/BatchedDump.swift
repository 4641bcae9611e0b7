import Foundation
import PostgresNIO
import Synchronization

/// Dumps the batched chunks: one pg_dump per batch on the coordinator's exported snapshot, up to
/// `--jobs` at a time, each into its own custom-format archive: the chunks' DDL only, their rows
/// copied by psql into a data file beside it (``ChunkBatchPlan/copiesData``, see
/// `attemptCopying`), or, in the old form, DDL and rows together as described below.
///
/// Every batch has a session of its own that imports the same snapshot, locks the batch's chunks
/// (so retention cannot drop them while pg_dump reads them), counts and hashes their rows in the
/// snapshot, runs pg_dump, and commits: its locks and pg_dump's are released when the batch ends,
/// so no transaction ever holds more than a batch's share of the lock table. A chunk whose table
/// is gone before the batch locks it was dropped after the snapshot (retention); it is left out
/// and reported, and the restore removes it from the catalog.
struct BatchedDump: Sendable {
    let request: Backup.Request
    let pgDump: PostgresTool
    /// Copies the rows when the plan ``ChunkBatchPlan/copiesData``.
    let psql: PostgresTool
    let plan: ChunkBatchPlan
    let snapshot: String
    let staging: String
    let onBatchDone: (@Sendable (_ done: Int, _ total: Int) -> Void)?

    /// What a batch dumped. Kept for every batch until the manifest is written, so it holds no
    /// copy of the batch's chunk rows and no chunk names: at 50,000 chunks those were megabytes.
    struct BatchResult: Sendable {
        var batch: ChunkBatchPlan.Batch
        /// Chunks of the batch gone (retention) before it could lock them; usually none.
        var dropped: [ChunkPathDetector.ChunkRow]
        /// Rows and hash sums in the snapshot of each chunk of `batch.chunks`, in the same
        /// order (an array, not a dictionary by name or id: a third of the memory); zero for
        /// dropped chunks.
        var figures: [ContentFigures]
        var warnings: [String]
        var rows: Int64
        /// The batch's data file (``ChunkBatchPlan/copiesData``).
        var dataFile: String?

        /// `chunkFigures`: the figures of the dumped chunks, by chunk id.
        init(batch: ChunkBatchPlan.Batch, dropped: [ChunkPathDetector.ChunkRow], chunkFigures: [Int: ContentFigures], warnings: [String]) {
            self.batch = batch
            self.dropped = dropped
            figures = batch.chunks.map { chunkFigures[$0.id] ?? ContentFigures() }
            self.warnings = warnings
            rows = chunkFigures.values.reduce(0) { $0 + $1.rows }
        }

        /// The figures of the dumped chunks, by chunk id.
        var dumpedFigures: [(id: Int, figures: ContentFigures)] {
            let gone = Set(dropped.map(\.id))
            return zip(batch.chunks, figures).filter { !gone.contains($0.0.id) }.map { ($0.0.id, $0.1) }
        }

        /// The chunks dumped: the batch's, less the dropped ones.
        var dumped: [ChunkPathDetector.ChunkRow] {
            guard !dropped.isEmpty else { return Array(batch.chunks) }
            let gone = Set(dropped.map(\.id))
            return batch.chunks.filter { !gone.contains($0.id) }
        }
    }

    /// Runs every batch; throws on the first failure (the entry is then discarded).
    func run() async throws -> [BatchResult] {
        try FileManager.default.createDirectory(atPath: staging + "/chunks", withIntermediateDirectories: true)
        let jobs = max(1, request.jobs)
        let done = Mutex(0)
        let total = plan.batches.count
        return try await withThrowingTaskGroup(of: BatchResult.self) { group in
            var results: [BatchResult] = []
            var pending = plan.batches[...]
            for _ in 0..<jobs {
                guard let batch = pending.popFirst() else { break }
                group.addTask { try await self.dump(batch) }
            }
            while let result = try await group.next() {
                results.append(result)
                let count = done.withLock { $0 += 1; return $0 }
                onBatchDone?(count, total)
                if let batch = pending.popFirst() {
                    group.addTask { try await self.dump(batch) }
                }
            }
            return results.sorted { $0.batch.number < $1.batch.number }
        }
    }

    /// One batch, retried when a chunk disappears between finding it and locking it.
    func dump(_ batch: ChunkBatchPlan.Batch) async throws -> BatchResult {
        await TestSeams.pauseIfAsked(atStep: "chunk batch \(batch.number) of \(batch.hypertable)")
        var lastError: (any Error)?
        for _ in 1...max(1, request.maxAttempts) {
            do {
                return try await DatabaseSession.with(request.settings) { session in
                    try await attempt(batch, session: session)
                }
            } catch let error as LockRace {
                lastError = error.underlying
                continue
            }
        }
        throw TSBackupError(.failed, "Chunk batch \(batch.number) of \(batch.hypertable) could not be locked: its chunks kept disappearing (\((lastError as? TSBackupError)?.message ?? "no detail")). Run the backup again, away from retention jobs.")
    }

    struct LockRace: Error { var underlying: any Error }

    private func attempt(_ batch: ChunkBatchPlan.Batch, session: DatabaseSession) async throws -> BatchResult {
        if plan.copiesData { return try await attemptCopying(batch, session: session) }
        try await TableContent.prepare(session)
        try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try await session.execute("SET TRANSACTION SNAPSHOT \(SQLLiteral.quote(snapshot))",
                                  purpose: "importing the backup's snapshot")
        let kept = try await present(Array(batch.chunks), of: batch, session: session)
        let keptIDs = Set(kept.map(\.id))
        let dropped = batch.chunks.filter { !keptIDs.contains($0.id) }
        guard !kept.isEmpty else {
            try await session.execute("COMMIT")
            return BatchResult(batch: batch, dropped: dropped, chunkFigures: [:], warnings: [])
        }
        let dumped = kept.map { ($0, Self.quoted($0)) }
        do {
            try await session.execute("LOCK TABLE \(dumped.map(\.1).joined(separator: ", ")) IN ACCESS SHARE MODE",
                                      purpose: "locking the chunks of batch \(batch.number)")
        } catch {
            // Dropped between the check and the lock: start the batch again.
            _ = try? await session.execute("ROLLBACK")
            throw LockRace(underlying: error)
        }
        let figures = try await measure(dumped, session: session)
        let run = try await runBatchDump(kept, of: batch, schemaOnly: false)
        // pg_dump has ended, failed or not: the batch's locks go now, before any error is thrown.
        try await session.execute("COMMIT")
        return BatchResult(batch: batch, dropped: dropped, chunkFigures: figures, warnings: try run.warnings())
    }

    /// The chunks of `chunks` that still exist (`to_regclass` reads the catalog as it is now, not
    /// in the snapshot: a chunk the snapshot lists that is gone was dropped after the snapshot).
    private func present(_ chunks: [ChunkPathDetector.ChunkRow], of batch: ChunkBatchPlan.Batch,
                         session: DatabaseSession) async throws -> [ChunkPathDetector.ChunkRow] {
        let names = chunks.map(Self.quoted)
        let found = Set(try await session.values(
            "SELECT t FROM unnest(\(names)::text[]) t WHERE to_regclass(t) IS NOT NULL", as: String.self,
            purpose: "checking which chunks of batch \(batch.number) still exist"))
        return zip(chunks, names).filter { found.contains($0.1) }.map(\.0)
    }

    static func quoted(_ chunk: ChunkPathDetector.ChunkRow) -> String {
        "\(quoteIdentifier(chunk.schema)).\(quoteIdentifier(chunk.name))"
    }

    /// A batch of the data-file form, holding one lock per chunk at a time (a batch of the old
    /// form held 2 + its indexes: so batches are several times larger, and pg_dump, which reads
    /// the whole catalog each time it runs, runs several times less often):
    /// 1. the chunks that still exist are copied by psql (one transaction on the snapshot that
    ///    first locks them all, then COPYs each TO STDOUT) into a plain file, a `\.` line after
    ///    each chunk's rows; with `--checksums` their rows are hashed before, in transactions of
    ///    a share of the lock budget each;
    /// 2. `pg_dump --schema-only` writes the DDL of the chunks copied. A chunk dropped (retention)
    ///    between its copy and pg_dump's lock makes pg_dump fail; it runs again without the chunks
    ///    found gone, and their rows are taken out of the file, so the archive and the data file
    ///    hold the same chunks, and a chunk is either wholly in the backup or recorded dropped;
    /// 3. the file is compressed with zstd (one frame, content checksum).
    private func attemptCopying(_ batch: ChunkBatchPlan.Batch, session: DatabaseSession) async throws -> BatchResult {
        try await TableContent.prepare(session)
        var copied = try await present(Array(batch.chunks), of: batch, session: session)
        guard !copied.isEmpty else {
            return BatchResult(batch: batch, dropped: Array(batch.chunks), chunkFigures: [:], warnings: [])
        }
        var measured: [Int: ContentFigures]?
        if request.checksums {
            measured = try await hashInShares(copied, of: batch, session: session)
        }
        let plain = staging + "/" + batch.dataFile + ".plain"
        defer { unlink(plain) }
        let rows: [Int64]
        do {
            rows = try await copyRows(copied, of: batch, to: plain)
        } catch let error as TSBackupError {
            // A chunk dropped between the check and psql's lock: start the batch again.
            if try await present(copied, of: batch, session: session).count < copied.count { throw LockRace(underlying: error) }
            throw error
        }
        var rowsByID = Dictionary(zip(copied.map(\.id), rows), uniquingKeysWith: { a, _ in a })
        var warnings: [String] = []
        for attempt in 1...max(1, request.maxAttempts) {
            if attempt == 1 { await TestSeams.pauseIfAsked(atStep: "chunk batch \(batch.number) DDL of \(batch.hypertable)") }
            do {
                warnings = try await dumpDefinitions(copied, of: batch)
                break
            } catch let error as TSBackupError {
                let still = try await present(copied, of: batch, session: session)
                guard still.count < copied.count, attempt < request.maxAttempts else { throw error }
                // Dropped (retention) after their rows were copied: out of the archive and the file.
                let kept = Set(still.map(\.id))
                try Self.keepParts(of: plain, where: copied.map { kept.contains($0.id) })
                copied = still
                rowsByID = rowsByID.filter { kept.contains($0.key) }
                if copied.isEmpty { break }
            }
        }
        let keptIDs = Set(copied.map(\.id))
        let dropped = batch.chunks.filter { !keptIDs.contains($0.id) }
        guard !copied.isEmpty else {
            unlink(staging + "/" + batch.archive)
            return BatchResult(batch: batch, dropped: dropped, chunkFigures: [:], warnings: warnings)
        }
        _ = try ZstdFile.compress(plain, to: staging + "/" + batch.dataFile, level: request.zstdLevel ?? Backup.defaultZstdLevel)
        var figures: [Int: ContentFigures] = [:]
        for chunk in copied {
            let sent = rowsByID[chunk.id] ?? 0
            if let measured {
                let counted = measured[chunk.id] ?? ContentFigures()
                guard counted.rows == sent else {
                    throw TSBackupError(.failed, "Chunk \(chunk.qualifiedName) sent \(sent) row(s) to its copy but holds \(counted.rows) in the same snapshot; the backup was not kept. Run it again, and report this to the tsbackup developers if it repeats.")
                }
                figures[chunk.id] = counted
            } else {
                figures[chunk.id] = ContentFigures(rows: sent)
            }
        }
        var result = BatchResult(batch: batch, dropped: dropped, chunkFigures: figures, warnings: warnings)
        result.dataFile = batch.dataFile
        return result
    }

    /// `--checksums`: the chunks' rows hashed on the snapshot, in transactions each locking at
    /// most a batch's share of the lock table (the query is planned: it locks each chunk's indexes).
    private func hashInShares(_ chunks: [ChunkPathDetector.ChunkRow], of batch: ChunkBatchPlan.Batch,
                              session: DatabaseSession) async throws -> [Int: ContentFigures] {
        let indexes = plan.batched.first { $0.qualifiedName == batch.hypertable }?.indexCount ?? 0
        let share = max(1, plan.chunksPerBatch / (1 + indexes))
        var figures: [Int: ContentFigures] = [:]
        var start = 0
        while start < chunks.count {
            let part = Array(chunks[start..<min(chunks.count, start + share)])
            start += share
            try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            do {
                try await session.execute("SET TRANSACTION SNAPSHOT \(SQLLiteral.quote(snapshot))", purpose: "importing the backup's snapshot")
                do {
                    try await session.execute("LOCK TABLE \(part.map(Self.quoted).joined(separator: ", ")) IN ACCESS SHARE MODE",
                                              purpose: "locking the chunks of batch \(batch.number)")
                } catch {
                    throw LockRace(underlying: error)
                }
                figures.merge(try await measure(part.map { ($0, Self.quoted($0)) }, session: session)) { a, _ in a }
                try await session.execute("COMMIT")
            } catch {
                _ = try? await session.execute("ROLLBACK")
                throw error
            }
        }
        return figures
    }

    /// How one pg_dump of a batch ended and what it wrote on stderr.
    struct BatchDumpRun {
        var batch: ChunkBatchPlan.Batch
        var result: ProcessResult
        var collected: StderrCollector

        /// pg_dump's warnings, named by batch; throws when pg_dump failed or reported an error.
        func warnings() throws -> [String] {
            guard result.succeeded, collected.errors.isEmpty else {
                let detail = collected.errors.joined(separator: " ").singleLine(limit: 600)
                throw TSBackupError(.failed, "pg_dump of chunk batch \(batch.number) (\(batch.hypertable)) failed (\(result.statusDescription)): \(detail.isEmpty ? "no error message" : detail)")
            }
            return collected.warnings.map { "chunk batch \(batch.number): \($0)" }
        }
    }

    /// pg_dump of `chunks` on the snapshot into the batch's archive: their DDL only when
    /// `schemaOnly`, DDL and rows otherwise. Throws only when pg_dump cannot run; how it ended is
    /// in the result (``BatchDumpRun/warnings()`` throws its failure), so the old form can commit
    /// its session first.
    private func runBatchDump(_ chunks: [ChunkPathDetector.ChunkRow], of batch: ChunkBatchPlan.Batch, schemaOnly: Bool) async throws -> BatchDumpRun {
        let archive = staging + "/" + batch.archive
        var arguments = ["--format=custom"] + (schemaOnly ? ["--schema-only"] : [])
            + ["--file=\(archive)", "--snapshot=\(snapshot)", "--no-password", "--no-sync", "--verbose", "--strict-names"]
        if let level = request.compression { arguments.append("--compress=\(level)") }
        arguments += chunks.map { "--table=\(RootDefinition.pattern(schema: $0.schema, name: $0.name))" }
        arguments.append(request.settings.database)
        let collector = Mutex(StderrCollector())
        let result = try await ProcessRunner.runStreamingErrors(pgDump.path, arguments, environment: request.settings.childProcessEnvironment()) { line in
            _ = collector.withLock { $0.take(line, tableBytes: [:]) }
        }
        return BatchDumpRun(batch: batch, result: result, collected: collector.withLock { $0 })
    }

    /// `pg_dump --schema-only` of `chunks` on the snapshot into the batch's archive; its warnings.
    private func dumpDefinitions(_ chunks: [ChunkPathDetector.ChunkRow], of batch: ChunkBatchPlan.Batch) async throws -> [String] {
        unlink(staging + "/" + batch.archive)
        return try await runBatchDump(chunks, of: batch, schemaOnly: true).warnings()
    }

    /// Rows of each chunk in the snapshot (read from the chunk itself), and the content-hash sums
    /// when asked: the same figures ``TableContent/measure`` takes, chunk by chunk, so the check
    /// through the root (``BatchRootCheck``) can name a chunk that differs. Keyed by chunk id.
    private func measure(_ chunks: [(ChunkPathDetector.ChunkRow, String)], session: DatabaseSession) async throws -> [Int: ContentFigures] {
        let union: String
        if request.checksums {
            union = chunks.enumerated().map { index, chunk in
                "SELECT \(index) AS i, md5(t::text) AS h FROM (SELECT * FROM \(chunk.1)) t"
            }.joined(separator: " UNION ALL ")
        } else {
            union = chunks.enumerated().map { index, chunk in "SELECT \(index) AS i, count(*) AS n FROM \(chunk.1)" }.joined(separator: " UNION ALL ")
        }
        let rows = try await session.rows(
            PostgresQuery(unsafeSQL: request.checksums ? """
            SELECT i, count(*),
                   sum(('x' || substr(h, 1, 16))::bit(64)::int8::numeric)::text,
                   sum(('x' || substr(h, 17, 16))::bit(64)::int8::numeric)::text
            FROM (\(union)) rows GROUP BY i
            """ : "SELECT i, n::int8, '0', '0' FROM (\(union)) counts"),
            as: (Int, Int64, String, String).self, purpose: request.checksums ? "hashing the rows of a chunk batch" : "counting the rows of a chunk batch")
        // A chunk without rows has no group: its figures stay zero.
        var figures = Dictionary(chunks.map { ($0.0.id, ContentFigures()) }, uniquingKeysWith: { a, _ in a })
        for (index, count, high, low) in rows where chunks.indices.contains(index) {
            figures[chunks[index].0.id] = try ContentFigures(rows: count, highText: high, lowText: low)
        }
        return figures
    }

    /// Copies the rows of `chunks` (COPY TO STDOUT, table form: it is not planned and locks no
    /// index) by psql on the backup's snapshot into the plain file `plain`, a `\.` line after
    /// each chunk's rows; the rows each chunk sent. psql's transaction first locks every chunk,
    /// so a chunk dropped since it was found fails the copy before any row is read.
    private func copyRows(_ chunks: [ChunkPathDetector.ChunkRow], of batch: ChunkBatchPlan.Batch, to plain: String) async throws -> [Int64] {
        unlink(plain)
        let statements = chunks.map { "COPY \(Self.quoted($0)) TO STDOUT;\n\(CopyPipeline.markerCommand)" }
        // The settings pg_dump dumps data with, so the text reads back the same on any server.
        let script = """
            SET client_encoding = 'UTF8';
            BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
            SET TRANSACTION SNAPSHOT \(SQLLiteral.quote(snapshot));
            \(TableContent.settings.map { "SET LOCAL " + $0 + ";" }.joined(separator: "\n"))
            LOCK TABLE \(chunks.map(Self.quoted).joined(separator: ", ")) IN ACCESS SHARE MODE;
            \(statements.joined(separator: "\n"))
            COMMIT;

            """
        let what = "the rows of chunk batch \(batch.number) (\(chunks.count) chunks of \(batch.hypertable))"
        let exported = try await CopyPipeline.exportKeepingMarkers(
            psql: psql.path, environment: request.settings.childProcessEnvironment(), script: script, outputPath: plain, what: what)
        guard exported.rowsPerPart.count == chunks.count else {
            throw TSBackupError(.failed, "psql's output for \(what) did not separate into one part per chunk (\(exported.rowsPerPart.count) parts for \(chunks.count) chunks); the backup was not kept. Report it with the psql version (\(psql.version)).")
        }
        return exported.rowsPerPart
    }

    /// Rewrites the plain data file `path` keeping only the parts whose flag in `keep` is set
    /// (chunks dropped between their copy and their DDL leave it). Rare: only under retention.
    /// Streams through a second file, a piece at a time, whatever the batch's size.
    static func keepParts(of path: String, where keep: [Bool]) throws {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FileSystem.ioError("open \(path)") }
        defer { close(input) }
        let filtered = path + ".kept"
        let output = open(filtered, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw FileSystem.ioError("create \(filtered)") }
        var closed = false
        defer { if !closed { close(output); unlink(filtered) } }
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: ZstdFile.pieceSize, alignment: 16)
        defer { piece.deallocate() }
        var pending: [UInt8] = []  // bytes of the current part read so far (whole lines and a partial one)
        var lineStart = 0          // where the current (partial) line starts in `pending`
        var part = 0
        func flush(upTo end: Int, keeping: Bool) throws {
            if keeping { try pending.withUnsafeBytes { try FileSystem.writeAll(output, UnsafeRawBufferPointer(rebasing: $0[0..<end]), path: filtered) } }
            pending.removeSubrange(0..<end)
            lineStart -= end
        }
        while true {
            let n = try FileSystem.readSome(input, into: piece, path: path)
            if n == 0 { break }
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[0..<n]))
            while let newline = pending[lineStart...].firstIndex(of: 0x0A) {
                let next = newline + 1
                let isEnd = next - lineStart == CopyPipeline.marker.count && pending[lineStart] == CopyPipeline.marker[0]
                    && pending[lineStart + 1] == CopyPipeline.marker[1]
                lineStart = next
                if isEnd {
                    try flush(upTo: next, keeping: part < keep.count && keep[part])
                    part += 1
                }
            }
            // Whole lines need not wait for their part's end: memory stays at a piece and a line.
            if lineStart > 0 { try flush(upTo: lineStart, keeping: part < keep.count && keep[part]) }
        }
        closed = true
        guard close(output) == 0 else { unlink(filtered); throw FileSystem.ioError("write \(filtered)") }
        guard rename(filtered, path) == 0 else { unlink(filtered); throw FileSystem.ioError("rename \(filtered)") }
    }

    /// The position of `id` in the ascending `ids`, by binary search.
    static func index(of id: Int, in ids: [Int]) -> Int? {
        var low = 0, high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low < ids.count && ids[low] == id ? low : nil
    }

    /// Adds the figures to the survey's hypertables and writes the chunk-path part of the
    /// manifest: row counts and hashes counted through the roots (``BatchRootCheck``, which has
    /// checked them against the batches chunk by chunk), chunk counts without dropped chunks.
    /// `chunkIDs`: the ids of `manifest.chunkTables`, in order (``DatabaseSurvey/chunkIDs``): the
    /// batches' lists reuse those strings (one String per chunk, not two).
    static func record(_ results: [BatchResult], checks: [BatchRootCheck.Outcome], plan: ChunkBatchPlan, reason: String, rootsFile: String,
                       chunkIDs: [Int] = [], manifest: inout BackupManifest) {
        let surveyed = manifest.chunkTables
        func name(of chunk: ChunkPathDetector.ChunkRow) -> String {
            if surveyed.count == chunkIDs.count, let index = Self.index(of: chunk.id, in: chunkIDs),
               surveyed[index].utf8.elementsEqual([chunk.schema.utf8, ".".utf8, chunk.name.utf8].joined()) {
                return surveyed[index]
            }
            return chunk.qualifiedName
        }
        let batchLists = results.filter { $0.dropped.count < $0.batch.chunks.count }.map {
            BackupManifest.ChunkPath.Batch(archive: $0.batch.archive, hypertable: $0.batch.hypertable, chunks: $0.dumped.map(name(of:)), rowCount: $0.rows,
                                           dataFile: $0.dataFile)
        }
        let dropped = results.flatMap(\.dropped)
        let droppedNames = Set(dropped.map(\.qualifiedName))
        let batchedNames = Set(plan.batched.map(\.qualifiedName))
        for index in manifest.hypertables.indices {
            let name = "\(manifest.hypertables[index].schema).\(manifest.hypertables[index].name)"
            guard batchedNames.contains(name) else {
                manifest.hypertables[index].dumpPath = "pg_dump"
                continue
            }
            let own = results.filter { $0.batch.hypertable == name }
            let figures = checks.first { $0.hypertable == name }?.total
                ?? own.flatMap(\.figures).reduce(ContentFigures(), +)
            manifest.hypertables[index].dumpPath = "chunk_batches"
            manifest.hypertables[index].rowCount = figures.rows
            manifest.hypertables[index].chunkCount -= own.reduce(0) { $0 + $1.dropped.count }
            if manifest.checksums {
                manifest.hypertables[index].contentHash = figures.contentHash
            }
        }
        if !droppedNames.isEmpty {
            manifest.chunkTables.removeAll { droppedNames.contains($0) }
        }
        manifest.warnings += results.flatMap(\.warnings)
        if !dropped.isEmpty {
            manifest.warnings.append("\(dropped.count) chunk(s) listed in the snapshot were dropped (retention) before they could be dumped; they are recorded in chunk_path.dropped_chunks and left out of the restore.")
        }
        let droppedAfterDump = checks.reduce(0) { $0 + $1.droppedAfterDump.count }
        if droppedAfterDump > 0 {
            manifest.warnings.append("\(droppedAfterDump) chunk(s) were dropped (retention) after their batch dumped them, before the check through the root counted them; they are in the archive and restored (chunk_path.root_checks).")
        }
        manifest.chunkPath = .init(
            reason: reason, lockBudget: plan.lockBudget, chunksPerBatch: plan.chunksPerBatch, rootsFile: rootsFile,
            batches: batchLists,
            fallbacks: plan.fallbacks,
            droppedChunks: dropped.map { chunk in
                .init(id: chunk.id, table: chunk.qualifiedName,
                      hypertable: plan.batched.first { $0.row.id == chunk.hypertableID }?.qualifiedName ?? "")
            },
            rootChecks: checks.map { check in
                let batchRows: Int64 = results.filter { $0.batch.hypertable == check.hypertable }.reduce(0) { $0 + $1.rows }
                return BackupManifest.ChunkPath.RootCheck(hypertable: check.hypertable, windows: check.windows, rootRows: check.root.rows,
                                                          batchRows: batchRows, droppedAfterDump: check.droppedAfterDump, sessions: check.sessions)
            },
            dataForm: plan.copiesData ? .copyFiles : nil)
    }
}

/// The hooks Backup.swift calls for the batched chunk path.
enum ChunkBatchRun {
    static let rootsFile = "hypertable-roots.json"

    struct Outcome: Sendable {
        var plan: ChunkBatchPlan
        var results: [BatchedDump.BatchResult]
        var checks: [BatchRootCheck.Outcome]
        var batchSeconds: Double
        var checkSeconds: Double
    }

    /// Writes the batched roots' definitions and dumps every batch on `snapshot`.
    static func dump(_ batchPlan: ChunkBatchPlan, request: Backup.Request, plan: Backup.Plan, snapshot: String, staging: String,
                     started: Date, onProgress: (@Sendable (Backup.Progress) -> Void)?) async throws -> Outcome {
        let roots = try JSONOutput.encode(batchPlan.batched.map(\.definition))
        do {
            try roots.write(toFile: staging + "/" + rootsFile, atomically: false, encoding: .utf8)
        } catch {
            throw FileSystem.ioError("write \(staging)/\(rootsFile)", underlying: error)
        }
        let psql = try await PostgresTools.locate("psql", minimumMajor: plan.server.majorVersion)
        let runner = BatchedDump(request: request, pgDump: plan.pgDump, psql: psql, plan: batchPlan, snapshot: snapshot, staging: staging) { done, total in
            onProgress?(.init(phase: "dumping chunk batches", tablesDone: done, tablesTotal: total,
                              bytesWritten: FileSystem.size(of: staging), fractionDone: Double(done) / Double(max(1, total)),
                              elapsed: Date().timeIntervalSince(started)))
        }
        let batchStart = Date()
        let results = try await runner.run()
        let checkStart = Date()
        // Still on the snapshot: count through the roots and compare, before anything is kept.
        onProgress?(.init(phase: "checking chunk batches through the roots", tablesDone: 0, tablesTotal: 0,
                          bytesWritten: FileSystem.size(of: staging), fractionDone: 1, elapsed: Date().timeIntervalSince(started)))
        let checks = try await BatchRootCheck.run(plan: batchPlan, results: results, settings: request.settings,
                                                  snapshot: snapshot, hash: request.checksums)
        return Outcome(plan: batchPlan, results: results, checks: checks, batchSeconds: checkStart.timeIntervalSince(batchStart),
                       checkSeconds: Date().timeIntervalSince(checkStart))
    }

    static func record(_ outcome: Outcome, reason: String, chunkIDs: [Int], manifest: inout BackupManifest) {
        BatchedDump.record(outcome.results, checks: outcome.checks, plan: outcome.plan, reason: reason, rootsFile: rootsFile,
                           chunkIDs: chunkIDs, manifest: &manifest)
    }

    /// The main archive and the batches' archives, whose tables of contents together must hold
    /// every chunk (the completeness check).
    static func archives(main: String, manifest: BackupManifest, directory: String) -> [String] {
        [main] + (manifest.chunkPath?.batches ?? []).map { directory + "/" + $0.archive }
    }

    /// The chunks whose rows are in the batches' data files, not in any archive's TABLE DATA.
    static func chunksInDataFiles(_ manifest: BackupManifest) -> [String] {
        (manifest.chunkPath?.batches ?? []).filter { $0.dataFile != nil }.flatMap(\.chunks)
    }

    /// The main archive's table of contents with the batches' added, for the completeness check.
    static func combinedContents(main: ArchiveContents, manifest: BackupManifest, directory: String,
                                 pgRestore: PostgresTool) async throws -> ArchiveContents {
        guard let path = manifest.chunkPath else { return main }
        var combined = main
        for batch in path.batches {
            combined.items += try await Archive.list(directory + "/" + batch.archive, pgRestore: pgRestore).items
        }
        return combined
    }
}

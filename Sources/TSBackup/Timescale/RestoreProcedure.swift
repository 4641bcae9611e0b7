import Foundation
import Synchronization

/// The phased pg_restore that TimescaleDB survives (reference: timescaledb.md section 7).
///
/// Plain `pg_restore -j` loads the catalog tables in parallel, their foreign keys reject rows
/// whose parents are not loaded yet, and every hypertable comes back empty while post_restore
/// still succeeds. So: pre-data serially, then the `_timescaledb_catalog`/`_timescaledb_config`
/// data and sequences serially in archive order, then everything else in parallel. Never
/// `--single-transaction` (thousands of chunks exhaust the lock table).
struct RestoreProcedure: Sendable {
    let archive: String
    let pgRestore: PostgresTool
    let settings: ConnectionSettings
    let jobs: Int
    let listDirectory: String
    /// Counts restored entries and loaded bytes from pg_restore's verbose output.
    let progress: RestoreProgressCounter?
    /// Called after every counted line (the caller throttles drawing).
    let onItem: (@Sendable () -> Void)?

    var catalogList: String { listDirectory + "/catalog.list" }
    var restList: String { listDirectory + "/rest.list" }

    init(archive: String, pgRestore: PostgresTool, settings: ConnectionSettings, jobs: Int,
         progress: RestoreProgressCounter? = nil, onItem: (@Sendable () -> Void)? = nil) throws {
        self.archive = archive
        self.pgRestore = pgRestore
        self.settings = settings
        self.jobs = max(1, jobs)
        self.progress = progress
        self.onItem = onItem
        // Owned (a lock held while it exists): a SIGKILLed run skips removeLists, and the next
        // restore's preflight removes the directory of a run that provably no longer runs.
        self.scratch = try OwnedScratchDirectory(prefix: Self.scratchPrefix)
        self.listDirectory = scratch.path
    }

    /// The list directories' names in $TMPDIR: `tsbackup-restore-<UUID>` (and `.lock` beside).
    static let scratchPrefix = "tsbackup-restore-"
    let scratch: OwnedScratchDirectory

    func removeLists() {
        scratch.remove()
    }

    static func isCatalogData(_ item: ArchiveContents.Item) -> Bool {
        (item.type == "TABLE DATA" || item.type == "SEQUENCE SET")
            && (item.schema == "_timescaledb_catalog" || item.schema == "_timescaledb_config")
    }

    func splitLists(_ contents: ArchiveContents) throws {
        let catalog = contents.items.filter(Self.isCatalogData).map(\.line)
        let rest = contents.items.filter { !Self.isCatalogData($0) }.map(\.line)
        try (catalog.joined(separator: "\n") + "\n").write(toFile: catalogList, atomically: true, encoding: .utf8)
        try (rest.joined(separator: "\n") + "\n").write(toFile: restList, atomically: true, encoding: .utf8)
    }

    /// Each phase returns pg_restore's warnings.
    func restorePreData() async throws -> [String] {
        try await pgRestore(["--section=pre-data"], phase: "pre-data", parallel: false)
    }

    /// Parallel chunk pre-data is opt-in (`TSBACKUP_PARALLEL_PREDATA=1`) until it is shown to
    /// pay: measured through tsbackup at 1,200 chunks of one hypertable, interleaved, medians of
    /// 3, it was slower than one serial pg_restore (2.45 s vs 1.84 s). Sessions on the target
    /// commit asynchronously, so the per-table commit flush that made a hand-run split 1.57x
    /// faster is already gone, and every chunk's CREATE TABLE ... INHERITS takes a
    /// self-conflicting lock on its hypertable root, which probably serializes the lists again.
    static func parallelPreDataRequested(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["TSBACKUP_PARALLEL_PREDATA"] == "1"
    }

    /// Fewer chunk tables than this and the pre-data stays one serial pg_restore: the split
    /// costs a TOC read per extra process and gains nothing on a small archive.
    static let parallelPreDataThreshold = 200

    /// Pre-data with the chunk tables' entries split out: `others` (schemas, the extension,
    /// hypertable roots, types, functions...) run first, serially; then `chunkLists` at once,
    /// each on its own connection. Each chunk's entries stay together and in archive order in
    /// one list (its TABLE before its DEFAULTs and comments); chunks are dealt round-robin in
    /// archive order, so every list holds chunks of every hypertable.
    struct PreDataSplit: Sendable {
        var others: [ArchiveContents.Item]
        var chunkLists: [[ArchiveContents.Item]]
        var chunkCount: Int
    }

    /// Whether `item` is pre-data of one of `chunks` ("schema.name"), and of which: its TABLE,
    /// a column DEFAULT, or a COMMENT on the table or one of its columns. Nothing else in
    /// pre-data names a chunk table (its CHECK constraints are part of its TABLE entry; indexes,
    /// constraints and foreign keys are post-data).
    static func chunkOwning(_ item: ArchiveContents.Item, chunks: Set<String>) -> String? {
        switch item.type {
        case "TABLE", "DEFAULT":
            let table = "\(item.schema).\(item.name)"
            return chunks.contains(table) ? table : nil
        case "COMMENT":
            // "COMMENT _timescaledb_internal TABLE _hyper_1_1_chunk owner", "... COLUMN _hyper_1_1_chunk.c owner"
            let words = item.line.split(separator: " ").map(String.init)
            guard let kind = words.firstIndex(where: { $0 == "TABLE" || $0 == "COLUMN" }), kind + 1 < words.count else { return nil }
            let target = words[kind] == "COLUMN" ? String(words[kind + 1].split(separator: ".").first ?? "") : words[kind + 1]
            let table = "\(item.schema).\(target)"
            return chunks.contains(table) ? table : nil
        default:
            return nil
        }
    }

    /// The split for parallel chunk pre-data, or nil when today's single serial pg_restore is
    /// the path: one job, or not more than `threshold` chunk tables in the archive.
    static func splitPreData(_ contents: ArchiveContents, chunkTables: [String], jobs: Int,
                             threshold: Int = parallelPreDataThreshold) -> PreDataSplit? {
        guard jobs > 1 else { return nil }
        let chunks = Set(chunkTables)
        var others: [ArchiveContents.Item] = []
        var listOf: [String: Int] = [:]
        var lists = Array(repeating: [ArchiveContents.Item](), count: jobs)
        for item in contents.items {
            guard let chunk = chunkOwning(item, chunks: chunks) else {
                others.append(item)
                continue
            }
            let index: Int
            if let known = listOf[chunk] {
                index = known
            } else {
                index = listOf.count % jobs
                listOf[chunk] = index
            }
            lists[index].append(item)
        }
        guard listOf.count > threshold else { return nil }
        return PreDataSplit(others: others, chunkLists: lists.filter { !$0.isEmpty }, chunkCount: listOf.count)
    }

    /// Step 1 of the split pre-data: everything but the chunk tables, one pg_restore.
    func restorePreData(others: [ArchiveContents.Item]) async throws -> [String] {
        let list = listDirectory + "/pre-data-others.list"
        try (others.map(\.line).joined(separator: "\n") + "\n").write(toFile: list, atomically: true, encoding: .utf8)
        return try await pgRestore(["--section=pre-data", "--use-list=\(list)"], phase: "pre-data except chunk tables")
    }

    /// Step 2 of the split pre-data: the chunk tables, one pg_restore per list, all at once. The
    /// roots they inherit from exist (step 1); the TimescaleDB catalog rows come later, as on
    /// the serial path, and restore mode is a database setting every new connection picks up.
    /// The first failing list fails the step with its pg_restore message; the others are
    /// cancelled (their processes terminated).
    func restoreChunkPreData(_ lists: [[ArchiveContents.Item]]) async throws -> [String] {
        var lists = lists
        if let chunk = TestSeams.misorderChunk() {
            for index in lists.indices {
                let moved = lists[index].filter { $0.type == "DEFAULT" && "\($0.schema).\($0.name)" == chunk }
                guard !moved.isEmpty else { continue }
                lists[index] = moved + lists[index].filter { !moved.contains($0) }
            }
        }
        var files: [String] = []
        for (index, items) in lists.enumerated() {
            let file = listDirectory + "/pre-data-chunks-\(index + 1).list"
            try (items.map(\.line).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
            files.append(file)
        }
        let count = files.count
        return try await withThrowingTaskGroup(of: [String].self) { group in
            for (index, file) in files.enumerated() {
                group.addTask {
                    try await self.pgRestore(["--section=pre-data", "--use-list=\(file)"],
                                             phase: "pre-data of chunk tables, list \(index + 1) of \(count)")
                }
            }
            var warnings: [String] = []
            while let finished = try await group.next() {
                warnings += finished
            }
            return warnings
        }
    }

    func restoreCatalogData() async throws -> [String] {
        try await pgRestore(["--use-list=\(catalogList)"], phase: "TimescaleDB catalog data", parallel: false)
    }

    func restoreRest() async throws -> [String] {
        let warnings = try await pgRestore(["--section=data", "--section=post-data", "--use-list=\(restList)", "--jobs=\(jobs)"],
                                           phase: "data and post-data", parallel: jobs > 1)
        progress?.complete(objects: progress?.objectsTotal ?? 0)
        return warnings
    }

    /// One pg_restore of this archive with `options`, returning its warnings; also used by
    /// ChunkBatchRestore for the batch archives.
    func pgRestore(_ options: [String], phase: String, parallel: Bool = false) async throws -> [String] {
        // The target is a throwaway database until verified; losing its last commits on a crash
        // costs a rerun, not data. The final WAL flush before success makes it durable.
        var environment = settings.childProcessEnvironment(options: "-c synchronous_commit=off")
        // The verbose lines are parsed: English whatever the machine's locale.
        environment["LC_MESSAGES"] = "C"
        let arguments = options + ["--verbose", "--dbname=\(settings.database)", "--exit-on-error", "--no-password", archive]
        let problems = Mutex<[String]>([])
        let tail = Mutex<[String]>([])
        let progress = self.progress
        let onItem = self.onItem
        let result = try await ProcessRunner.runStreamingErrors(pgRestore.path, arguments, environment: environment) { line in
            let events = PgRestoreLog.events(in: line)
            for event in events {
                if case .problem(let text) = event {
                    problems.withLock { $0.append(text) }
                } else {
                    progress?.apply(event, parallel: parallel)
                }
            }
            if events.isEmpty && line.hasPrefix("ERROR") {
                problems.withLock { $0.append(line) }
            } else if events.isEmpty && !line.hasPrefix("pg_restore: ") {
                // Continuation lines (DETAIL, the server's message) belong to the last problem.
                tail.withLock { $0 = Array(($0 + [line]).suffix(20)) }
                problems.withLock { if !$0.isEmpty { $0[$0.count - 1] += " " + line.trimmingCharacters(in: .whitespaces) } }
            }
            if !events.isEmpty { onItem?() }
        }
        let lines = problems.withLock { $0 }
        let errors = lines.filter { $0.contains("error:") || $0.contains("errors ignored on restore") || $0.hasPrefix("ERROR") }
        guard result.succeeded, errors.isEmpty else {
            let detail = (errors.isEmpty ? lines + tail.withLock { $0 } : errors).joined(separator: " ").singleLine(limit: 700)
            throw Self.failure(phase: phase, status: result.statusDescription, detail: detail, log: (lines + tail.withLock { $0 }).joined(separator: " "))
        }
        return lines.filter { $0.contains("warning:") }.map { "pg_restore (\(phase)): \($0)" }
    }

    /// pg_restore's failure as an error the user can act on. Two causes outside the archive are
    /// told apart from pg_restore's English messages (it runs with LC_MESSAGES=C): the target's
    /// disk filled up (the server's `could not extend file ... No space left on device`,
    /// SQLSTATE 53100), and the server went away under it (crashed, restarted, shut down).
    static func failure(phase: String, status: String, detail: String, log: String) -> TSBackupError {
        let shown = detail.isEmpty ? "no message" : detail
        if log.contains("No space left on device") || log.contains("could not extend file") || log.contains("could not write to file") {
            return TSBackupError(.failed, "The target server ran out of disk space while pg_restore (\(phase)) loaded the backup: \(shown) Free space on the target's data directory or tablespace (the new database needs about the backup's database size), then restore again.", sqlState: "53100")
        }
        let gone = ["server closed the connection unexpectedly", "terminating connection because of crash", "terminating connection due to administrator command",
                    "the database system is shutting down", "the database system is starting up", "the database system is in recovery mode", "no connection to the server"]
        if gone.contains(where: { log.contains($0) }) {
            return TSBackupError(.connection, "The target server went away while pg_restore (\(phase)) was running (it crashed, was restarted or shut down): \(shown) Check the server's log, then restore again.")
        }
        return TSBackupError(.failed, "pg_restore (\(phase)) failed (\(status)): \(shown)")
    }
}

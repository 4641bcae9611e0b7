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
    /// Set when the archive's data files are decompressed batch by batch (``ArchiveDataBatches``):
    /// the data then runs as serial pg_restores in lanes (``restoreBatched(list:options:phase:lanes:)``).
    let batches: ArchiveDataBatches?

    var catalogList: String { listDirectory + "/catalog.list" }
    var restList: String { listDirectory + "/rest.list" }
    /// With chunks' foreign keys split out (``splitLists(_:chunkTables:)``), `rest` holds all but
    /// the chunks' post-data; these two hold the chunks' indexes, constraints and triggers, and their keys.
    var chunkPostDataList: String { listDirectory + "/rest-chunk-post-data.list" }
    var chunkKeyList: String { listDirectory + "/rest-chunk-keys.list" }

    init(archive: String, pgRestore: PostgresTool, settings: ConnectionSettings, jobs: Int,
         progress: RestoreProgressCounter? = nil, onItem: (@Sendable () -> Void)? = nil, batches: ArchiveDataBatches? = nil) throws {
        self.archive = archive
        self.batches = batches
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
    /// A list directory an older tsbackup made without a lock file is removed once nothing in it
    /// changed for this long (a week): no lock can prove its restore gone, and the directory
    /// holds only pg_restore's lists (kilobytes), so waiting well past any restore's length costs nothing.
    static let legacyScratchAge: TimeInterval = 7 * 24 * 3600
    let scratch: OwnedScratchDirectory

    func removeLists() {
        scratch.remove()
    }

    static func isCatalogData(_ item: ArchiveContents.Item) -> Bool {
        (item.type == "TABLE DATA" || item.type == "SEQUENCE SET")
            && (item.schema == "_timescaledb_catalog" || item.schema == "_timescaledb_config")
    }

    /// Writes the lists of the phases. Returns how many chunk foreign keys run on a connection
    /// of their own beside the chunks' indexes (``restoreRest(chunkKeys:)``); 0 when they stay
    /// in pg_restore's own post-data (one job, or no chunk has a key).
    @discardableResult
    func splitLists(_ contents: ArchiveContents, chunkTables: [String] = []) throws -> Int {
        let catalog = contents.items.filter(Self.isCatalogData).map(\.line)
        let rest = contents.items.filter { !Self.isCatalogData($0) }
        try (catalog.joined(separator: "\n") + "\n").write(toFile: catalogList, atomically: true, encoding: .utf8)
        guard jobs > 1, !Self.chunkKeysInPostDataRequested(),
              let split = Self.splitChunkPostData(rest, chunkTables: chunkTables) else {
            try (rest.map(\.line).joined(separator: "\n") + "\n").write(toFile: restList, atomically: true, encoding: .utf8)
            return 0
        }
        try (split.main.map(\.line).joined(separator: "\n") + "\n").write(toFile: restList, atomically: true, encoding: .utf8)
        try (split.chunkPostData.map(\.line).joined(separator: "\n") + "\n").write(toFile: chunkPostDataList, atomically: true, encoding: .utf8)
        try (split.chunkKeys.map(\.line).joined(separator: "\n") + "\n").write(toFile: chunkKeyList, atomically: true, encoding: .utf8)
        return split.chunkKeys.count
    }

    /// `TSBACKUP_CHUNK_KEYS_IN_POST_DATA=1` leaves the chunks' foreign keys to pg_restore's own
    /// post-data scheduling, as before they ran beside the indexes: a way back if a server ever
    /// deadlocks or slows on the split, and the benchmark's "before" on the same build.
    static func chunkKeysInPostDataRequested(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["TSBACKUP_CHUNK_KEYS_IN_POST_DATA"] == "1"
    }

    /// The data and post-data entries cut in three for ``restoreRest(chunkKeys:)``.
    struct ChunkPostDataSplit: Sendable, Equatable {
        /// Data of every table, post-data of everything but the chunks (roots, plain tables,
        /// the referenced tables' unique keys the chunks' foreign keys need).
        var main: [ArchiveContents.Item]
        /// Indexes, constraints and triggers in the chunks' schemas.
        var chunkPostData: [ArchiveContents.Item]
        /// The chunk tables' foreign keys, in archive order.
        var chunkKeys: [ArchiveContents.Item]
    }

    /// Post-data entry types that belong to one table and lock only it (a foreign key also locks
    /// the table it references, and goes to `chunkKeys`).
    static let tablePostDataTypes: Set<String> = ["INDEX", "CONSTRAINT", "TRIGGER"]

    /// Splits out the chunks' post-data, or nil when no chunk table (`chunkTables`, "schema.name")
    /// has a foreign key entry: then nothing serialises on a referenced table and pg_restore's
    /// own scheduling stays. A FOREIGN KEY entry's name is its table's; an INDEX entry names
    /// only the index, which lives in its table's schema, so indexes in the chunks' schemas
    /// count as the chunks' (TimescaleDB keeps nothing else there that is dumped but its
    /// internal hypertables' tables, whose indexes may as well wait for all data, as these do).
    static func splitChunkPostData(_ rest: [ArchiveContents.Item], chunkTables: [String]) -> ChunkPostDataSplit? {
        let chunks = Set(chunkTables)
        let schemas = Set(chunkTables.compactMap { $0.split(separator: ".", maxSplits: 1).first.map(String.init) })
        var split = ChunkPostDataSplit(main: [], chunkPostData: [], chunkKeys: [])
        for item in rest {
            if item.type == "FK CONSTRAINT" && chunks.contains("\(item.schema).\(item.name)") {
                split.chunkKeys.append(item)
            } else if tablePostDataTypes.contains(item.type) && schemas.contains(item.schema) {
                split.chunkPostData.append(item)
            } else {
                split.main.append(item)
            }
        }
        return split.chunkKeys.isEmpty ? nil : split
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

    /// The data lanes' plans and their first batches' decompression, begun beside pre-data
    /// (``startFirstBatches()``), so that every lane's first pg_restore starts loading at once.
    struct FirstBatches: Sendable {
        /// Per list file: each lane's batches.
        let plans: [String: [[ArchiveDataBatches.Batch]]]
        /// Per list file: each lane's first batch being decompressed.
        let tasks: [String: [Task<Int64, any Error>]]

        /// Waits for every decompression (cancelled) before the scratch directory goes.
        func settle() async {
            for lanes in tasks.values {
                for task in lanes {
                    task.cancel()
                    _ = try? await task.value
                }
            }
        }
    }

    /// The batches of the catalog data (one lane) and of the data (`jobs` lanes), and each
    /// lane's first batch decompressed from now on, beside the steps that need no data (as the
    /// full scratch copy ran beside pre-data). nil without ``batches``. The caller settles it
    /// (``FirstBatches/settle()``) on failure.
    func startFirstBatches() throws -> FirstBatches? {
        guard let batches else { return nil }
        var plans: [String: [[ArchiveDataBatches.Batch]]] = [:]
        var tasks: [String: [Task<Int64, any Error>]] = [:]
        for (list, lanes) in [(catalogList, 1), (restList, jobs)] {
            let plan = try plan(list: list, lanes: lanes)
            plans[list] = plan
            tasks[list] = plan.map { parts in
                let ids = parts.first?.ids ?? []
                return Task { try await batches.decompress(ids) }
            }
        }
        return FirstBatches(plans: plans, tasks: tasks)
    }

    /// The lanes of `list` cut into batches (``ArchiveDataBatches/lanes(_:count:bytes:)``, ``ArchiveDataBatches/batches(_:budget:plainBytes:)``).
    func plan(list: String, lanes: Int) throws -> [[ArchiveDataBatches.Batch]] {
        guard let batches else { return [] }
        let lines = try String(contentsOfFile: list, encoding: .utf8).split(separator: "\n").map(String.init)
        let budget = ArchiveDataBatches.batchBytes()
        return ArchiveDataBatches.lanes(lines, count: lanes, bytes: batches.bytes(of:)).map {
            ArchiveDataBatches.batches($0, budget: budget, plainBytes: batches.plainBytes(of:))
        }
    }

    func restoreCatalogData(first: FirstBatches? = nil) async throws -> [String] {
        if batches != nil {
            // Archive order, one connection: the catalog's foreign keys need parents first.
            return try await restoreBatched(list: catalogList, options: [], phase: "TimescaleDB catalog data", lanes: 1, first: first)
        }
        return try await pgRestore(["--use-list=\(catalogList)"], phase: "TimescaleDB catalog data", parallel: false)
    }

    /// The entries of `list` restored by serial pg_restores, at most `lanes` at once, each lane a
    /// run of batches (``ArchiveDataBatches``): the next batch's data files are decompressed
    /// while pg_restore loads the current one, whose files are removed once it succeeded. A data
    /// file that does not decompress fails the step naming it; a failing pg_restore fails it
    /// with its own message. A serial pg_restore with `--use-list` restores in the list's order.
    func restoreBatched(list: String, options: [String], phase: String, lanes: Int, first: FirstBatches? = nil) async throws -> [String] {
        guard let batches else { throw TSBackupError(.failed, "pg_restore (\(phase)): no data batches") }
        // The plan whose first batches were begun beside pre-data, or a new one.
        let started = first?.plans[list].flatMap { plan in first?.tasks[list].map { (plan, $0) } }
        let plan = try started?.0 ?? self.plan(list: list, lanes: lanes)
        let name = URL(fileURLWithPath: list).deletingPathExtension().lastPathComponent
        let count = plan.count
        return try await withThrowingTaskGroup(of: [String].self) { group in
            for (index, parts) in plan.enumerated() {
                let lanePhase = count > 1 ? "\(phase), lane \(index + 1) of \(count)" : phase
                let prefix = listDirectory + "/\(name)-lane-\(index + 1)"
                let head = started.flatMap { index < $0.1.count ? $0.1[index] : nil }
                group.addTask {
                    try await self.restoreLane(parts, listPrefix: prefix, options: options, phase: lanePhase, batches: batches, first: head)
                }
            }
            var warnings: [String] = []
            while let finished = try await group.next() { warnings += finished }
            return warnings
        }
    }

    /// One lane: its batches in order, each decompressed ahead of its pg_restore.
    private func restoreLane(_ parts: [ArchiveDataBatches.Batch], listPrefix: String, options: [String], phase: String,
                             batches: ArchiveDataBatches, first: Task<Int64, any Error>? = nil) async throws -> [String] {
        var warnings: [String] = []
        var ready: Task<Int64, any Error>? = first ?? parts.first.map { first in Task { try await batches.decompress(first.ids) } }
        for (index, part) in parts.enumerated() {
            let current = ready
            ready = index + 1 < parts.count ? { let next = parts[index + 1]; return Task { try await batches.decompress(next.ids) } }() : nil
            do {
                _ = try await current?.value
                let file = listPrefix + "-\(index + 1).list"
                try (part.lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
                let batchPhase = parts.count > 1 ? "\(phase), batch \(index + 1) of \(parts.count)" : phase
                warnings += try await pgRestore(options + ["--use-list=\(file)"], phase: batchPhase, parallel: false)
            } catch {
                // Nothing writes into the scratch directory once the step has failed.
                ready?.cancel()
                _ = try? await ready?.value
                throw error
            }
            batches.remove(part.ids)
        }
        return warnings
    }

    /// Data and post-data on `jobs` connections. With `chunkKeys` > 0 (``splitLists(_:chunkTables:)``)
    /// in two steps: first every table's data and the post-data of everything but the chunks;
    /// then the chunks' indexes on `jobs` connections and, beside them, the chunks' foreign keys
    /// on one connection of their own.
    ///
    /// Why: every chunk's key locks the table it references in SHARE ROW EXCLUSIVE mode, which
    /// conflicts with itself, so pg_restore's scheduler never runs two of them at once and left
    /// them for the end, one connection working while the others sat idle (at 5,040 chunks
    /// about 65 s of a 225 s phase). A key needs its chunk's rows and the referenced table's
    /// unique key (both in the first step), not the chunk's indexes, so the keys can run
    /// beside the index builds. The keys are still pg_restore's own statements, validated as
    /// they are added: the end state is the serial procedure's.
    ///
    /// With the data decompressed batch by batch (``batches``), the data runs first, in `jobs`
    /// serial lanes, then the post-data as above: pg_restore -j opens data files in an order
    /// nobody can predict, so it cannot be told which files to have ready.
    func restoreRest(chunkKeys: Int = 0, first: FirstBatches? = nil) async throws -> [String] {
        var warnings: [String]
        if batches != nil {
            warnings = try await restoreBatched(list: restList, options: ["--section=data"], phase: "data", lanes: jobs, first: first)
            warnings += try await pgRestore(["--section=post-data", "--use-list=\(restList)", "--jobs=\(jobs)"],
                                            phase: chunkKeys > 0 ? "post-data except the chunks' indexes and keys" : "post-data",
                                            parallel: jobs > 1)
        } else {
            warnings = try await pgRestore(["--section=data", "--section=post-data", "--use-list=\(restList)", "--jobs=\(jobs)"],
                                           phase: chunkKeys > 0 ? "data and post-data except the chunks' indexes and keys" : "data and post-data",
                                           parallel: jobs > 1)
        }
        guard chunkKeys > 0 else {
            progress?.complete(objects: progress?.objectsTotal ?? 0)
            return warnings
        }
        let keyList = chunkKeyList
        async let keys = pgRestore(["--section=post-data", "--use-list=\(keyList)"],
                                   phase: "the chunks' \(chunkKeys) foreign keys", parallel: false)
        let indexes = try await pgRestore(["--section=post-data", "--use-list=\(chunkPostDataList)", "--jobs=\(jobs)"],
                                          phase: "the chunks' indexes and constraints", parallel: jobs > 1)
        warnings += indexes
        warnings += try await keys
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

import Foundation
import PostgresNIO

/// Rows of a table or a set of chunks in a snapshot: the count and the two sums of the content
/// hash (see ``TableContent/measure``). Sums are additive, so figures of chunks add up to those
/// of their hypertable; 128-bit integers hold them exactly (each term is a signed 64-bit value).
struct ContentFigures: Sendable, Equatable {
    var rows: Int64 = 0
    var high: Int128 = 0
    var low: Int128 = 0

    static func + (a: ContentFigures, b: ContentFigures) -> ContentFigures {
        ContentFigures(rows: a.rows + b.rows, high: a.high + b.high, low: a.low + b.low)
    }

    /// Reads the sums as PostgreSQL prints a `numeric` without scale.
    init(rows: Int64 = 0, high: Int128 = 0, low: Int128 = 0) {
        self.rows = rows
        self.high = high
        self.low = low
    }

    init(rows: Int64, highText: String, lowText: String) throws {
        guard let high = Int128(highText), let low = Int128(lowText) else {
            throw TSBackupError(.failed, "tsbackup could not read a content hash sum (\(highText), \(lowText)). This is a bug in tsbackup; please report it.")
        }
        self.init(rows: rows, high: high, low: low)
    }

    /// The manifest's `content_hash`, the same text ``TableContent/measure`` hashes.
    var contentHash: String { "v1:" + FileSystem.sha256(of: Data("\(rows):\(high):\(low)".utf8)) }
}

/// The check of a batched backup that does not share the batches' view of the chunks: on the
/// backup's snapshot, each batched hypertable's rows are counted (and with `--checksums` hashed)
/// through its **root**, where TimescaleDB's planner finds the chunks, and compared chunk by
/// chunk with what the batches dumped. A chunk left out of every batch, or a batch whose count
/// differs from the root's for a chunk, fails the backup naming the hypertable, the window and
/// the chunk.
///
/// A query on the root locks every chunk it plans over, so the root is read in windows of the
/// primary dimension (``RootWindows``), each of at most the chunks a batch may lock, each in its
/// own transaction that imports the snapshot: its locks are released at commit.
///
/// Retention: a chunk the batches found gone is in no batch and, gone, not seen through the root
/// either. A chunk dropped after its batch dumped it but before its window was counted is in the
/// archive but no longer under the root: the only difference allowed, it is checked to be gone
/// (`to_regclass`), and its dumped figures are added to the root's, since the archive holds it.
enum BatchRootCheck {
    struct Outcome: Sendable {
        var hypertable: String
        var windows: Int
        /// What the root holds in the snapshot, over all windows.
        var root: ContentFigures
        /// Chunks dumped by a batch and dropped (retention) before their window was counted.
        var droppedAfterDump: [String]
        /// The archive's rows: the root's plus those of `droppedAfterDump`.
        var total: ContentFigures
        /// Server sessions the hypertable's windows ran on (see ``RotatingSessions``).
        var sessions = 1
    }

    /// Checks every batched hypertable of `plan` against `results`; throws a `.failed` error on
    /// the first window whose chunks disagree.
    static func run(plan: ChunkBatchPlan, results: [BatchedDump.BatchResult], settings: ConnectionSettings,
                    snapshot: String, hash: Bool) async throws -> [Outcome] {
        try await RotatingSessions.with(settings, chunksPerSession: TestSeams.rootCheckChunksPerSession() ?? RotatingSessions.chunksPerSession) { sessions in
            var outcomes: [Outcome] = []
            for table in plan.batched {
                var dumped: [Int: ContentFigures] = [:]
                for result in results where result.batch.hypertable == table.qualifiedName {
                    for (id, figures) in result.dumpedFigures where dumped[id] == nil { dumped[id] = figures }
                }
                let limit = ChunkBatchPlan.chunksPerBatch(lockBudget: plan.lockBudget, jobs: 1, locksPerChunk: 2 + table.indexCount)
                outcomes.append(try await check(table, dumped: dumped, limit: limit, sessions: &sessions, snapshot: snapshot, hash: hash))
            }
            return outcomes
        }
    }


    /// `dumped`: the batches' figures of `table`'s chunks, by chunk id.
    static func check(_ table: ChunkBatchPlan.Hypertable, dumped: [Int: ContentFigures], limit: Int,
                      sessions: inout RotatingSessions, snapshot: String, hash: Bool) async throws -> Outcome {
        let name = table.qualifiedName
        let openedBefore = sessions.opened
        var session = try await sessions.session(planning: 0)
        let predicates = try await inSnapshot(session, snapshot) {
            try await RootWindows.predicates(session, schema: table.row.schema, name: table.row.name, limit: limit)
        }
        guard let windows = predicates ?? (table.chunks.count <= limit ? ["true"] : nil) else {
            throw TSBackupError(.failed, "The rows of hypertable \(name) cannot be counted through its root in windows of at most \(limit) chunks (its time column's type is not one tsbackup can cut into ranges), so the chunk batches' copy cannot be checked independently. The backup was not kept; raise max_locks_per_transaction so one pg_dump can lock every table, and run it again.")
        }
        let qualified = "\(quoteIdentifier(table.row.schema)).\(quoteIdentifier(table.row.name))"
        var root = ContentFigures()
        var seen: Set<Int> = []
        // The root names each row's table; the batches' figures are by chunk id.
        let ids = Dictionary(table.chunks.map { ($0.qualifiedName, $0.id) }, uniquingKeysWith: { a, _ in a })
        for (index, predicate) in windows.enumerated() {
            session = try await sessions.session(planning: windows.count == 1 ? table.chunks.count : limit)
            let perChunk = try await inSnapshot(session, snapshot) {
                try await session.rows(PostgresQuery(unsafeSQL: query(qualified, predicate: predicate, hash: hash)),
                                       as: (String, Int64, String, String).self,
                                       purpose: "counting the rows of \(name) through its root, window \(index + 1) of \(windows.count)")
            }
            var problems: [String] = []
            for (chunk, rows, high, low) in perChunk {
                let figures = try ContentFigures(rows: rows, highText: high, lowText: low)
                root = root + figures
                let id = ids[chunk]
                if let id { seen.insert(id) }
                guard let copied = id.flatMap({ dumped[$0] }) else {
                    problems.append("chunk \(chunk) holds \(rows) row(s) through the root but is in no chunk batch")
                    continue
                }
                if copied.rows != rows {
                    problems.append("chunk \(chunk) holds \(rows) row(s) through the root, its batch counted \(copied.rows)")
                } else if copied != figures {
                    problems.append("chunk \(chunk) has \(rows) row(s) both ways but their content hashes differ")
                }
            }
            if !problems.isEmpty {
                throw mismatch(name, window: index + 1, of: windows.count, predicate: predicate, problems: problems)
            }
        }
        // Chunks with rows that the root did not show: only chunks dropped since are explained.
        let unseenIDs = dumped.filter { $0.value.rows > 0 && !seen.contains($0.key) }.map(\.key)
        let rowsByID = unseenIDs.isEmpty ? [:] : Dictionary(table.chunks.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let unseenByName = Dictionary(unseenIDs.map { (rowsByID[$0]?.qualifiedName ?? "chunk id \($0)", $0) }, uniquingKeysWith: { a, _ in a })
        let unseen = unseenByName.keys.sorted()
        var droppedAfterDump: [String] = []
        if !unseen.isEmpty {
            let names = unseen.map { chunk in
                unseenByName[chunk].flatMap { rowsByID[$0] }.map { "\(quoteIdentifier($0.schema)).\(quoteIdentifier($0.name))" } ?? chunk
            }
            let present = Set(try await session.values(
                "SELECT t FROM unnest(\(names)::text[]) t WHERE to_regclass(t) IS NOT NULL", as: String.self,
                purpose: "checking which chunks of \(name) were dropped after being dumped"))
            let stillThere = zip(unseen, names).filter { present.contains($0.1) }.map(\.0)
            if !stillThere.isEmpty {
                throw mismatch(name, window: nil, of: windows.count, predicate: nil,
                               problems: stillThere.map { "chunk \($0) was dumped with \(unseenByName[$0].flatMap { dumped[$0] }?.rows ?? 0) row(s) but the root shows none of them in any window, and the chunk still exists" })
            }
            droppedAfterDump = unseen
        }
        let total = droppedAfterDump.reduce(root) { $0 + (unseenByName[$1].flatMap { dumped[$0] } ?? ContentFigures()) }
        return Outcome(hypertable: name, windows: windows.count, root: root, droppedAfterDump: droppedAfterDump, total: total,
                       sessions: sessions.opened - openedBefore + 1)
    }

    /// Per chunk (by the table each row comes from, found by the planner through the root):
    /// `schema.name`, rows and the hash sums (zeros without `hash`).
    static func query(_ qualified: String, predicate: String, hash: Bool) -> String {
        let figures = hash
            ? """
              SELECT o, count(*) AS n, sum(('x' || substr(h, 1, 16))::bit(64)::int8::numeric) AS hi,
                     sum(('x' || substr(h, 17, 16))::bit(64)::int8::numeric) AS lo
              FROM (SELECT t.tableoid AS o, md5(t::text) AS h FROM \(qualified) t WHERE \(predicate)) x GROUP BY o
              """
            : "SELECT t.tableoid AS o, count(*) AS n, 0::numeric AS hi, 0::numeric AS lo FROM \(qualified) t WHERE \(predicate) GROUP BY 1"
        return """
            SELECT coalesce(format('%s.%s', n.nspname, c.relname), r.o::text), r.n, r.hi::text, r.lo::text
            FROM (\(figures)) r LEFT JOIN pg_class c ON c.oid = r.o LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
            """
    }

    /// Runs `body` in a transaction of its own on the backup's snapshot.
    static func inSnapshot<T>(_ session: DatabaseSession, _ snapshot: String, _ body: () async throws -> T) async throws -> T {
        try await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        do {
            try await session.execute("SET TRANSACTION SNAPSHOT \(SQLLiteral.quote(snapshot))", purpose: "importing the backup's snapshot")
            let result = try await body()
            try await session.execute("COMMIT")
            return result
        } catch {
            _ = try? await session.execute("ROLLBACK")
            throw error
        }
    }

    static func mismatch(_ hypertable: String, window: Int?, of windows: Int, predicate: String?, problems: [String]) -> TSBackupError {
        let place = window.map { "window \($0) of \(windows) (\(predicate ?? "true"))" } ?? "its \(windows) window(s)"
        let listed = problems.prefix(5).joined(separator: "; ") + (problems.count > 5 ? "; and \(problems.count - 5) more" : "")
        return TSBackupError(.failed, "The rows of hypertable \(hypertable) counted through its root on the backup's snapshot do not match what the chunk batches dumped, in \(place): \(listed). The backup was not kept (a chunk would be missing or incomplete in it); run it again, and report this to the tsbackup developers if it repeats.")
    }
}

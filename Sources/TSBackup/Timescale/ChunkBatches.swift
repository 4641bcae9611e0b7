import Foundation
import PostgresNIO

/// Which hypertables the batched chunk path may dump, read from TimescaleDB's catalog.
///
/// pg_dump locks every table it dumps in one transaction, and `LOCK TABLE` on a hypertable's root
/// also locks every chunk (inheritance children), so past `max_locks_per_transaction` x slots a
/// single pg_dump fails with "out of shared memory". The batched path leaves the root and the
/// chunks of a hypertable out of the main pg_dump, writes the root's definition itself
/// (``RootDefinition``), and dumps the chunks in batches of separate pg_dump runs that import the
/// coordinator's snapshot. It only takes hypertables whose chunks are plain tables holding all of
/// their rows; anything else (compression, continuous aggregates, tiered/foreign chunks, chunk
/// states it does not know) stays with the main pg_dump, as before.
public enum ChunkPathDetector {
    /// One row of `_timescaledb_catalog.hypertable`, with what the detector needs.
    public struct HypertableRow: Sendable, Equatable {
        public var id: Int
        public var schema: String
        public var name: String
        /// 0 none, 1 compression enabled, 2 this is an internal compressed hypertable.
        public var compressionState: Int
        public var compressedHypertableID: Int?
        /// Named by `continuous_agg` as raw or materialization hypertable.
        public var continuousAggregate: Bool

        public init(id: Int, schema: String, name: String, compressionState: Int = 0, compressedHypertableID: Int? = nil, continuousAggregate: Bool = false) {
            self.id = id
            self.schema = schema
            self.name = name
            self.compressionState = compressionState
            self.compressedHypertableID = compressedHypertableID
            self.continuousAggregate = continuousAggregate
        }
    }

    /// One row of `_timescaledb_catalog.chunk`, with the table's `relkind` (nil when no table).
    public struct ChunkRow: Sendable, Equatable {
        public var id: Int
        public var hypertableID: Int
        public var schema: String
        public var name: String
        public var compressedChunkID: Int?
        /// Bit set (chunk.h): 1 compressed, 2 unordered, 4 frozen, 8 partial; more may come.
        public var status: Int
        public var osmChunk: Bool
        public var dropped: Bool
        public var relkind: String?

        public init(id: Int, hypertableID: Int, schema: String, name: String, compressedChunkID: Int? = nil,
                    status: Int = 0, osmChunk: Bool = false, dropped: Bool = false, relkind: String? = "r") {
            self.id = id
            self.hypertableID = hypertableID
            self.schema = schema
            self.name = name
            self.compressedChunkID = compressedChunkID
            self.status = status
            self.osmChunk = osmChunk
            self.dropped = dropped
            self.relkind = relkind
        }

        public var qualifiedName: String { "\(schema).\(name)" }
    }

    /// Why a hypertable stays with the main pg_dump; nil when the batched path handles it.
    public static func fallbackReason(_ hypertable: HypertableRow, chunks: [ChunkRow], all: [HypertableRow]) -> String? {
        if hypertable.compressionState == 2 || all.contains(where: { $0.compressedHypertableID == hypertable.id }) {
            return "internal hypertable holding compressed chunks"
        }
        if hypertable.compressionState != 0 || hypertable.compressedHypertableID != nil {
            return "compression is enabled"
        }
        if hypertable.continuousAggregate {
            return "continuous aggregate (raw or materialization hypertable)"
        }
        if let chunk = chunks.first(where: { $0.osmChunk }) {
            return "tiered (OSM) chunk \(chunk.qualifiedName)"
        }
        if let chunk = chunks.first(where: { $0.compressedChunkID != nil || $0.status & 1 != 0 }) {
            return "compressed chunk \(chunk.qualifiedName)"
        }
        if let chunk = chunks.first(where: { $0.status != 0 }) {
            return "chunk \(chunk.qualifiedName) has status \(chunk.status) (not a plain chunk)"
        }
        if let chunk = chunks.first(where: { $0.dropped }) {
            return "chunk \(chunk.qualifiedName) is dropped but kept in the catalog"
        }
        if let chunk = chunks.first(where: { $0.relkind != "r" }) {
            return chunk.relkind == "f" ? "foreign chunk \(chunk.qualifiedName)" : "chunk \(chunk.qualifiedName) is not a plain table"
        }
        return nil
    }

    /// Chunk rows read per query: a listing of 50,000 chunks read whole was held twice (as
    /// PostgresNIO's rows and decoded) at its peak; pages of this size bound that.
    static let listingPage: Int64 = 5_000

    /// Reads the catalog in the session's transaction: every chunk, in pages, grouped by
    /// hypertable id (each group in id order) as it comes, so no second copy of the rows is made.
    static func read(_ session: DatabaseSession) async throws -> (hypertables: [HypertableRow], chunks: [Int: [ChunkRow]]) {
        let hypertables = try await readHypertables(session)
        TestSeams.countChunkListing()
        var chunks: [Int: [ChunkRow]] = [:]
        // Every chunk's schema is one of a few ("_timescaledb_internal" mostly): one String each,
        // not one per row.
        var schemas: [String: String] = [:]
        var after: Int64 = -1
        while true {
            let page = try await session.rows(
                """
                SELECT c.id::int8, c.hypertable_id::int8, c.schema_name::text, c.table_name::text, c.compressed_chunk_id::int8,
                       c.status::int8, c.osm_chunk, c.dropped,
                       (SELECT r.relkind::text FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
                        WHERE n.nspname = c.schema_name AND r.relname = c.table_name)
                FROM _timescaledb_catalog.chunk c WHERE c.id > \(after) ORDER BY c.id LIMIT \(listingPage)
                """, as: (Int64, Int64, String, String, Int64?, Int64, Bool, Bool, String?).self, purpose: "reading TimescaleDB's chunk catalog")
            for row in page {
                let schema: String
                if let known = schemas[row.2] { schema = known } else { schemas[row.2] = row.2; schema = row.2 }
                chunks[Int(row.1), default: []].append(ChunkRow(id: Int(row.0), hypertableID: Int(row.1), schema: schema, name: row.3,
                                       compressedChunkID: row.4.map { Int($0) }, status: Int(row.5), osmChunk: row.6,
                                       dropped: row.7, relkind: row.8))
            }
            guard Int64(page.count) == listingPage, let last = page.last else { break }
            after = last.0
        }
        return (hypertables, chunks)
    }

    static func readHypertables(_ session: DatabaseSession) async throws -> [HypertableRow] {
        try await session.rows(
            """
            SELECT h.id::int8, h.schema_name::text, h.table_name::text, h.compression_state::int8, h.compressed_hypertable_id::int8,
                   EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a WHERE a.mat_hypertable_id = h.id OR a.raw_hypertable_id = h.id)
            FROM _timescaledb_catalog.hypertable h ORDER BY h.id
            """, as: (Int64, String, String, Int64, Int64?, Bool).self, purpose: "reading TimescaleDB's hypertable catalog"
        ).map { (row: (Int64, String, String, Int64, Int64?, Bool)) -> HypertableRow in
            let compressed: Int? = row.4.map { Int($0) }
            return HypertableRow(id: Int(row.0), schema: row.1, name: row.2, compressionState: Int(row.3),
                                 compressedHypertableID: compressed, continuousAggregate: row.5)
        }
    }

    /// What the preflight's decision needs without listing every chunk: the number of chunks of
    /// each hypertable, and only the chunks that are not plain tables (any of the marks
    /// ``fallbackReason(_:chunks:all:)`` looks for), in id order. A plain chunk matches none of
    /// its conditions, so the reason found among these is the one found among all chunks.
    static func readSummary(_ session: DatabaseSession) async throws -> (hypertables: [HypertableRow], unusual: [ChunkRow], counts: [Int: Int]) {
        let hypertables = try await readHypertables(session)
        let counts = Dictionary(try await session.rows(
            "SELECT hypertable_id::int8, count(*) FROM _timescaledb_catalog.chunk GROUP BY 1", as: (Int64, Int64).self,
            purpose: "counting the chunks of each hypertable"
        ).map { (Int($0.0), Int($0.1)) }, uniquingKeysWith: { a, _ in a })
        let unusual = try await session.rows(
            """
            SELECT * FROM (
                SELECT c.id::int8, c.hypertable_id::int8, c.schema_name::text, c.table_name::text, c.compressed_chunk_id::int8,
                       c.status::int8, c.osm_chunk, c.dropped,
                       (SELECT r.relkind::text FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
                        WHERE n.nspname = c.schema_name AND r.relname = c.table_name) AS relkind
                FROM _timescaledb_catalog.chunk c) x
            WHERE x.osm_chunk OR x.compressed_chunk_id IS NOT NULL OR x.status <> 0 OR x.dropped OR x.relkind IS DISTINCT FROM 'r'
            ORDER BY x.id
            """, as: (Int64, Int64, String, String, Int64?, Int64, Bool, Bool, String?).self, purpose: "reading TimescaleDB's chunk catalog"
        ).map { (row: (Int64, Int64, String, String, Int64?, Int64, Bool, Bool, String?)) -> ChunkRow in
            let compressed: Int? = row.4.map { Int($0) }
            return ChunkRow(id: Int(row.0), hypertableID: Int(row.1), schema: row.2, name: row.3, compressedChunkID: compressed,
                            status: Int(row.5), osmChunk: row.6, dropped: row.7, relkind: row.8)
        }
        return (hypertables, unusual, counts)
    }
}

/// The plan of a batched backup: which hypertables take the chunk path, in which batches.
struct ChunkBatchPlan: Sendable {
    struct Hypertable: Sendable {
        var row: ChunkPathDetector.HypertableRow
        /// Its chunks in id order; empty in a plan made for the preflight's decision only
        /// (``make(session:lockBudget:jobs:listing:)`` with `.summary`).
        var chunks: [ChunkPathDetector.ChunkRow]
        /// Chunks in the catalog (`chunks.count` when they are listed).
        var chunkCount: Int
        var definition: RootDefinition
        /// `--exclude-table` patterns that cover exactly this hypertable's root and chunks.
        var exclusions: [String]
        /// Indexes of the root (each chunk has a copy): a read of a chunk locks them too.
        var indexCount = 0
        var qualifiedName: String { "\(row.schema).\(row.name)" }
    }

    struct Batch: Sendable {
        var number: Int
        var hypertable: String
        /// A slice of its hypertable's `chunks`, sharing their storage rather than copying rows.
        var chunks: ArraySlice<ChunkPathDetector.ChunkRow>
        var archive: String { String(format: "chunks/batch-%05d.pgdump", number) }
        /// The chunks' rows when the plan ``ChunkBatchPlan/copiesData``.
        var dataFile: String { String(format: "chunks/batch-%05d.copy.zst", number) }
    }

    var batched: [Hypertable]
    var fallbacks: [BackupManifest.ChunkPath.Fallback]
    var batches: [Batch]
    /// `--exclude-table` options for the main pg_dump: each batched root and its chunks (see
    /// ``exclusions(for:chunks:session:)``).
    var mainExclusions: [String]
    var chunksPerBatch: Int
    var lockBudget: Int
    /// The batches' pg_dump writes only the chunks' DDL (`--schema-only`) and tsbackup copies
    /// their rows into data files (``BackupManifest/ChunkPath/DataForm/copyFiles``); false in the
    /// old form, where each batch's archive holds its chunks' rows.
    var copiesData = true

    /// Relations the main pg_dump still locks: all minus the batched roots and chunks.
    func mainRelations(total: Int) -> Int {
        total - batched.reduce(0) { $0 + 1 + $1.chunkCount }
    }

    /// Chunks per batch: half the lock budget shared by the `jobs` batches running at once, which
    /// leaves room for other sessions and the batches' catalog locks, divided by the locks a
    /// chunk costs at once (``locksPerChunk(indexes:copiesData:)``); 5 to `cap`.
    static func chunksPerBatch(lockBudget: Int, jobs: Int, locksPerChunk: Int = 2, cap: Int = 1000) -> Int {
        let share = lockBudget / 2 / (max(1, locksPerChunk) * max(1, jobs))
        return min(cap, max(5, share))
    }

    /// Locks a batch holds at once per chunk. Old form: the batch's session locks the chunk (so
    /// retention cannot drop it under pg_dump) and, by planning its row count, each of its
    /// indexes; pg_dump locks it once more. Data files (``BatchedDump``): one, taken in turn by
    /// psql's COPY (a table's COPY is not planned: no index locks) and by pg_dump `--schema-only`
    /// (tables only); with `--checksums` the hashing runs first, in transactions of a share each.
    static func locksPerChunk(indexes: Int, copiesData: Bool) -> Int {
        copiesData ? 1 : 2 + indexes
    }

    /// Most chunks a batch of the data-file form names on pg_dump's command line (about 60
    /// bytes each), at PostgreSQL's default lock settings and two jobs 1,600 are allowed.
    static let copyFormCap = 2000

    /// How much of the chunk catalog a plan reads: every chunk (the plan the backup runs, read
    /// once, in the snapshot), or only counts and unusual chunks (the preflight's decision,
    /// which needs no chunk names; ``ChunkPathDetector/readSummary(_:)``).
    enum Listing { case full, summary }

    /// Decides the path of each hypertable and cuts the batched ones' chunks into batches, each
    /// of one hypertable so its row count and hash add up per hypertable.
    static func make(session: DatabaseSession, lockBudget: Int, jobs: Int, listing: Listing = .full,
                     copiesData: Bool = !TestSeams.chunkDataInArchives()) async throws -> ChunkBatchPlan {
        let hypertables: [ChunkPathDetector.HypertableRow]
        var byHypertable: [Int: [ChunkPathDetector.ChunkRow]]
        var counts: [Int: Int]
        switch listing {
        case .full:
            (hypertables, byHypertable) = try await ChunkPathDetector.read(session)
            counts = byHypertable.mapValues(\.count)
        case .summary:
            let read = try await ChunkPathDetector.readSummary(session)
            hypertables = read.hypertables
            byHypertable = Dictionary(grouping: read.unusual, by: \.hypertableID)
            counts = read.counts
        }
        var batched: [Hypertable] = []
        var fallbacks: [BackupManifest.ChunkPath.Fallback] = []
        for row in hypertables {
            // Taken out of the dictionary so the plan holds the only copy of the rows.
            let own = byHypertable.removeValue(forKey: row.id) ?? []
            if let reason = ChunkPathDetector.fallbackReason(row, chunks: own, all: hypertables) {
                fallbacks.append(.init(hypertable: "\(row.schema).\(row.name)", reason: reason))
                continue
            }
            switch try await RootDefinition.read(session, schema: row.schema, name: row.name) {
            case .unsupported(let reason):
                fallbacks.append(.init(hypertable: "\(row.schema).\(row.name)", reason: reason))
            case .supported(let definition):
                let found: [String]?
                if listing == .full {
                    found = try await exclusions(for: row, chunks: own, session: session)
                } else if (counts[row.id] ?? 0) == 0 {
                    found = []
                } else {
                    found = try await patternIsOwn(row, session: session) ? [] : nil
                }
                guard let exclusions = found else {
                    fallbacks.append(.init(hypertable: "\(row.schema).\(row.name)", reason: "its chunks' names cannot be told apart from other tables"))
                    continue
                }
                batched.append(.init(row: row, chunks: own, chunkCount: counts[row.id] ?? 0, definition: definition, exclusions: exclusions))
            }
        }
        var batches: [Batch] = []
        var smallest = copiesData ? copyFormCap : 1000
        for index in batched.indices {
            let table = batched[index]
            // Chunks carry copies of the root's indexes, which the batch's count locks too.
            let indexes = try await session.value(
                "SELECT count(*) FROM pg_index WHERE indrelid = format('%I.%I', \(table.row.schema)::text, \(table.row.name)::text)::regclass",
                as: Int64.self, purpose: "counting the indexes of \(table.qualifiedName)")
            batched[index].indexCount = Int(indexes)
            let size = chunksPerBatch(lockBudget: lockBudget, jobs: jobs, locksPerChunk: locksPerChunk(indexes: Int(indexes), copiesData: copiesData),
                                      cap: copiesData ? copyFormCap : 1000)
            smallest = min(smallest, size)
            var start = 0
            while listing == .full, start < table.chunks.count {
                let slice = table.chunks[start..<min(start + size, table.chunks.count)]
                batches.append(.init(number: batches.count + 1, hypertable: table.qualifiedName, chunks: slice))
                start += size
            }
        }
        if let leftOut = TestSeams.leaveOutChunk() {
            batches = leaveOut(leftOut, from: batches)
        }
        return ChunkBatchPlan(batched: batched, fallbacks: fallbacks, batches: batches, mainExclusions: batched.flatMap(\.exclusions),
                              chunksPerBatch: smallest, lockBudget: lockBudget, copiesData: copiesData)
    }

    /// The batches without the chunk named `chunk` ("schema.name"), which the main pg_dump still
    /// excludes: the chunk is then silently in no archive (the test seam of ``TestSeams/leaveOutChunk``).
    static func leaveOut(_ chunk: String, from batches: [Batch]) -> [Batch] {
        batches.map { batch in
            var batch = batch
            batch.chunks.removeAll { $0.qualifiedName == chunk }
            return batch
        }.filter { !$0.chunks.isEmpty }
    }

    /// The preflight's form of ``exclusions(for:chunks:session:)``'s check, without the chunk
    /// names: true when the default chunk name pattern matches no table in the associated schema
    /// but this hypertable's chunks (the condition under which that function does not give up).
    static func patternIsOwn(_ row: ChunkPathDetector.HypertableRow, session: DatabaseSession) async throws -> Bool {
        let (schema, prefix) = try await session.row(
            "SELECT associated_schema_name::text, associated_table_prefix::text FROM _timescaledb_catalog.hypertable WHERE id = \(Int64(row.id))",
            as: (String, String).self, purpose: "reading where the chunks of \(row.schema).\(row.name) live")
        let pattern = RootDefinition.quotePattern(schema) + "." + RootDefinition.quotePattern(prefix + "_") + "*" + RootDefinition.quotePattern("_chunk")
        let regex = DumpScope.regex(forPattern: pattern, schemaOnly: false)
        let foreign = try await session.value(
            """
            SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname ~ \(regex.schema ?? "^$") AND c.relname ~ \(regex.name) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                  AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch
                                  WHERE ch.hypertable_id = \(Int64(row.id)) AND ch.schema_name = \(schema) AND ch.table_name = c.relname))
            """, as: Bool.self, purpose: "checking the chunk name pattern of \(row.schema).\(row.name)")
        return !foreign
    }

    /// pg_dump patterns leaving out a root and its chunks. One option per chunk would pass the
    /// kernel's argument limit at tens of thousands of chunks, so chunks named the default way
    /// (`<associated_table_prefix>_<id>_chunk` in the associated schema) go by one pattern, after
    /// checking in the snapshot that the pattern matches this hypertable's chunks and nothing
    /// else; others are named one by one. nil when the pattern would catch another table.
    static func exclusions(for row: ChunkPathDetector.HypertableRow, chunks: [ChunkPathDetector.ChunkRow],
                           session: DatabaseSession) async throws -> [String]? {
        var exclusions = ["--exclude-table=\(RootDefinition.pattern(schema: row.schema, name: row.name))"]
        guard !chunks.isEmpty else { return exclusions }
        let (schema, prefix) = try await session.row(
            "SELECT associated_schema_name::text, associated_table_prefix::text FROM _timescaledb_catalog.hypertable WHERE id = \(Int64(row.id))",
            as: (String, String).self, purpose: "reading where the chunks of \(row.schema).\(row.name) live")
        let pattern = RootDefinition.quotePattern(schema) + "." + RootDefinition.quotePattern(prefix + "_") + "*" + RootDefinition.quotePattern("_chunk")
        let regex = DumpScope.regex(forPattern: pattern, schemaOnly: false)
        let matched = Set(try await session.values(
            """
            SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname ~ \(regex.schema ?? "^$") AND c.relname ~ \(regex.name) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
            """, as: String.self, purpose: "checking the chunk name pattern of \(row.schema).\(row.name)"))
        let own = Set(chunks.filter { $0.schema == schema }.map(\.name))
        guard matched.isSubset(of: own) else { return nil }
        if !matched.isEmpty { exclusions.append("--exclude-table=\(pattern)") }
        for chunk in chunks where !matched.contains(chunk.name) || chunk.schema != schema {
            exclusions.append("--exclude-table=\(RootDefinition.pattern(schema: chunk.schema, name: chunk.name))")
        }
        return exclusions
    }
}

extension ChunkBatchPlan {
    /// The lock-budget preflight: nil when one pg_dump and the survey beside it (which counts
    /// rows through the hypertable roots, locking every chunk's indexes too) fit the lock table
    /// with headroom (today's path); the reason for batching when they do not but the main
    /// pg_dump and survey without the batched hypertables do; a refusal naming the setting to
    /// raise when even that is too much.
    static func decide(session: DatabaseSession, budget: ServerInspection.LockBudget, jobs: Int) async throws -> String? {
        guard !budget.sufficient else { return nil }
        let timescale = try await session.value(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", as: Bool.self)
        var plan: ChunkBatchPlan?
        var mainIndexes = budget.indexesToLock
        if timescale {
            // Counts, not the chunk listing: the backup lists the chunks once, in its snapshot.
            let made = try await make(session: session, lockBudget: budget.budget, jobs: jobs, listing: .summary)
            // The batched hypertables are counted batch by batch and window by window, not by the survey.
            let indexes = try await ServerInspector.hypertableIndexes(session)
            mainIndexes = indexes.filter { id, _ in !made.batched.contains { $0.row.id == id } }.values.reduce(0, +)
            plan = made
        }
        let main = plan?.mainRelations(total: budget.relationsToLock) ?? budget.relationsToLock
        let mainBudget = ServerInspector.lockBudget(maxLocks: budget.maxLocksPerTransaction, maxConnections: budget.maxConnections,
                                                    maxPrepared: budget.maxPreparedTransactions, relations: main, indexes: mainIndexes)
        let need = "pg_dump would lock \(budget.relationsToLock) relations and the row count through the hypertable roots beside it \(budget.indexesToLock) indexes of their chunks"
        guard let plan, !plan.batched.isEmpty, mainBudget.sufficient else {
            let fallbacks = plan.map { $0.fallbacks.map { "\($0.hypertable) (\($0.reason))" } } ?? []
            let why = fallbacks.isEmpty ? "" : " The hypertables that must stay in the main pg_dump are \(fallbacks.prefix(5).joined(separator: ", "))."
            throw TSBackupError(.precondition, "\(need), more than the server's lock table holds with headroom (max_locks_per_transaction \(budget.maxLocksPerTransaction) x (max_connections \(budget.maxConnections) + max_prepared_transactions \(budget.maxPreparedTransactions)) = \(budget.budget)); it would fail with \"out of shared memory\", and dumping chunks in batches still leaves \(main) relations and \(mainIndexes) indexes for one transaction.\(why) Set max_locks_per_transaction = \(mainBudget.recommendedMaxLocksPerTransaction) (or more) in postgresql.conf and restart the server, then run the backup again.")
        }
        return "\(need), more than the lock table holds with headroom (\(budget.budget) = max_locks_per_transaction \(budget.maxLocksPerTransaction) x \(budget.maxConnections + budget.maxPreparedTransactions) slots): \(plan.batched.reduce(0) { $0 + $1.chunkCount }) chunks of \(plan.batched.count) hypertable(s) are dumped in batches of at most \(plan.chunksPerBatch) on the same snapshot, the main pg_dump locks \(main)"
    }
}

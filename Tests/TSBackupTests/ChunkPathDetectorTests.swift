import Testing
@testable import TSBackup

/// The batched chunk path takes only hypertables whose chunks are plain tables holding all their
/// rows. The Apache-only build here cannot create compressed chunks, continuous aggregates or
/// tiered chunks, so the detector is tested on catalog rows shaped as TimescaleDB stores them
/// (reference: timescaledb.md section 13).
@Suite("which hypertables take the batched chunk path")
struct ChunkPathDetectorTests {
    typealias H = ChunkPathDetector.HypertableRow
    typealias C = ChunkPathDetector.ChunkRow

    let plainTable = H(id: 1, schema: "public", name: "metrics")
    let plainChunks = [C(id: 1, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_1_chunk"),
                       C(id: 2, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_2_chunk")]

    @Test func plainHypertableIsBatched() {
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks, all: [plainTable]) == nil)
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: [], all: [plainTable]) == nil)
    }

    @Test func compressionEnabledFallsBack() {
        // ALTER TABLE ... SET (timescaledb.compress): compression_state 1, compressed_hypertable_id set.
        let table = H(id: 1, schema: "public", name: "cx", compressionState: 1, compressedHypertableID: 2)
        let compressedStore = H(id: 2, schema: "_timescaledb_internal", name: "_compressed_hypertable_2", compressionState: 2)
        #expect(ChunkPathDetector.fallbackReason(table, chunks: plainChunks, all: [table, compressedStore])?.contains("compression") == true)
        #expect(ChunkPathDetector.fallbackReason(compressedStore, chunks: [], all: [table, compressedStore])?.contains("compressed chunks") == true)
        // Even if the state were reset, being named as another's compressed hypertable is enough.
        var stale = compressedStore
        stale.compressionState = 0
        #expect(ChunkPathDetector.fallbackReason(stale, chunks: [], all: [table, stale]) != nil)
    }

    @Test func compressedAndPartialChunksFallBack() {
        // Section 13's catalog: chunk 1 compressed into chunk 5, status 9 (compressed + partial).
        let compressed = C(id: 1, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_1_chunk", compressedChunkID: 5, status: 9)
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: [compressed], all: [plainTable])?.contains("compressed chunk") == true)
        let statusOnly = C(id: 3, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_3_chunk", status: 1)
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: [statusOnly], all: [plainTable])?.contains("compressed chunk") == true)
        for status in [2, 4, 8, 16] {
            let odd = C(id: 3, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_3_chunk", status: status)
            #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks + [odd], all: [plainTable])?.contains("status \(status)") == true)
        }
    }

    @Test func continuousAggregatesFallBack() {
        let raw = H(id: 1, schema: "public", name: "metrics", continuousAggregate: true)
        let materialization = H(id: 3, schema: "_timescaledb_internal", name: "_materialized_hypertable_3", continuousAggregate: true)
        #expect(ChunkPathDetector.fallbackReason(raw, chunks: plainChunks, all: [raw, materialization])?.contains("continuous aggregate") == true)
        #expect(ChunkPathDetector.fallbackReason(materialization, chunks: [], all: [raw, materialization])?.contains("continuous aggregate") == true)
    }

    @Test func tieredForeignAndDroppedChunksFallBack() {
        let osm = C(id: 9, hypertableID: 1, schema: "_osm", name: "osm_chunk", osmChunk: true, relkind: "f")
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks + [osm], all: [plainTable])?.contains("tiered") == true)
        let foreign = C(id: 10, hypertableID: 1, schema: "_timescaledb_internal", name: "_dist_hyper_1_10_chunk", relkind: "f")
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks + [foreign], all: [plainTable])?.contains("foreign chunk") == true)
        let missing = C(id: 11, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_11_chunk", relkind: nil)
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks + [missing], all: [plainTable]) != nil)
        let dropped = C(id: 12, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_12_chunk", dropped: true, relkind: nil)
        #expect(ChunkPathDetector.fallbackReason(plainTable, chunks: plainChunks + [dropped], all: [plainTable])?.contains("dropped") == true)
    }

    @Test func batchSizeIsAShareOfTheLockBudget() {
        // PostgreSQL's defaults: 64 x 100 = 6,400 entries; two jobs: 800 chunks per batch.
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 6_400, jobs: 2) == 800)
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 200, jobs: 2) == 25)
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 10, jobs: 8) == 5)
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 1_000_000, jobs: 1) == 1000)
        // Two indexes per chunk: the batch's session holds three locks per chunk, pg_dump one.
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 6_400, jobs: 2, locksPerChunk: 4) == 400)
    }

    @Test func copiedRowsCostOneLockAChunk() {
        // Old form: the guard, each index (the planned row count) and pg_dump's lock.
        #expect(ChunkBatchPlan.locksPerChunk(indexes: 2, copiesData: false) == 4)
        // Data files: psql's lock, then pg_dump's, one at a time, whatever the indexes.
        #expect(ChunkBatchPlan.locksPerChunk(indexes: 0, copiesData: true) == 1)
        #expect(ChunkBatchPlan.locksPerChunk(indexes: 5, copiesData: true) == 1)
        // At PostgreSQL's defaults with two indexes and two jobs: 1,600 chunks a batch instead of 400.
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 6_400, jobs: 2, locksPerChunk: 1, cap: ChunkBatchPlan.copyFormCap) == 1_600)
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 6_400, jobs: 2, locksPerChunk: 4) == 400)
        #expect(ChunkBatchPlan.chunksPerBatch(lockBudget: 1_000_000, jobs: 1, locksPerChunk: 1, cap: ChunkBatchPlan.copyFormCap) == 2_000)
    }

    @Test func viewsAndTheirCommentsAndGrantsAreHeldBack() {
        let listing = """
            201; 1259 16500 VIEW public daily postgres
            5601; 0 0 COMMENT public VIEW daily postgres
            5602; 0 0 COMMENT public COLUMN daily.day postgres
            5603; 0 0 ACL public TABLE daily postgres
            5604; 0 0 ACL public TABLE devices postgres
            202; 1259 16400 TABLE public devices postgres
            """
        let contents = ArchiveContents(listing: listing)
        let views: Set<String> = ["public.daily"]
        let held = contents.items.filter { ChunkBatchRestore.isHeldBack($0, views: views) }.map(\.dumpID)
        #expect(held == [201, 5601, 5602, 5603])
    }
}

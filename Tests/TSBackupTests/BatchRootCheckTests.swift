import Foundation
import Testing
@testable import TSBackup

/// The pieces of the check through the root that need no server: figures adding up exactly as
/// PostgreSQL's `numeric` sums do, the per-chunk query, the test seam and the failure message.
@Suite("chunk batches checked through the hypertable root")
struct BatchRootCheckTests {
    @Test("hash sums add up past 64 bits and hash as TableContent.measure does")
    func figuresAddUpExactly() throws {
        // Two rows whose halves are near Int64's limits: the sums need more than 64 bits.
        let a = try ContentFigures(rows: 1, highText: "9223372036854775807", lowText: "-9223372036854775808")
        let b = try ContentFigures(rows: 2, highText: "9223372036854775807", lowText: "-9223372036854775808")
        let sum = a + b
        #expect(sum.rows == 3)
        #expect("\(sum.high)" == "18446744073709551614")
        #expect("\(sum.low)" == "-18446744073709551616")
        // The text hashed is count:high:low, as the whole-table measure writes it.
        #expect(sum.contentHash == "v1:" + FileSystem.sha256(of: Data("3:18446744073709551614:-18446744073709551616".utf8)))
        #expect(ContentFigures().contentHash == "v1:" + FileSystem.sha256(of: Data("0:0:0".utf8)))
        #expect(throws: TSBackupError.self) { try ContentFigures(rows: 1, highText: "1.5", lowText: "0") }
    }

    @Test("the root query groups by the table each row comes from, inside the window")
    func rootQueryShape() {
        let hashed = BatchRootCheck.query("\"public\".\"metrics\"", predicate: "\"time\" < '2026-01-02'", hash: true)
        #expect(hashed.contains("FROM \"public\".\"metrics\" t WHERE \"time\" < '2026-01-02'"))
        #expect(hashed.contains("t.tableoid AS o") && hashed.contains("GROUP BY o"))
        #expect(hashed.contains("md5(t::text)"))
        #expect(!hashed.contains("ONLY"))
        let counted = BatchRootCheck.query("\"public\".\"metrics\"", predicate: "true", hash: false)
        #expect(counted.contains("count(*)") && !counted.contains("md5"))
    }

    @Test("the test seam leaves exactly one chunk out of the batches")
    func leaveOutSeam() {
        typealias C = ChunkPathDetector.ChunkRow
        let chunks = (1...4).map { C(id: $0, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_\($0)_chunk") }
        let batches = [ChunkBatchPlan.Batch(number: 1, hypertable: "public.m", chunks: chunks[0..<2]),
                       ChunkBatchPlan.Batch(number: 2, hypertable: "public.m", chunks: [chunks[2]]),
                       ChunkBatchPlan.Batch(number: 3, hypertable: "public.m", chunks: [chunks[3]])]
        let left = ChunkBatchPlan.leaveOut("_timescaledb_internal._hyper_1_2_chunk", from: batches)
        #expect(left.flatMap(\.chunks).map(\.id) == [1, 3, 4])
        // A batch left empty is dropped rather than run.
        #expect(ChunkBatchPlan.leaveOut("_timescaledb_internal._hyper_1_3_chunk", from: batches).map(\.number) == [1, 3])
        #expect(TestSeams.leaveOutChunk(environment: [:]) == nil)
        #expect(TestSeams.leaveOutChunk(environment: ["TSBACKUP_TEST_LEAVE_OUT_CHUNK": "a.b"]) == "a.b")
    }

    @Test("a batch's result keeps figures aligned with its chunks, by id, without the dropped ones")
    func compactResult() {
        typealias C = ChunkPathDetector.ChunkRow
        let chunks = (1...5).map { C(id: $0 * 10, hypertableID: 1, schema: "_timescaledb_internal", name: "_hyper_1_\($0)_chunk") }
        let batch = ChunkBatchPlan.Batch(number: 1, hypertable: "public.m", chunks: chunks[1..<5])
        let result = BatchedDump.BatchResult(batch: batch, dropped: [chunks[2]],
                                             chunkFigures: [20: ContentFigures(rows: 2), 40: ContentFigures(rows: 4), 50: ContentFigures(rows: 5)],
                                             warnings: [])
        #expect(result.figures.map(\.rows) == [2, 0, 4, 5])
        #expect(result.rows == 11)
        #expect(result.dumped.map(\.id) == [20, 40, 50])
        #expect(result.dumpedFigures.map(\.id) == [20, 40, 50])
        #expect(result.dumpedFigures.map(\.figures.rows) == [2, 4, 5])
        // The manifest's batch lists find the survey's strings by chunk id.
        let ids = [3, 10, 20, 40, 50, 77]
        #expect(BatchedDump.index(of: 40, in: ids) == 3)
        #expect(BatchedDump.index(of: 3, in: ids) == 0)
        #expect(BatchedDump.index(of: 77, in: ids) == 5)
        #expect(BatchedDump.index(of: 30, in: ids) == nil)
        #expect(BatchedDump.index(of: 99, in: ids) == nil)
        #expect(BatchedDump.index(of: 1, in: []) == nil)
    }

    @Test("a mismatch names the hypertable, the window and the chunks, and is a failure")
    func mismatchMessage() {
        let error = BatchRootCheck.mismatch("public.metrics", window: 3, of: 16, predicate: "\"time\" >= 'x'",
                                            problems: ["chunk a.b holds 6 row(s) through the root but is in no chunk batch"])
        #expect(error.kind == .failed)
        #expect(error.message.contains("hypertable public.metrics"))
        #expect(error.message.contains("window 3 of 16 (\"time\" >= 'x')"))
        #expect(error.message.contains("chunk a.b holds 6 row(s)"))
        let many = BatchRootCheck.mismatch("public.m", window: nil, of: 2, predicate: nil, problems: (1...7).map { "p\($0)" })
        #expect(many.message.contains("its 2 window(s)") && many.message.contains("and 2 more"))
    }
}

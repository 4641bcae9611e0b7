import Foundation
import Testing
@testable import TSBackup

/// How a restore cuts its data into lanes and batches (``ArchiveDataBatches``).
@Suite("restore data batches: lanes largest first, batches in list order")
struct ArchiveDataBatchesTests {
    static let sizes: [Int: Int64] = [10: 100, 11: 900, 12: 300, 13: 50]
    static let list = ["1; 0 0 ENCODING - ENCODING", "10; 1 2 TABLE DATA public a x", "; a comment",
                       "11; 1 3 TABLE DATA public b x", "20; 1 4 SEQUENCE SET public s x",
                       "12; 1 5 TABLE DATA public c x", "13; 1 6 TABLE DATA public d x"]

    @Test("data items go to the least loaded lane, largest first; other lines stay in the first lane; each lane keeps the list's order")
    func lanes() {
        let lanes = ArchiveDataBatches.lanes(Self.list, count: 2, bytes: { Self.sizes[$0] })
        // 11 (900) to lane 1; 12 (300), 10 (100), 13 (50) to lane 2 (400 < 900... all stay below).
        #expect(lanes == [["1; 0 0 ENCODING - ENCODING", "; a comment", "11; 1 3 TABLE DATA public b x", "20; 1 4 SEQUENCE SET public s x"],
                          ["10; 1 2 TABLE DATA public a x", "12; 1 5 TABLE DATA public c x", "13; 1 6 TABLE DATA public d x"]])
        #expect(ArchiveDataBatches.lanes(Self.list, count: 1, bytes: { Self.sizes[$0] }) == [Self.list])
        // More lanes than data files: no empty lane.
        #expect(ArchiveDataBatches.lanes(Self.list, count: 8, bytes: { Self.sizes[$0] }).count == 4)
    }

    @Test("batches keep the order, stay within the budget, and a larger file is a batch of its own")
    func batches() {
        // Budgets 400/16, /8, /4, /2, then 400: every file alone until the fifth batch.
        let batches = ArchiveDataBatches.batches(Self.list, budget: 400, plainBytes: { Self.sizes[$0] })
        #expect(batches.map(\.ids) == [[10], [11], [12], [13]])
        let ramped = ArchiveDataBatches.batches((1...8).map { "\($0); 1 2 TABLE DATA public t\($0) x" }, budget: 1600, plainBytes: { _ in 100 })
        #expect(ramped.map(\.ids) == [[1], [2, 3], [4, 5, 6, 7], [8]])
        #expect(batches.flatMap(\.lines) == Self.list)
        #expect(batches[0].lines == ["1; 0 0 ENCODING - ENCODING", "10; 1 2 TABLE DATA public a x", "; a comment"])
        #expect(ArchiveDataBatches.batches(Self.list, budget: 1 << 44, plainBytes: { Self.sizes[$0] }).map(\.ids) == [[10, 11, 12, 13]])
        #expect(ArchiveDataBatches.batches(["1; 0 0 ENCODING - ENCODING"], budget: 1, plainBytes: { Self.sizes[$0] }).map(\.ids) == [[]])
    }

    @Test("scratch space checked up front: two batches of max(budget, largest file) per lane and one more, lanes at most the files, at most the whole plain size")
    func scratchBytes() {
        // (4 lanes x 2 + 1) x 100 = 900 of 10 000.
        #expect(ArchiveDataBatches.scratchBytes(largest: 60, files: 50, total: 10_000, budget: 100, lanes: 4) == 900)
        // The largest file is a batch of its own: 9 x 300.
        #expect(ArchiveDataBatches.scratchBytes(largest: 300, files: 50, total: 10_000, budget: 100, lanes: 4) == 2_700)
        // No more lanes than data files: (2 x 2 + 1) x 100.
        #expect(ArchiveDataBatches.scratchBytes(largest: 60, files: 2, total: 10_000, budget: 100, lanes: 8) == 500)
        // Capped at the whole plain size, also for a budget that would overflow.
        #expect(ArchiveDataBatches.scratchBytes(largest: 60, files: 50, total: 700, budget: 100, lanes: 4) == 700)
        #expect(ArchiveDataBatches.scratchBytes(largest: 60, files: 50, total: 700, budget: .max, lanes: 4) == 700)
        #expect(ArchiveDataBatches.scratchBytes(largest: 0, files: 0, total: 0, budget: 100, lanes: 4) == 0)
        // The largest file's estimate from the stored sizes and the archive's ratio.
        let batches = ArchiveDataBatches(directory: "/nowhere", sources: [1: .init(path: "a", name: "a", bytes: 10), 2: .init(path: "b", name: "b", bytes: 40)], ratio: 3)
        #expect(batches.largestPlainBytes == 120)
    }

    @Test("TSBACKUP_RESTORE_BATCH_BYTES sets the budget; TSBACKUP_RESTORE_SCRATCH_COPY=1 and large objects keep the full copy")
    func settings() {
        #expect(ArchiveDataBatches.batchBytes(environment: [:]) == ArchiveDataBatches.defaultBatchBytes)
        #expect(ArchiveDataBatches.batchBytes(environment: ["TSBACKUP_RESTORE_BATCH_BYTES": "4096"]) == 4096)
        #expect(ArchiveDataCompression.scratchCopyRequested(environment: ["TSBACKUP_RESTORE_SCRATCH_COPY": "1"]))
        #expect(!ArchiveDataCompression.scratchCopyRequested(environment: [:]))
        #expect(ArchiveDataCompression.isLargeObjectFile("dump/blob_16401.dat.zst"))
        #expect(!ArchiveDataCompression.isLargeObjectFile("dump/3340.dat.zst"))
    }
}

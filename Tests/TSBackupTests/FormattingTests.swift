import Testing
@testable import TSBackup

@Suite("small pure pieces")
struct FormattingTests {
    @Test func lockBudget() {
        let ok = ServerInspector.lockBudget(maxLocks: 64, maxConnections: 100, maxPrepared: 0, relations: 5_000)
        #expect(ok.budget == 6_400)
        #expect(ok.sufficient)
        #expect(ok.recommendedMaxLocksPerTransaction == 64)

        let tight = ServerInspector.lockBudget(maxLocks: 64, maxConnections: 100, maxPrepared: 0, relations: 12_400)
        #expect(!tight.sufficient)
        // 12,400 x 1.2 = 14,880 locks over 100 slots -> 149 per transaction.
        #expect(tight.recommendedMaxLocksPerTransaction == 149)

        let edge = ServerInspector.lockBudget(maxLocks: 12, maxConnections: 10, maxPrepared: 0, relations: 100)
        #expect(edge.sufficient)  // exactly 120 needed, 120 available
        #expect(!ServerInspector.lockBudget(maxLocks: 12, maxConnections: 10, maxPrepared: 0, relations: 101).sufficient)

        // Issue 11: 5,000 chunks fit pg_dump alone, but the survey's count through the roots also
        // locks each chunk's indexes (two each here): 15,000 x 1.2 = 18,000 over 100 slots -> 180.
        let indexed = ServerInspector.lockBudget(maxLocks: 64, maxConnections: 100, maxPrepared: 0, relations: 5_000, indexes: 10_000)
        #expect(!indexed.sufficient)
        #expect(indexed.relationsToLock == 5_000)
        #expect(indexed.indexesToLock == 10_000)
        #expect(indexed.recommendedMaxLocksPerTransaction == 180)
    }

    @Test func versionOrdering() {
        let sorted = ["2.19.3", "2.9.0", "2.10.1", "2.19.10", "1.7.5"].sorted(by: VersionNumber.isOrderedBefore)
        #expect(sorted == ["1.7.5", "2.9.0", "2.10.1", "2.19.3", "2.19.10"])
    }

    @Test func byteCounts() {
        #expect(ByteCount.format(512) == "512 bytes")
        #expect(ByteCount.format(1536) == "1.5 kB")
        #expect(ByteCount.format(3 * 1024 * 1024) == "3.0 MB")
        #expect(ByteCount.format(300 * 1024 * 1024) == "300 MB")
    }

    @Test func tableAlignsColumns() {
        var table = TextTable(header: ["A", "LONGER"])
        table.add(["wide cell", "x"])
        table.add(["y", "last column is not padded"])
        let lines = table.render().split(separator: "\n")
        #expect(lines[0] == "  A          LONGER")
        #expect(lines[1] == "  wide cell  x")
        #expect(lines[2] == "  y          last column is not padded")
    }

    @Test func quoting() {
        #expect(quoteIdentifier("my \"db\"") == "\"my \"\"db\"\"\"")
    }
}

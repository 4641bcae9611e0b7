import Testing
@testable import TSBackup

/// How the chunk tables' pre-data is cut into lists for parallel pg_restore processes.
@Suite("parallel chunk pre-data: the split")
struct PreDataSplitTests {
    /// `count` chunks of two hypertables in archive order: the roots and the rest, then every
    /// chunk's TABLE, then their DEFAULTs, as pg_dump orders a TOC; a comment on one chunk.
    static func listing(chunks count: Int) -> (String, [String]) {
        var lines = [
            "10; 2615 2200 SCHEMA - public postgres",
            "11; 3079 17000 EXTENSION - timescaledb",
            "20; 1259 17100 TABLE public metrics postgres",
            "21; 1259 17101 SEQUENCE public metrics_id_seq postgres",
            "22; 1259 17102 TABLE public events postgres",
            "23; 1259 17103 TABLE _timescaledb_internal _materialized_hypertable_3 postgres",
        ]
        var chunks: [String] = []
        for n in 1...count {
            let name = "_hyper_\(n % 2 + 1)_\(n)_chunk"
            chunks.append("_timescaledb_internal." + name)
            lines.append("\(1000 + n); 1259 \(20000 + n) TABLE _timescaledb_internal \(name) postgres")
        }
        lines.append("900; 0 0 COMMENT _timescaledb_internal TABLE _hyper_2_1_chunk postgres")
        for n in 1...count {
            lines.append("\(5000 + n); 2604 \(30000 + n) DEFAULT _timescaledb_internal _hyper_\(n % 2 + 1)_\(n)_chunk id postgres")
        }
        lines.append("99; 2604 17200 DEFAULT public metrics id postgres")
        return (lines.joined(separator: "\n"), chunks)
    }

    @Test func chunkEntriesAreDealtRoundRobinAndStayTogetherInOrder() throws {
        let (listing, chunks) = Self.listing(chunks: 300)
        let contents = ArchiveContents(listing: listing)
        let split = try #require(RestoreProcedure.splitPreData(contents, chunkTables: chunks, jobs: 2))
        #expect(split.chunkCount == 300)
        #expect(split.chunkLists.count == 2)
        // Nothing lost or doubled.
        let all = split.others + split.chunkLists.flatMap { $0 }
        #expect(all.count == contents.items.count)
        #expect(Set(all.map(\.dumpID)) == Set(contents.items.map(\.dumpID)))
        // Roots, sequences, the materialized hypertable and the root's DEFAULT run first.
        #expect(split.others.map(\.dumpID) == [10, 11, 20, 21, 22, 23, 99])
        // Round-robin in archive order: chunk n goes to list (n - 1) % 2.
        for (index, list) in split.chunkLists.enumerated() {
            let tables = list.filter { $0.type == "TABLE" }.map(\.dumpID)
            #expect(tables == stride(from: 1001 + index, through: 1300, by: 2).map { $0 })
            // Each chunk's TABLE comes before its DEFAULT and its comment, in the same list.
            for item in list where item.type != "TABLE" {
                let position = try #require(list.firstIndex(of: item))
                let chunk = item.type == "COMMENT" ? "_hyper_2_1_chunk" : item.name
                let table = try #require(list.firstIndex { $0.type == "TABLE" && $0.name == chunk })
                #expect(table < position)
            }
            // Archive order inside a list.
            #expect(list.map(\.dumpID) == list.map(\.dumpID).sorted { a, b in
                contents.items.firstIndex { $0.dumpID == a }! < contents.items.firstIndex { $0.dumpID == b }!
            })
        }
        #expect(split.chunkLists[0].contains { $0.dumpID == 900 })
        // Three lists with three jobs.
        #expect(RestoreProcedure.splitPreData(contents, chunkTables: chunks, jobs: 3)?.chunkLists.count == 3)
    }

    @Test func smallArchivesAndOneJobKeepTheSerialPath() {
        let (small, smallChunks) = Self.listing(chunks: RestoreProcedure.parallelPreDataThreshold)
        #expect(RestoreProcedure.splitPreData(ArchiveContents(listing: small), chunkTables: smallChunks, jobs: 2) == nil)
        let (large, chunks) = Self.listing(chunks: 300)
        #expect(RestoreProcedure.splitPreData(ArchiveContents(listing: large), chunkTables: chunks, jobs: 1) == nil)
        // Chunk tables the manifest does not name are not chunks (e.g. a backup without a chunk list).
        #expect(RestoreProcedure.splitPreData(ArchiveContents(listing: large), chunkTables: [], jobs: 2) == nil)
    }
}

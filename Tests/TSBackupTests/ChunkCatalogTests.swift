import Foundation
import Testing
@testable import TSBackup

/// Compressed chunks cannot be made by the Apache-only build the integration tests run on, so
/// what depends on them is tested here from catalog rows and generated SQL.
@Suite("Chunk catalog: compression state, per-chunk reads and the root check")
struct ChunkCatalogTests {
    typealias Chunk = ChunkCatalog.Chunk

    static func chunk(_ id: Int32, status: Int32, compressedChunkID: Int32?, slices: [Chunk.Slice] = []) -> Chunk {
        Chunk(id: id, schema: "_timescaledb_internal", table: "_hyper_1_\(id)_chunk", status: status,
              compressedChunkID: compressedChunkID, osm: false, bytes: 8192, slices: slices)
    }

    @Test("compression state comes from the catalog's status bits and compressed_chunk_id")
    func compressionState() {
        // The rows of section 13 of the TimescaleDB reference: chunk 1 compressed (-> chunk 5)
        // and written to afterwards (status 9 = 1 | 8), chunks 2..4 untouched.
        let partial = Self.chunk(1, status: 9, compressedChunkID: 5)
        #expect(partial.isCompressed && partial.isPartiallyCompressed)
        #expect(partial.state == "partially compressed")
        #expect(partial.flags == [.compressed, .partial])

        let plain = Self.chunk(2, status: 0, compressedChunkID: nil)
        #expect(!plain.isCompressed && !plain.isPartiallyCompressed && plain.state == "uncompressed")

        let compressed = Self.chunk(3, status: 1, compressedChunkID: 6)
        #expect(compressed.isCompressed && !compressed.isPartiallyCompressed && compressed.state == "compressed")

        // Unordered (2) and frozen (4) are other bits of a compressed chunk; still compressed, not partial.
        let unorderedFrozen = Self.chunk(4, status: 1 | 2 | 4, compressedChunkID: 7)
        #expect(unorderedFrozen.state == "compressed")
        #expect(unorderedFrozen.flags.contains(.frozen) && unorderedFrozen.flags.contains(.unordered))

        // Either sign alone means compressed rows exist somewhere else.
        #expect(Self.chunk(5, status: 0, compressedChunkID: 8).isCompressed)
        #expect(Self.chunk(6, status: 1, compressedChunkID: nil).isCompressed)
        // The partial bit without the compressed state is not "partially compressed".
        #expect(!Self.chunk(7, status: 8, compressedChunkID: nil).isPartiallyCompressed)
    }

    @Test("a chunk is read without ONLY, through the planner, so TimescaleDB decompresses it")
    func chunkReadSQL() {
        let chunk = Self.chunk(1, status: 9, compressedChunkID: 5)
        let sql = ChunkCatalog.chunkRowsQuery(chunk, columns: "\"time\", dev", window: "\"time\" >= '2024-01-01'::timestamptz")
        #expect(sql == "SELECT \"time\", dev FROM \"_timescaledb_internal\".\"_hyper_1_1_chunk\" WHERE \"time\" >= '2024-01-01'::timestamptz")
        #expect(!sql.uppercased().contains("ONLY"))
        #expect(!sql.contains("OFFSET"))
        #expect(ChunkCatalog.chunkRowsQuery(chunk, columns: "*", window: nil) == "SELECT * FROM \(chunk.qualified)")
        #expect(ChunkCatalog.chunkRowsQuery(chunk, columns: "*", window: nil, shortenForTest: true) == "SELECT * FROM \(chunk.qualified) OFFSET 1")
    }

    @Test("every session reading rows turns TimescaleDB's decompression on")
    func decompressionSettings() {
        #expect(TableContent.settings.contains("timescaledb.enable_transparent_decompression = on"))
        #expect(TableContent.settings.contains("timescaledb.enable_optimizations = on"))
    }

    static let dimensions = [
        ChunkCatalog.Dimension(id: 1, column: "time", columnType: "timestamp with time zone", open: true, partitioningFunction: nil),
        ChunkCatalog.Dimension(id: 2, column: "dev", columnType: "integer", open: false, partitioningFunction: "_timescaledb_functions.get_partition_hash"),
    ]

    @Test("a chunk's range through the root: time bounds and hash slices, unbounded ends left out")
    func rangeCondition() {
        // Slices as a 2.19.3 catalog holds them for a 1-day, 2-partition hypertable.
        let low = Self.chunk(2, status: 0, compressedChunkID: nil, slices: [
            .init(dimensionID: 1, start: 1_704_067_200_000_000, end: 1_704_153_600_000_000),
            .init(dimensionID: 2, start: Int64.min, end: 1_073_741_823),
        ])
        #expect(ChunkCatalog.rangeCondition(of: low, dimensions: Self.dimensions) ==
            "\"time\" >= _timescaledb_functions.to_timestamp(1704067200000000) AND \"time\" < _timescaledb_functions.to_timestamp(1704153600000000)"
            + " AND _timescaledb_functions.get_partition_hash(\"dev\") < 1073741823::int8")
        let high = Self.chunk(1, status: 0, compressedChunkID: nil, slices: [
            .init(dimensionID: 1, start: 1_704_067_200_000_000, end: 1_704_153_600_000_000),
            .init(dimensionID: 2, start: 1_073_741_823, end: Int64.max),
        ])
        #expect(ChunkCatalog.rangeCondition(of: high, dimensions: Self.dimensions)?.hasSuffix("_timescaledb_functions.get_partition_hash(\"dev\") >= 1073741823::int8") == true)

        let integerTime = [ChunkCatalog.Dimension(id: 3, column: "seq", columnType: "bigint", open: true, partitioningFunction: nil)]
        let events = Self.chunk(9, status: 1, compressedChunkID: 10, slices: [.init(dimensionID: 3, start: 100, end: 200)])
        #expect(ChunkCatalog.rangeCondition(of: events, dimensions: integerTime) == "\"seq\" >= 100::int8 AND \"seq\" < 200::int8")

        let plainTime = [ChunkCatalog.Dimension(id: 4, column: "t", columnType: "timestamp without time zone", open: true, partitioningFunction: nil)]
        #expect(ChunkCatalog.rangeCondition(of: Self.chunk(11, status: 0, compressedChunkID: nil, slices: [.init(dimensionID: 4, start: 0, end: 86_400_000_000)]), dimensions: plainTime)
                == "\"t\" >= _timescaledb_functions.to_timestamp_without_timezone(0) AND \"t\" < _timescaledb_functions.to_timestamp_without_timezone(86400000000)")

        // A custom time partitioning function or an unknown slice cannot be written as a condition.
        let custom = [ChunkCatalog.Dimension(id: 5, column: "t", columnType: "text", open: true, partitioningFunction: "public.text_to_time")]
        #expect(ChunkCatalog.rangeCondition(of: Self.chunk(12, status: 0, compressedChunkID: nil, slices: [.init(dimensionID: 5, start: 0, end: 10)]), dimensions: custom) == nil)
        #expect(ChunkCatalog.rangeCondition(of: Self.chunk(13, status: 0, compressedChunkID: nil, slices: [.init(dimensionID: 99, start: 0, end: 10)]), dimensions: Self.dimensions) == nil)
    }

    @Test("the root query reads the hypertable itself, with the chunk's range and the window")
    func rootSQL() {
        let sql = ChunkCatalog.rootRowsQuery(root: "public.cx", columns: "\"time\", dev", conditions: ["\"time\" >= x", nil, "dev = 1"])
        #expect(sql == "SELECT \"time\", dev FROM public.cx WHERE (\"time\" >= x) AND (dev = 1)")
        #expect(ChunkCatalog.rootCountQuery(root: "public.cx", conditions: [nil]) == "SELECT count(*) FROM public.cx")
        #expect(!sql.uppercased().contains("ONLY"))
    }

    @Test("the catalog query lists chunks with status, compressed table and slices, not dropped ones")
    func catalogSQL() {
        let sql = ChunkCatalog.chunksQuery(hypertableID: 7)
        #expect(sql.contains("ch.status") && sql.contains("ch.compressed_chunk_id") && sql.contains("ch.osm_chunk"))
        #expect(sql.contains("WHERE ch.hypertable_id = 7 AND NOT ch.dropped"))
        #expect(sql.contains("cc.id = ch.compressed_chunk_id"), "the compressed table's size counts toward the chunk's bytes")
    }

    static func copy(_ chunk: Chunk, copied: Int64, root: Int64?) -> HypertableExport.ChunkCopy {
        .init(chunk: chunk, file: "data/00001.copy.zst", copied: copied,
              root: root.map { ContentParts(count: $0, high: "0", low: "0") })
    }

    @Test("the root check fails naming each chunk whose copy is short, and passes when all agree")
    func rootCheck() throws {
        let a = Self.chunk(1, status: 9, compressedChunkID: 5)
        let b = Self.chunk(2, status: 0, compressedChunkID: nil)
        // The reported bug: a compressed chunk read with ONLY gives only its uncompressed remainder.
        let short = HypertableExport.RootCheck(copies: [Self.copy(a, copied: 1, root: 1441), Self.copy(b, copied: 1440, root: 1440)], rootRows: 2881)
        #expect(!short.passed)
        let error = try #require(short.failure(table: "public.cx", window: "all rows"))
        #expect(error.kind == .failed)
        #expect(error.message.contains("_timescaledb_internal._hyper_1_1_chunk (partially compressed) copied 1 of 1441 rows"))
        #expect(!error.message.contains("_hyper_1_2_chunk"))

        let good = HypertableExport.RootCheck(copies: [Self.copy(a, copied: 1441, root: 1441), Self.copy(b, copied: 1440, root: 1440)], rootRows: 2881)
        #expect(good.passed && good.failure(table: "public.cx", window: "all rows") == nil)

        // Rows the root sees outside every listed chunk (e.g. a tiered chunk) fail too.
        let outside = HypertableExport.RootCheck(copies: [Self.copy(a, copied: 1441, root: 1441)], rootRows: 1500)
        #expect(!outside.passed)
        #expect(outside.failure(table: "public.cx", window: "all rows")?.message.contains("only 1441 fall in the listed chunks' ranges") == true)

        // Without per-chunk root figures the total still decides.
        let totalOnly = HypertableExport.RootCheck(copies: [Self.copy(a, copied: 1, root: nil)], rootRows: 1441)
        #expect(!totalOnly.passed && totalOnly.rootRowsInChunkRanges == nil)
    }

    @Test("copy output: marker lines separate the chunks, are counted and left out, wherever buffers split")
    func markerSplitter() {
        let stream = Array("a\t1\nb\\\\.\t2\n\\.\n\\\\.\n\\.\n\\.\nlast\n\\.\n".utf8)
        let expectedData = Array("a\t1\nb\\\\.\t2\n\\\\.\nlast\n".utf8)
        for split in 0...stream.count {
            for second in split...stream.count {
                var splitter = CopyPipeline.MarkerSplitter()
                var out: [UInt8] = []
                for part in [stream[0..<split], stream[split..<second], stream[second...]] {
                    out += Array(part).withUnsafeBytes { splitter.feed($0) }
                }
                let (counted, rest) = splitter.finish()
                out += rest
                #expect(out == expectedData, "split at \(split), \(second)")
                #expect(counted.rowsPerPart == [2, 1, 0, 1], "split at \(split), \(second)")
                #expect(counted.rows == 4 && counted.rawBytes == Int64(expectedData.count))
            }
        }
    }

    @Test("the short-copy test seam is off unless its variable names a chunk")
    func testSeam() {
        #expect(TestSeams.shortCopyChunk(environment: [:]) == nil)
        #expect(TestSeams.shortCopyChunk(environment: ["TSBACKUP_TEST_SHORT_COPY": ""]) == nil)
        #expect(TestSeams.shortCopyChunk(environment: ["TSBACKUP_TEST_SHORT_COPY": "_timescaledb_internal._hyper_1_1_chunk"]) == "_timescaledb_internal._hyper_1_1_chunk")
    }

    @Test("manifests written before chunks were recorded still decode")
    func oldManifest() throws {
        let entry = HypertableManifest.ChunkEntry(name: "s.c", state: "partially compressed", status: 9, rows: 5, rootRows: 5,
                                                  file: "data/00001.copy.zst", rangeStart: 0, rangeEnd: 10)
        #expect(entry.compressed)
        let json = try JSONOutput.encode(entry)
        #expect(json.contains("\"root_rows\"") && json.contains("\"range_start\""))
    }

    @Test("import compresses a target chunk through the extension's compress_chunk, and says when the target cannot")
    func importCompressionSQL() {
        #expect(HypertableImport.compressChunkSQL(extensionSchema: "public", chunk: "_timescaledb_internal._hyper_9_1_chunk")
                == "SELECT \"public\".compress_chunk('_timescaledb_internal._hyper_9_1_chunk'::regclass)")
        #expect(HypertableImport.compressChunkSQL(extensionSchema: "ts", chunk: "s.\"it's\"").contains("'s.\"it''s\"'::regclass"))
        #expect(HypertableImport.apacheWarning(compressedAtSource: 3).contains("3 chunks were compressed at the source"))
        #expect(!HypertableImport.apacheWarning(compressedAtSource: 0).contains("chunks were compressed"))
    }
}

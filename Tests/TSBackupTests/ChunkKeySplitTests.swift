import Testing
@testable import TSBackup

/// How data and post-data are cut so that the chunks' foreign keys run beside their indexes.
@Suite("chunk foreign keys beside the index builds: the split")
struct ChunkKeySplitTests {
    static let chunks = ["_timescaledb_internal._hyper_1_1_chunk", "_timescaledb_internal._hyper_1_2_chunk"]

    static let listing = """
        ;
        ; Archive created at 2026-11-27 10:00:00 UTC
        ;
        3001; 0 17300 TABLE DATA public devices postgres
        3002; 0 17301 TABLE DATA _timescaledb_internal _hyper_1_1_chunk postgres
        3003; 0 17302 TABLE DATA _timescaledb_internal _hyper_1_2_chunk postgres
        4001; 2606 17400 CONSTRAINT public devices devices_pkey postgres
        4002; 1259 17401 INDEX public metrics_time_idx postgres
        4003; 1259 17402 INDEX _timescaledb_internal _hyper_1_1_chunk_metrics_time_idx postgres
        4004; 2606 17403 CONSTRAINT _timescaledb_internal _hyper_1_2_chunk 2_2_metrics_key postgres
        4005; 2620 17404 TRIGGER public metrics ts_insert_blocker postgres
        4006; 2606 17405 FK CONSTRAINT public metrics metrics_device_id_fkey postgres
        4007; 2606 17406 FK CONSTRAINT _timescaledb_internal _hyper_1_1_chunk 1_1_metrics_device_id_fkey postgres
        4008; 2606 17407 FK CONSTRAINT _timescaledb_internal _hyper_1_2_chunk 2_2_metrics_device_id_fkey postgres
        4009; 2606 17408 FK CONSTRAINT public readings readings_device_id_fkey postgres
        """

    @Test func chunkKeysAndChunkPostDataAreSplitOutInArchiveOrder() throws {
        let items = ArchiveContents(listing: Self.listing).items
        let split = try #require(RestoreProcedure.splitChunkPostData(items, chunkTables: Self.chunks))
        // Data, the referenced table's key, the roots' and plain tables' post-data stay first.
        #expect(split.main.map(\.dumpID) == [3001, 3002, 3003, 4001, 4002, 4005, 4006, 4009])
        #expect(split.chunkPostData.map(\.dumpID) == [4003, 4004])
        #expect(split.chunkKeys.map(\.dumpID) == [4007, 4008])
        // Nothing lost or doubled.
        let all = split.main + split.chunkPostData + split.chunkKeys
        #expect(all.count == items.count && Set(all.map(\.dumpID)) == Set(items.map(\.dumpID)))
    }

    @Test func withoutChunkKeysPgRestoreSchedulesAsBefore() {
        let items = ArchiveContents(listing: Self.listing).items.filter { !($0.type == "FK CONSTRAINT" && $0.schema == "_timescaledb_internal") }
        #expect(RestoreProcedure.splitChunkPostData(items, chunkTables: Self.chunks) == nil)
        // A manifest without a chunk list names no chunk: no split.
        #expect(RestoreProcedure.splitChunkPostData(ArchiveContents(listing: Self.listing).items, chunkTables: []) == nil)
        #expect(RestoreProcedure.chunkKeysInPostDataRequested(environment: ["TSBACKUP_CHUNK_KEYS_IN_POST_DATA": "1"]))
        #expect(!RestoreProcedure.chunkKeysInPostDataRequested(environment: [:]))
    }
}

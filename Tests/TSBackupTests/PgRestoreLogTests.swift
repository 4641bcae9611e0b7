import Foundation
import Testing
@testable import TSBackup

@Suite("pg_restore --verbose lines, as PostgreSQL 15 prints them with LC_MESSAGES=C")
struct PgRestoreLogTests {
    @Test func serialLines() {
        #expect(PgRestoreLog.events(in: #"pg_restore: creating TABLE "public.conditions""#) == [.object])
        #expect(PgRestoreLog.events(in: #"pg_restore: creating EXTENSION "timescaledb""#) == [.object])
        #expect(PgRestoreLog.events(in: #"pg_restore: creating FK CONSTRAINT "public.conditions conditions_device_id_fkey""#) == [.object])
        #expect(PgRestoreLog.events(in: "pg_restore: executing SEQUENCE SET chunk_id_seq") == [.object])
        #expect(PgRestoreLog.events(in: #"pg_restore: processing data for table "_timescaledb_internal._hyper_1_4_chunk""#)
                == [.object, .dataStarted(table: "_timescaledb_internal._hyper_1_4_chunk")])
        #expect(PgRestoreLog.events(in: "pg_restore: connecting to database for restore").isEmpty)
        #expect(PgRestoreLog.events(in: "pg_restore: implied data-only restore").isEmpty)
    }

    @Test func parallelBookkeepingIsNotCountedTwice() {
        #expect(PgRestoreLog.events(in: "pg_restore: processing item 277 TABLE m").isEmpty)
        #expect(PgRestoreLog.events(in: "pg_restore: launching item 4029 TABLE DATA _hyper_1_4_chunk").isEmpty)
        #expect(PgRestoreLog.events(in: "pg_restore: processing missed item 12 INDEX x").isEmpty)
        #expect(PgRestoreLog.events(in: "pg_restore: entering main parallel loop").isEmpty)
        #expect(PgRestoreLog.events(in: "pg_restore: finished item 4029 TABLE DATA _hyper_1_4_chunk") == [.finished(dumpID: 4029, type: "TABLE DATA")])
        #expect(PgRestoreLog.events(in: "pg_restore: finished item 3862 INDEX _hyper_1_4_chunk_m_t_idx") == [.finished(dumpID: 3862, type: "INDEX")])
        #expect(PgRestoreLog.events(in: "pg_restore: finished main parallel loop").isEmpty)
    }

    @Test func problems() {
        let error = #"pg_restore: error: COPY failed for table "chunk": ERROR:  insert or update on table "chunk" violates foreign key constraint"#
        #expect(PgRestoreLog.events(in: error) == [.problem(error)])
        #expect(PgRestoreLog.events(in: "pg_restore: warning: errors ignored on restore: 1") == [.problem("pg_restore: warning: errors ignored on restore: 1")])
        #expect(PgRestoreLog.events(in: "DETAIL:  Key (hypertable_id)=(1) is not present in table \"hypertable\".").isEmpty)
    }

    @Test func counterFromATranscript() {
        let listing = """
            ;
            ; Archive created at 2026-11-27 06:00:00 UTC
            2; 3079 16385 EXTENSION - timescaledb
            277; 1259 17138 TABLE public m postgres
            278; 1259 17143 TABLE _timescaledb_internal _hyper_1_1_chunk postgres
            4026; 0 17143 TABLE DATA _timescaledb_internal _hyper_1_1_chunk postgres
            4027; 0 17138 TABLE DATA public m postgres
            3860; 1259 17160 INDEX _timescaledb_internal _hyper_1_1_chunk_m_t_idx postgres
            """
        let contents = ArchiveContents(listing: listing)
        #expect(contents.items.count == 6)
        let bytes = RestoreProgressCounter.dataBytes(files: [("dump/4026.dat.gz", 1_000), ("dump/4027.dat.gz", 24), ("dump/toc.dat", 5_000)])
        #expect(bytes == [4026: 1_000, 4027: 24])
        let counter = RestoreProgressCounter(contents: contents, dataBytes: bytes)

        let serial = """
            pg_restore: connecting to database for restore
            pg_restore: creating EXTENSION "timescaledb"
            pg_restore: creating TABLE "public.m"
            pg_restore: creating TABLE "_timescaledb_internal._hyper_1_1_chunk"
            """
        for line in serial.split(separator: "\n") {
            for event in PgRestoreLog.events(in: String(line)) { counter.apply(event, parallel: false) }
        }
        #expect(counter.snapshot == .init(objectsDone: 3, objectsTotal: 6, bytesDone: 0, bytesTotal: 1_024))

        // Parallel: a worker's "processing data" counts the object, "finished item" the bytes, once.
        let parallel = """
            pg_restore: processing item 277 TABLE m
            pg_restore: launching item 4026 TABLE DATA _hyper_1_1_chunk
            pg_restore: processing data for table "_timescaledb_internal._hyper_1_1_chunk"
            pg_restore: finished item 4026 TABLE DATA _hyper_1_1_chunk
            pg_restore: finished item 4026 TABLE DATA _hyper_1_1_chunk
            pg_restore: launching item 3860 INDEX _hyper_1_1_chunk_m_t_idx
            pg_restore: creating INDEX "_timescaledb_internal._hyper_1_1_chunk_m_t_idx"
            pg_restore: finished item 3860 INDEX _hyper_1_1_chunk_m_t_idx
            """
        for line in parallel.split(separator: "\n") {
            for event in PgRestoreLog.events(in: String(line)) { counter.apply(event, parallel: true) }
        }
        #expect(counter.snapshot == .init(objectsDone: 5, objectsTotal: 6, bytesDone: 1_000, bytesTotal: 1_024))

        // Serial data load counts bytes when the table starts.
        counter.apply(.dataStarted(table: "public.m"), parallel: false)
        #expect(counter.snapshot.bytesDone == 1_024)
        counter.complete(objects: 6)
        #expect(counter.snapshot.objectsDone == 6)
        // Never past the total.
        counter.apply(.object, parallel: false)
        #expect(counter.snapshot.objectsDone == 6)
    }
}

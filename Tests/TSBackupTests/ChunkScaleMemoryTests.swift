import Foundation
import Testing
@testable import TSBackup

/// The backup's per-chunk bookkeeping at tens of thousands of chunks: the archive check streamed
/// line by line, and the manifest's checksum lines added and checked without splitting the text
/// into lines. Both must give exactly what the whole-text versions gave.
@Suite("per-chunk bookkeeping: streamed archive check and manifest checksum")
struct ChunkScaleMemoryTests {
    /// A `pg_restore --list` of `count` chunks as pg_dump writes it: header comments, the
    /// extension, the catalog data, and per chunk a TABLE, a DEFAULT, two INDEXes, an FK and a
    /// TABLE DATA entry; `dropping` names chunks whose entries of the given type are left out.
    static func listing(chunks count: Int, dropping: [(Int, String)] = []) -> (String, [String]) {
        var lines = [";", "; Archive created at 2026-11-27 15:00:00 UTC", ";     dbname: chunks", ";", "; Selected TOC Entries:", ";",
                     "4; 3079 17000 EXTENSION - timescaledb ", "5; 0 0 COMMENT - EXTENSION timescaledb "]
        for (n, (schema, name)) in ArchiveContents.requiredCatalogData.enumerated() {
            lines.append("\(6000 + n); 0 \(17100 + n) TABLE DATA \(schema) \(name) postgres")
        }
        let left = Set(dropping.map { "\($0.0) \($0.1)" })
        var chunks: [String] = []
        for n in 1...count {
            let name = "_hyper_1_\(n)_chunk"
            chunks.append("_timescaledb_internal." + name)
            let entries = [
                ("TABLE", "\(1000 + n); 1259 \(20000 + n) TABLE _timescaledb_internal \(name) postgres"),
                ("DEFAULT", "\(90000 + n); 2604 \(30000 + n) DEFAULT _timescaledb_internal \(name) battery postgres"),
                ("INDEX", "\(100000 + n); 1259 \(40000 + n) INDEX _timescaledb_internal \(name)_conditions_time_idx postgres"),
                ("INDEX", "\(110000 + n); 1259 \(50000 + n) INDEX _timescaledb_internal \(name)_conditions_device_time_idx postgres"),
                ("FK", "\(120000 + n); 2606 \(60000 + n) FK CONSTRAINT _timescaledb_internal \(name) \(n)_\(n)_conditions_device_id_fkey postgres"),
                ("TABLE DATA", "\(70000 + n); 0 \(20000 + n) TABLE DATA _timescaledb_internal \(name) postgres"),
            ]
            for (type, line) in entries where !left.contains("\(n) \(type)") { lines.append(line) }
        }
        return (lines.joined(separator: "\n") + "\n", chunks)
    }

    static func streamed(_ listing: String, chunks: [String], timescaleInstalled: Bool = true) -> [String] {
        var check = ArchiveCompleteness(chunks: chunks, timescaleInstalled: timescaleInstalled)
        for line in listing.split(separator: "\n") { check.take(line: line) }
        return check.missing
    }

    @Test("a complete listing misses nothing, streamed or whole")
    func complete() {
        let (listing, chunks) = Self.listing(chunks: 2_000)
        #expect(Self.streamed(listing, chunks: chunks).isEmpty)
        #expect(ArchiveContents(listing: listing).missingTimescaleEntries(chunks: chunks, timescaleInstalled: true).isEmpty)
    }

    @Test("a missing chunk table, chunk data, catalog data or extension is named the same way streamed and whole")
    func missingEntries() {
        var (listing, chunks) = Self.listing(chunks: 300, dropping: [(7, "TABLE"), (250, "TABLE DATA"), (300, "TABLE"), (300, "TABLE DATA")])
        listing = listing.split(separator: "\n").filter { !$0.contains("EXTENSION - timescaledb") && !$0.contains(" chunk_constraint ") }
            .joined(separator: "\n")
        // A chunk the manifest names that the archive never heard of.
        chunks.append("_timescaledb_internal._hyper_9_9_chunk")
        let expected = ["EXTENSION timescaledb", "TABLE DATA _timescaledb_catalog.chunk_constraint",
                        "TABLE _timescaledb_internal._hyper_1_7_chunk", "TABLE DATA _timescaledb_internal._hyper_1_250_chunk",
                        "TABLE _timescaledb_internal._hyper_1_300_chunk", "TABLE DATA _timescaledb_internal._hyper_1_300_chunk",
                        "TABLE _timescaledb_internal._hyper_9_9_chunk", "TABLE DATA _timescaledb_internal._hyper_9_9_chunk"]
        #expect(Self.streamed(listing, chunks: chunks) == expected)
        #expect(ArchiveContents(listing: listing).missingTimescaleEntries(chunks: chunks, timescaleInstalled: true) == expected)
        // Without TimescaleDB nothing is required.
        #expect(Self.streamed(listing, chunks: chunks, timescaleInstalled: false).isEmpty)
    }

    @Test("an index or constraint named like a chunk does not stand in for the chunk's TABLE entry")
    func onlyTablesCount() {
        let (listing, chunks) = Self.listing(chunks: 3, dropping: [(2, "TABLE")])
        // INDEX, DEFAULT and FK entries of chunk 2 are still there; its TABLE is not.
        #expect(Self.streamed(listing, chunks: chunks) == ["TABLE _timescaledb_internal._hyper_1_2_chunk"])
    }

    @Test("the faster parse gives the same fields, lines and header as before")
    func interned() throws {
        let (listing, _) = Self.listing(chunks: 10)
        let contents = ArchiveContents(listing: listing)
        let tables = contents.items.filter { $0.type == "TABLE" }
        #expect(tables.count == 10)
        // Same values as before: fields of the line, the line itself unchanged.
        let first = try #require(tables.first)
        #expect(first.schema == "_timescaledb_internal" && first.name == "_hyper_1_1_chunk" && first.owner == "postgres")
        #expect(first.line == "1001; 1259 20001 TABLE _timescaledb_internal _hyper_1_1_chunk postgres")
        let fk = try #require(contents.items.first { $0.type == "FK CONSTRAINT" })
        #expect(fk.schema == "_timescaledb_internal" && fk.name == "_hyper_1_1_chunk" && fk.owner == nil)
        #expect(contents.header["dbname"] == "chunks")
    }

    /// The stored text as tsbackup wrote it before (split into lines, two inserted): the format
    /// must not change, so older and newer tsbackup read each other's manifests.
    static func storedTheOldWay(_ canonical: String) -> Data {
        var lines = canonical.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let hex = FileSystem.sha256(of: Data(canonical.utf8))
        lines[lines.count - 3] += ","
        lines.insert("  \"manifest_sha256_copy\" : \"\(hex)\"", at: lines.count - 2)
        lines.insert("  \"manifest_sha256\" : \"\(hex)\",", at: 1)
        return Data(lines.joined(separator: "\n").utf8)
    }

    @Test("a manifest of thousands of chunks is stored byte for byte as before and checks back to its canonical text")
    func largeManifest() throws {
        let (_, chunks) = Self.listing(chunks: 5_000)
        struct Big: Codable { var chunkTables: [String]; var files: [BackupManifest.FileEntry] }
        let value = Big(chunkTables: chunks, files: chunks.enumerated().map {
            .init(path: "dump/\($0.offset).dat.gz", bytes: Int64($0.offset), sha256: FileSystem.sha256(of: Data($0.element.utf8)))
        })
        let canonical = try JSONOutput.encode(value) + "\n"
        let stored = try ManifestChecksum.stored(value)
        #expect(stored == Self.storedTheOldWay(canonical))
        guard case .checked(let content) = ManifestChecksum.open(stored) else {
            Issue.record("a large stamped manifest must check")
            return
        }
        #expect(content == Data(canonical.utf8))
        // A flipped digit deep inside is caught.
        var damaged = stored
        let middle = stored.count / 2
        let digit = try #require(stored[middle...].firstIndex { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        damaged[digit] = damaged[digit] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        guard case .corrupt = ManifestChecksum.open(damaged) else {
            Issue.record("a flipped digit in a large manifest went unnoticed")
            return
        }
    }

    static func manifest(chunks count: Int) -> BackupManifest {
        let (_, chunks) = Self.listing(chunks: count)
        let started = Date(timeIntervalSince1970: 1_795_000_000)
        var manifest = BackupManifest(
            id: "20261127T150000Z", label: "scale \"test\" / é", status: .complete, error: nil, startedAt: started, finishedAt: started,
            durationSeconds: 12.5, tsbackupVersion: TSBackupVersion.current,
            source: .init(host: "127.0.0.1", port: 5432, database: "chunks", user: "postgres"),
            server: .init(version: "15.20", versionNumber: 150020, majorVersion: 15),
            pgDump: .init(path: "/usr/lib/postgresql/15/bin/pg_dump", version: "pg_dump (PostgreSQL) 15.20", majorVersion: 15),
            timescaledb: .init(version: "2.19.3", catalogVersion: "2.19.3", license: "apache", schema: "public"),
            extensions: [], hypertables: [], plainTables: [], jobs: [], chunkTables: chunks, databaseBytes: 1 << 30,
            format: .directory, jobsUsed: 2, checksums: false, compression: 2, archive: "dump", rolesFile: "roles.sql",
            rolesSource: "pg_dumpall", files: [], warnings: ["a warning with \"quotes\"\nand a newline"], retries: [])
        manifest.files = (0..<(count + 3)).map {
            .init(path: "dump/\($0 + 4000).dat.gz", bytes: Int64($0 * 37), sha256: FileSystem.sha256(of: Data("\($0)".utf8)))
        }
        manifest.phaseSeconds = ["dump": 1.25, "archive check": 0.5]
        return manifest
    }

    /// `manifest(chunks:)` with a chunk path: its chunks cut into batches of `perBatch`, one of
    /// them empty (left to the encoder).
    static func batchedManifest(chunks count: Int, perBatch: Int) -> BackupManifest {
        var manifest = Self.manifest(chunks: count)
        var batches: [BackupManifest.ChunkPath.Batch] = stride(from: 0, to: count, by: perBatch).map { start in
            .init(archive: String(format: "chunks/batch-%05d.pgdump", start / perBatch + 1), hypertable: "public.conditions",
                  chunks: Array(manifest.chunkTables[start..<min(count, start + perBatch)]), rowCount: Int64(start))
        }
        batches.append(.init(archive: "chunks/batch-99999.pgdump", hypertable: "public.other", chunks: [], rowCount: 0))
        manifest.chunkPath = .init(reason: "lock budget", lockBudget: 6400, chunksPerBatch: perBatch, rootsFile: "hypertable-roots.json",
                                   batches: batches, fallbacks: [.init(hypertable: "public.c", reason: "compression is enabled")],
                                   droppedChunks: [.init(id: 3, table: "_timescaledb_internal._hyper_1_3_chunk", hypertable: "public.conditions")],
                                   rootChecks: [.init(hypertable: "public.conditions", windows: 4, rootRows: 10, batchRows: 10,
                                                      droppedAfterDump: ["_timescaledb_internal._hyper_1_9_chunk"])])
        return manifest
    }

    @Test("the chunk path's batch lists are spliced too, into one buffer of the exact size, stored as before")
    func splicedBatches() throws {
        let large = Self.batchedManifest(chunks: 3_000, perBatch: 400)
        let encoded = try JSONOutput.encodeData(large)
        let spliced = try #require(try large.splicedText())
        // Counted exactly: the one buffer is allocated once, at its final size.
        #expect(spliced.count == encoded.count)
        #expect(try large.canonicalJSON() == encoded)
        // Stored in one buffer: the same bytes as the canonical text stamped the old way.
        var canonical = encoded
        canonical.append(UInt8(ascii: "\n"))
        let stored = try ManifestChecksum.stored(large)
        #expect(stored == (try ManifestChecksum.stamped(canonical)))
        #expect(stored == Self.storedTheOldWay(String(decoding: canonical, as: UTF8.self)))
        guard case .checked(let content) = ManifestChecksum.open(stored) else {
            Issue.record("a stored manifest with spliced batches must check")
            return
        }
        #expect(try JSONOutput.decode(BackupManifest.self, from: content) == large)
        // A chunk name the encoder would escape, in a batch: the encoder writes it all.
        var odd = large
        odd.chunkPath?.batches[2].chunks[5] = "_timescaledb_internal.\"odd\\name\""
        #expect(try odd.splicedText() == nil)
        #expect(try odd.canonicalJSON() == JSONOutput.encodeData(odd))
        // A label holding a batch placeholder's text cannot mislead the splice.
        var tricky = large
        tricky.label = BackupManifest.batchPlaceholder(1)
        #expect(try tricky.canonicalJSON() == JSONOutput.encodeData(tricky))
    }

    @Test("a large backup manifest written without the encoder's tree is byte for byte the encoder's text")
    func splicedManifest() throws {
        let large = Self.manifest(chunks: 2_000)
        #expect(try large.canonicalJSON() == JSONOutput.encodeData(large))
        // Below the threshold, and with a name the encoder escapes, the encoder writes it all.
        let small = Self.manifest(chunks: 20)
        #expect(try small.canonicalJSON() == JSONOutput.encodeData(small))
        var odd = large
        odd.chunkTables[7] = "_timescaledb_internal.\"odd\\name\""
        #expect(try odd.canonicalJSON() == JSONOutput.encodeData(odd))
        // A label that holds a placeholder's text cannot mislead the splice.
        var tricky = large
        tricky.label = BackupManifest.chunkTablesPlaceholder
        #expect(try tricky.canonicalJSON() == JSONOutput.encodeData(tricky))
        // Stored and read back: the same manifest.
        let stored = try ManifestChecksum.stored(large)
        guard case .checked(let content) = ManifestChecksum.open(stored) else {
            Issue.record("a stored large manifest must check")
            return
        }
        #expect(try JSONOutput.decode(BackupManifest.self, from: content) == large)
    }
}


import Foundation
import Testing
@testable import TSBackup

/// zstd data files of directory archives: compressed by tsbackup after pg_dump wrote them
/// uncompressed, decompressed into scratch space for pg_restore.
@Suite("zstd data files: compression, decompression, corruption, --compress choices")
struct ArchiveDataCompressionTests {
    /// A directory standing in for a staged entry, removed by the caller.
    static func staging() throws -> String {
        let path = FileManager.default.temporaryDirectory.path + "/tsbackup-zstd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path + "/dump", withIntermediateDirectories: true)
        return path
    }

    /// COPY-like text: repetitive enough to compress, varied enough not to vanish.
    static func copyText(rows: Int, seed: Int) -> Data {
        var text = ""
        for row in 0..<rows {
            text += "2026-01-\(String(format: "%02d", row % 28 + 1)) 00:\(String(format: "%02d", row % 60)):00+00\t\(seed + row % 97)\t\(Double(row * 31 % 1000) / 10)\n"
        }
        return Data((text + "\\.\n\n").utf8)
    }

    static func manifest(files: [BackupManifest.FileEntry], compression: BackupManifest.FileCompression?) -> BackupManifest {
        let started = Date(timeIntervalSince1970: 1_795_000_000)
        var manifest = BackupManifest(
            id: "20261127T210000Z", label: nil, status: .complete, error: nil, startedAt: started, finishedAt: started,
            durationSeconds: 1, tsbackupVersion: TSBackupVersion.current,
            source: .init(host: "127.0.0.1", port: 5432, database: "db", user: "postgres"),
            server: .init(version: "15.20", versionNumber: 150020, majorVersion: 15),
            pgDump: .init(path: "/usr/lib/postgresql/15/bin/pg_dump", version: "pg_dump (PostgreSQL) 15.20", majorVersion: 15),
            timescaledb: nil, extensions: [], hypertables: [], plainTables: [], jobs: [], chunkTables: [], databaseBytes: 1,
            format: .directory, jobsUsed: 2, checksums: false, compression: 0, archive: "dump", rolesFile: "roles.sql",
            rolesSource: "pg_dumpall", files: files, warnings: [], retries: [])
        manifest.fileCompression = compression
        return manifest
    }

    @Test("data files are compressed with their hashes, toc.dat stays plain, and expand gives pg_dump's files back byte for byte")
    func roundTrip() async throws {
        let staging = try Self.staging()
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let plain: [String: Data] = ["3001.dat": Self.copyText(rows: 40_000, seed: 1), "3002.dat": Self.copyText(rows: 3, seed: 2),
                                     "3003.dat": Data(), "blob_16384.dat": Data((0..<5000).map { UInt8($0 % 251) })]
        for (name, data) in plain { try data.write(to: URL(fileURLWithPath: staging + "/dump/" + name)) }
        let toc = Data("not really a toc, but kept as it is".utf8)
        try toc.write(to: URL(fileURLWithPath: staging + "/dump/toc.dat"))

        let (files, summary) = try await ArchiveDataCompression.compress(archive: "dump", staging: staging, level: 3)
        #expect(files.map(\.path) == ["dump/3001.dat.zst", "dump/3002.dat.zst", "dump/3003.dat.zst", "dump/blob_16384.dat.zst"])
        #expect(summary.method == "zstd" && summary.level == 3 && summary.suffix == ".zst" && summary.files == 4)
        #expect(summary.plainBytes == plain.values.reduce(0) { $0 + Int64($1.count) })
        #expect(summary.bytes == files.reduce(0) { $0 + $1.bytes })
        // The plain files are gone, the table of contents is untouched.
        let left = try FileManager.default.contentsOfDirectory(atPath: staging + "/dump").sorted()
        #expect(left == ["3001.dat.zst", "3002.dat.zst", "3003.dat.zst", "blob_16384.dat.zst", "toc.dat"])
        // Each recorded hash and size is the stored file's, read back independently.
        for file in files {
            let (hex, bytes) = try FileSystem.sha256(of: staging + "/" + file.path)
            #expect(hex == file.sha256 && bytes == file.bytes)
        }
        let big = try #require(files.first { $0.path == "dump/3001.dat.zst" })
        #expect(big.bytes * 4 < Int64(plain["3001.dat"]!.count), "COPY text compresses")
        // The zstd tool (an independent decoder) reads what was written.
        let tool = try await ProcessRunner.run("zstd", ["-dcq", staging + "/dump/3001.dat.zst"])
        #expect(tool.succeeded && Data(tool.standardOutput.utf8) == plain["3001.dat"]!)

        let tocEntry = BackupManifest.FileEntry(path: "dump/toc.dat", bytes: Int64(toc.count), sha256: FileSystem.sha256(of: toc))
        let manifest = Self.manifest(files: files + [tocEntry], compression: summary)
        let expanded = try #require(try await ArchiveDataCompression.expand(manifest, directory: staging))
        defer { expanded.remove() }
        for (name, data) in plain {
            #expect(FileManager.default.contents(atPath: expanded.path + "/dump/" + name) == data, "\(name)")
        }
        #expect(FileManager.default.contents(atPath: expanded.path + "/dump/toc.dat") == toc)
        #expect(try FileManager.default.contentsOfDirectory(atPath: expanded.path + "/dump").count == 5)
        // Without file_compression (every backup before it, gzip by pg_dump) nothing is expanded.
        #expect(try await ArchiveDataCompression.expand(Self.manifest(files: [tocEntry], compression: nil), directory: staging) == nil)
    }

    @Test("a damaged zstd file does not decompress, the error names it, and nothing is left behind")
    func corruption() async throws {
        let staging = try Self.staging()
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let data = Self.copyText(rows: 20_000, seed: 7)
        try data.write(to: URL(fileURLWithPath: staging + "/dump/4001.dat"))
        let (files, summary) = try await ArchiveDataCompression.compress(archive: "dump", staging: staging, level: 1)
        let stored = staging + "/dump/4001.dat.zst"
        let original = try #require(FileManager.default.contents(atPath: stored))

        var cases: [(String, Data)] = []
        var flipped = original
        flipped[flipped.count / 2] ^= 0x01
        cases.append(("a flipped byte in the payload", flipped))
        var checksum = original
        checksum[checksum.count - 1] ^= 0x80
        cases.append(("a flipped byte in the frame's content checksum", checksum))
        cases.append(("cut short", original.prefix(original.count - 10)))
        cases.append(("bytes after the frame", original + original))
        cases.append(("empty", Data()))
        for (what, bytes) in cases {
            try bytes.write(to: URL(fileURLWithPath: stored))
            let out = staging + "/out.dat"
            #expect(throws: TSBackupError.self, "\(what)") {
                _ = try ZstdFile.decompress(stored, to: out, name: "dump/4001.dat.zst")
            }
            do {
                _ = try ZstdFile.decompress(stored, to: out, name: "dump/4001.dat.zst")
            } catch let error as TSBackupError {
                #expect(error.kind == .failed && error.message.contains("dump/4001.dat.zst"), "\(what): \(error.message)")
            }
            #expect(!FileManager.default.fileExists(atPath: out), "\(what): a partial output was left")
            // Through expand too (a manifest whose hash was made to match the damage): refused, no scratch left.
            let manifest = Self.manifest(files: [.init(path: files[0].path, bytes: Int64(bytes.count), sha256: FileSystem.sha256(of: bytes))], compression: summary)
            await #expect(throws: TSBackupError.self, "\(what)") { _ = try await ArchiveDataCompression.expand(manifest, directory: staging) }
        }
        try original.write(to: URL(fileURLWithPath: stored))
        #expect(try ZstdFile.decompress(stored, to: staging + "/out.dat", name: "x") == Int64(data.count))
    }

    @Test("pg_dump's 'finished item' lines start the compression of that file while the dump goes on; finish takes the rest")
    func compressesAsPgDumpFinishes() async throws {
        #expect(ArchiveDataCompression.finishedDataItem("pg_dump: finished item 4012 TABLE DATA _hyper_1_1_chunk") == 4012)
        #expect(ArchiveDataCompression.finishedDataItem("finished item 7 TABLE DATA devices\n") == 7)
        for other in ["pg_dump: finished item 4012 INDEX conditions_time_idx", "pg_dump: finished item x TABLE DATA t",
                      "pg_dump: dumping contents of table \"public.devices\"", "pg_dump: finished item -3 TABLE DATA t", ""] {
            #expect(ArchiveDataCompression.finishedDataItem(other) == nil, "\(other)")
        }
        let staging = try Self.staging()
        defer { try? FileManager.default.removeItem(atPath: staging) }
        for id in 1...6 { try Self.copyText(rows: 500 * id, seed: id).write(to: URL(fileURLWithPath: staging + "/dump/\(id).dat")) }
        try Data("toc".utf8).write(to: URL(fileURLWithPath: staging + "/dump/toc.dat"))
        let compressor = DataFileCompressor(staging: staging, archive: "dump", level: 2, lanes: 2)
        compressor.submit("2.dat")
        compressor.submit("5.dat")
        compressor.submit("2.dat")  // reported twice: compressed once
        await compressor.idle()
        // The reported files are done before the dump ends; the others are still plain.
        let early = try FileManager.default.contentsOfDirectory(atPath: staging + "/dump")
        #expect(early.contains("2.dat.zst") && early.contains("5.dat.zst") && !early.contains("2.dat") && early.contains("1.dat"))
        let (files, summary) = try await compressor.finish()
        #expect(files.map(\.path) == (1...6).map { "dump/\($0).dat.zst" })
        #expect(summary.files == 6)
        #expect(try FileManager.default.contentsOfDirectory(atPath: staging + "/dump").sorted() == ((1...6).map { "\($0).dat.zst" } + ["toc.dat"]).sorted())
    }

    @Test("--compress: gzip levels as before, zstd with or without a level, nothing else")
    func choices() {
        #expect(Backup.CompressionChoice(argument: "0") == .pgDump(level: 0))
        #expect(Backup.CompressionChoice(argument: "6") == .pgDump(level: 6))
        #expect(Backup.CompressionChoice(argument: "gzip:9") == .pgDump(level: 9))
        #expect(Backup.CompressionChoice(argument: "none") == .pgDump(level: 0))
        #expect(Backup.CompressionChoice(argument: "zstd") == .zstd(level: Backup.defaultZstdLevel))
        #expect(Backup.CompressionChoice(argument: "ZSTD:1") == .zstd(level: 1))
        #expect(Backup.CompressionChoice(argument: "zstd:19") == .zstd(level: 19))
        for bad in ["10", "-1", "zstd:0", "zstd:20", "zstd:", "gzip", "lz4", "", "zstd:3x", "٣"] {
            #expect(Backup.CompressionChoice(argument: bad) == nil, "\(bad)")
        }
        var request = Backup.Request(settings: ConnectionSettings(host: "h", port: 5432, user: "u", password: nil, database: "d"),
                                     repository: RepositoryAccess(path: "/nowhere"))
        #expect(request.zstdLevel == Backup.defaultZstdLevel && request.compression == Backup.defaultCompression)
        #expect(request.compressesDataFiles(.directory) && !request.compressesDataFiles(.custom))
        request.apply(.pgDump(level: 6))
        #expect(request.zstdLevel == nil && request.compression == 6 && !request.compressesDataFiles(.directory))
        request.apply(.zstd(level: 9))
        #expect(request.zstdLevel == 9 && request.compression == Backup.defaultCompression)
    }

    @Test("file_compression goes into the manifest and the large manifest's spliced text stays the encoder's")
    func manifestField() throws {
        var manifest = ChunkScaleMemoryTests.manifest(chunks: 600)
        manifest.fileCompression = .init(method: "zstd", level: 3, suffix: ".zst", files: 603, plainBytes: 123_456_789, bytes: 12_345_678)
        let text = try manifest.canonicalJSON()
        #expect(text == (try JSONOutput.encodeData(manifest)))
        let decoded = try JSONOutput.decode(BackupManifest.self, from: text)
        #expect(decoded.fileCompression == manifest.fileCompression)
        #expect(String(decoding: text, as: UTF8.self).contains("\"plain_bytes\" : 123456789"))
        #expect(manifest.renderReport().contains("zstd level 3 by tsbackup"))
    }
}

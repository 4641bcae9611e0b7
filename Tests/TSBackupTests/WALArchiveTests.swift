import Crypto
import Foundation
import Testing
@testable import TSBackup

@Suite("WAL file names, archive layout, object format and gap detection")
struct WALArchiveUnitTests {
    static let mb16: Int64 = 16 << 20

    @Test("segment names parse and print as PostgreSQL writes them")
    func parsing() throws {
        let segment = try #require(WALFileName("0000000100000002000000FF"))
        #expect(segment.timeline == 1 && segment.high == 2 && segment.low == 0xFF && segment.kind == .segment)
        #expect(segment.segmentNumber(segmentSize: Self.mb16) == 2 * 256 + 255)
        #expect(segment.name == "0000000100000002000000FF")
        #expect(WALFileName("0000000A.history")?.kind == .history)
        #expect(WALFileName("0000000A.history")?.timeline == 10)
        #expect(WALFileName("000000010000000000000003.partial")?.kind == .partial)
        let backup = try #require(WALFileName("000000010000000000000002.00000028.backup"))
        #expect(backup.kind == .backup(offset: 0x28))
        #expect(backup.name == "000000010000000000000002.00000028.backup")
        for bad in ["", "00000001", "0000000100000000000000", "0000000100000000000000zz", "000000010000000000000001.gz",
                    "../00000001000000000000001", "0000000100000000000000010", "000000010000000000000001.0000028.backup",
                    "00000001.History", "000000010000000000000001/x", "000000000000000000000001", "000000010000000000000001.00000028.bakup"] {
            #expect(WALFileName(bad) == nil, "\(bad)")
        }
    }

    @Test("segment-number arithmetic wraps the low word at 2^32 bytes of WAL")
    func arithmetic() throws {
        let last = try #require(WALFileName("0000000100000000000000FF"))
        #expect(last.advanced(by: 1, segmentSize: Self.mb16).name == "000000010000000100000000")
        #expect(WALFileName(timeline: 3, segmentNumber: 256, segmentSize: Self.mb16).name == "000000030000000100000000")
        // 64 MB segments: 64 per word.
        #expect(WALFileName(timeline: 1, segmentNumber: 64, segmentSize: 64 << 20).name == "000000010000000100000000")
        #expect(WALFileName.segment(containing: 0x1_2345_6789, timeline: 2, segmentSize: Self.mb16).name == "000000020000000100000023")
        #expect(WALFileName.isValidSegmentSize(Self.mb16) && WALFileName.isValidSegmentSize(1 << 20) && WALFileName.isValidSegmentSize(1 << 30))
        #expect(!WALFileName.isValidSegmentSize(3 << 20) && !WALFileName.isValidSegmentSize(1 << 31) && !WALFileName.isValidSegmentSize(512 << 10))
    }

    @Test("the repository layout names objects by system identifier and timeline, and reads them back")
    func layout() throws {
        let file = try #require(WALFileName("000000020000000000000010"))
        let object = ArchiveObject.wal(systemIdentifier: 7_311_111_111_111_111_111, file: file)
        let name = ArchiveLayout.name(of: object)
        #expect(name == "wal/7311111111111111111/00000002/000000020000000000000010.zst")
        #expect(ArchiveLayout.object(named: name) == object)
        #expect(ArchiveLayout.object(named: "wal/archive.json") == .walMarker)
        #expect(ArchiveLayout.name(of: .walMarker) == "wal/archive.json")
        // Temporary files, another timeline directory, and strangers are not archive objects.
        #expect(ArchiveLayout.object(named: "wal/7311111111111111111/00000002/.000000020000000000000010.zst.42.tmp") == nil)
        #expect(ArchiveLayout.object(named: "wal/7311111111111111111/00000001/000000020000000000000010.zst") == nil)
        #expect(ArchiveLayout.object(named: "wal/0731/00000002/000000020000000000000010.zst") == nil)
        #expect(ArchiveLayout.object(named: "backups/x/manifest.json") == nil)
    }

    func objects(_ names: [String], system: UInt64 = 42) -> [ArchiveObjectInfo] {
        names.map { ArchiveObjectInfo(object: .wal(systemIdentifier: system, file: WALFileName($0)!), storedBytes: 100) }
    }

    @Test("ranges and gaps per timeline")
    func gaps() throws {
        let marker = WALArchiveMarker(systemIdentifier: 42, walSegmentSize: Self.mb16, walPageMagic: 0xD110)
        var infos = objects(["000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
                             "000000010000000000000006", "0000000100000000000000FF", "000000010000000100000000",
                             "000000010000000000000003.00000028.backup", "00000002.history",
                             "000000020000000000000007", "000000020000000000000008", "000000010000000000000007.partial"])
        infos += objects(["000000010000000000000004"], system: 43)  // another cluster's: ignored
        let archive = WALArchive(marker: marker, objects: infos)
        #expect(archive.timelines.map(\.timeline) == [1, 2])
        let one = try #require(archive.timeline(1))
        #expect(one.ranges == [1...3, 6...6, 255...256])
        #expect(one.gaps == [4...5, 7...254])
        #expect(one.otherFiles.map(\.name) == ["000000010000000000000003.00000028.backup", "000000010000000000000007.partial"])
        #expect(one.lastSegment(segmentSize: Self.mb16)?.name == "000000010000000100000000")
        let two = try #require(archive.timeline(2))
        #expect(two.ranges == [7...8] && two.gaps.isEmpty)
        #expect(two.otherFiles.map(\.name) == ["00000002.history"])
        #expect(archive.historyFiles.map(\.name) == ["00000002.history"])

        let first = WALFileName("000000010000000000000001")!
        #expect(archive.hasEverySegment(from: first, through: WALFileName("000000010000000000000003")!))
        #expect(archive.missingSegments(from: first, through: WALFileName("000000010000000000000006")!).map(\.name)
                == ["000000010000000000000004", "000000010000000000000005"])
        #expect(archive.hasEverySegment(from: WALFileName("0000000100000000000000FF")!, through: WALFileName("000000010000000100000000")!))

        let summary = archive.summary
        #expect(summary.timelines.first?.ranges == ["000000010000000000000001-000000010000000000000003", "000000010000000000000006",
                                                   "0000000100000000000000FF-000000010000000100000000"])
        #expect(summary.timelines.first?.gaps == ["000000010000000000000004-000000010000000000000005",
                                                 "000000010000000000000007-0000000100000000000000FE"])
        #expect(summary.timelines.last?.firstSegment == "000000020000000000000007" && summary.systemIdentifier == "42")

        let doomed = archive.objectsBefore(WALFileName("000000020000000000000007")!).map { ArchiveLayout.name(of: $0) }
        #expect(doomed.count == 5)  // segments 1, 2, 3, 6 and the .backup of segment 3; not the history, partial 7, or 255+
        #expect(!doomed.contains { $0.contains(".history") || $0.contains(".partial") || $0.contains("0000000100000000000000FF") })
    }

    @Test("timeline histories pick the timeline each segment is read from, and gaps are found along them")
    func histories() throws {
        let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/50000A0\tbefore 2026-11-27 10:00:00+00\n"
        let history = try #require(TimelineHistory(timeline: 3, text: text))
        #expect(history.ancestors == [.init(timeline: 1, switchpoint: 0x3000158), .init(timeline: 2, switchpoint: 0x50000A0)])
        #expect([1, 2, 3, 4, 5, 6].map { history.timeline(forSegment: $0, segmentSize: Self.mb16) } == [1, 1, 2, 2, 3, 3])
        #expect(TimelineHistory(root: 1).timeline(forSegment: 9, segmentSize: Self.mb16) == 1)
        #expect(TimelineHistory(timeline: 2, text: "1\tnot-an-lsn\n") == nil)
        #expect(TimelineHistory.parseLSN("16/B374D848") == 0x16_B374_D848)

        let marker = WALArchiveMarker(systemIdentifier: 42, walSegmentSize: Self.mb16, walPageMagic: 0xD110)
        let archive = WALArchive(marker: marker, objects: objects([
            "000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
            "000000020000000000000003", "000000020000000000000004", "000000030000000000000006"]))
        #expect(archive.missingSegments(from: 1, through: 6, along: history).map(\.name) == ["000000030000000000000005"])
        #expect(archive.missingSegments(from: 1, through: 4, along: history).isEmpty)
    }

    @Test("WAL objects round-trip, and altered content or size is refused")
    func objectFormat() throws {
        var plain = Data(count: 1 << 20)
        for i in stride(from: 0, to: plain.count, by: 97) { plain[i] = UInt8(i % 251) }
        let digest = Array(SHA256.hash(data: plain))
        let encoded = try WALObjectFormat.encode(plain, sha256: digest)
        #expect(encoded.count < plain.count / 4)
        let (header, decoded) = try WALObjectFormat.decode(encoded)
        #expect(decoded == plain && header.sha256 == digest && header.plainSize == Int64(plain.count))

        var flipped = encoded
        flipped[flipped.count - 5] ^= 0x40
        #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(flipped) }
        var wrongDigest = encoded
        wrongDigest[30] ^= 1
        #expect { try WALObjectFormat.decode(wrongDigest) } throws: { ($0 as? WALObjectError).map { if case .checksumMismatch = $0 { true } else { false } } ?? false }
        #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(encoded.prefix(40)) }
        #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(Data("not a wal object at all, but long enough to have a header".utf8)) }
        #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(encoded.prefix(encoded.count - 10)) }
    }

    /// A segment-like file: runs of zeros and of varied bytes, compressible as WAL is.
    static func walLike(_ count: Int) -> Data {
        var plain = Data(count: count)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in stride(from: 0, to: count, by: 7) where (i / 8192) % 3 != 0 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            plain[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        return plain
    }

    /// Decodes `object` with the streaming decoder, fed in pieces of `piece` bytes.
    static func streamDecode(_ object: Data, piece: Int) throws -> (WALObjectFormat.Header, Data) {
        let decoder = WALObjectFormat.Decoder()
        var plain = Data()
        var offset = object.startIndex
        while offset < object.endIndex {
            let end = min(offset + piece, object.endIndex)
            try decoder.update(object[offset..<end]) { plain.append(contentsOf: $0) }
            offset = end
        }
        return (try decoder.finish(), plain)
    }

    @Test("streamed WAL objects are the whole-object format both ways; the streaming decoder refuses what decode refuses")
    func streamedObjectFormat() throws {
        let plain = Self.walLike(3 << 20 | 12345)
        let digest = Array(SHA256.hash(data: plain))
        // Written the old way (one piece; with zstd's frame checksum and, as builds before it
        // wrote, without), read in pieces of several sizes (the first 5 payload bytes, which say
        // whether the frame has a checksum, split across pieces too).
        let old = try WALObjectFormat.encode(plain, sha256: digest, frameChecksum: false)
        for object in [try WALObjectFormat.encode(plain, sha256: digest), old] {
            for piece in [1, 51, 52, 53, 54, 55, 56, 57, 4096, 1 << 20, object.count] where piece != 1 || object.count < 2_000_000 {
                let (header, decoded) = try Self.streamDecode(object, piece: piece)
                #expect(decoded == plain && header.sha256 == digest && header.plainSize == Int64(plain.count), "piece \(piece)")
            }
        }
        // Written in pieces (not aligned to the encoder's), read the old way.
        let encoder = try WALObjectFormat.Encoder(pledgedSize: Int64(plain.count))
        var offset = 0
        for size in [1, 100_000, 1 << 20, 3 << 20] where offset < plain.count {
            let end = min(offset + size, plain.count)
            try plain[offset..<end].withUnsafeBytes { try encoder.update($0) }
            offset = end
        }
        let encoded = try encoder.finish()
        #expect(encoded.digest == digest && encoded.plainBytes == Int64(plain.count))
        let streamed = encoded.payload.reduce(encoded.header, +)
        #expect(streamed.count < plain.count / 3)
        let (header, decoded) = try WALObjectFormat.decode(streamed)
        #expect(decoded == plain && header.sha256 == digest)
        // Streamed both ways, at a size that fills the decoder's output buffer exactly at the
        // frame's end (as a 16 MiB segment does).
        for size in [2 << 20, plain.count] {
            let part = plain.prefix(size)
            let both = try WALObjectFormat.Encoder(pledgedSize: Int64(size))
            try part.withUnsafeBytes { try both.update($0) }
            let object = try both.finish()
            for piece in [65536, 1 << 20, 1 << 22] {
                let (back, bytes) = try Self.streamDecode(object.payload.reduce(object.header, +), piece: piece)
                #expect(bytes == part && back.plainSize == Int64(size), "size \(size), piece \(piece)")
            }
        }

        // Damage the streaming decoder must refuse, in objects with zstd's frame checksum
        // (`streamed`) and without (`old`): a flipped payload byte, a cut object (also just its
        // 4-byte frame checksum), bytes appended, no header.
        let garbage = Data("not a wal object at all, but long enough to have a header".utf8)
        for object in [streamed, old] {
            var flipped = object
            flipped[flipped.count / 2] ^= 0x40
            var lastByte = object
            lastByte[lastByte.count - 1] ^= 0x01
            for (name, bad) in [("flipped", flipped), ("last byte", lastByte), ("cut", object.prefix(object.count - 10)),
                                ("cut 4", object.prefix(object.count - 4)), ("appended", object + Data([1, 2, 3])),
                                ("another frame appended", object + object.suffix(from: WALObjectFormat.headerSize)),
                                ("short", object.prefix(40)), ("garbage", garbage)] {
                #expect(throws: WALObjectError.self, "\(name)") { _ = try Self.streamDecode(bad, piece: 65536) }
            }
        }
        // A wrong SHA-256 field alone: an object without a frame checksum is refused by its
        // SHA-256; one with it streams its (right) content, the frame checksum having confirmed
        // it, and the whole-object read (history and .backup files) and a push of the same file still compare
        // the field and refuse it.
        let isChecksumMismatch = { (error: any Error) in (error as? WALObjectError).map { if case .checksumMismatch = $0 { true } else { false } } ?? false }
        var oldWrongDigest = old
        oldWrongDigest[30] ^= 1
        #expect { _ = try Self.streamDecode(oldWrongDigest, piece: 65536) } throws: { isChecksumMismatch($0) }
        var wrongDigest = streamed
        wrongDigest[30] ^= 1
        #expect(try Self.streamDecode(wrongDigest, piece: 65536).1 == plain)
        #expect { _ = try WALObjectFormat.decode(wrongDigest) } throws: { isChecksumMismatch($0) }
        // Which check confirmed the content.
        for (object, byFrame) in [(streamed, true), (old, false)] {
            let decoder = WALObjectFormat.Decoder()
            try decoder.update(object) { _ in }
            _ = try decoder.finish()
            #expect(decoder.checkedByFrameChecksum == byFrame)
        }
        // An object whose payload decompresses to more than its header says stops at the excess.
        let small = Data(repeating: 7, count: 1000)
        var lying = try WALObjectFormat.encode(Data(repeating: 7, count: 200_000), sha256: Array(SHA256.hash(data: small)))
        lying.replaceSubrange(12..<20, with: ObjectFormat.bigEndian(UInt64(small.count)))
        var handed = 0
        #expect(throws: WALObjectError.self) {
            let decoder = WALObjectFormat.Decoder()
            try decoder.update(lying) { handed += $0.count }
        }
        #expect(handed <= small.count)
    }

    @Test("a local repository stores pieces and reads them back in pieces, plain and encrypted, in the whole-object format", arguments: [false, true])
    func localPieces(encrypted: Bool) async throws {
        let root = NSTemporaryDirectory() + "tsbackup-walpieces-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let encryption = encrypted
            ? try RepositoryEncryption.create(keyFile: EncryptionKeyFile(path: "/test/key", contents: Array("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".utf8))).0
            : nil
        let repository = LocalRepository(root: root, codec: ObjectCodec(encryption: encryption))
        let plain = Self.walLike(5 << 20)
        let object = ArchiveObject.wal(systemIdentifier: 42, file: try #require(WALFileName("000000010000000000000007")))
        let pieces = [plain.prefix(10), plain[10..<(3 << 20)], plain.suffix(from: 3 << 20)].map { Data($0) }
        #expect(try await repository.createArchiveObject(object, pieces: pieces) == .created)
        #expect(try await repository.createArchiveObject(object, pieces: pieces) == .exists)
        // The whole-object read (the old path) sees exactly the bytes.
        #expect(try await repository.readArchiveObject(object) == plain)
        var read = Data()
        var calls = 0
        #expect(try await repository.readArchiveObject(object) { read.append($0); calls += 1 })
        #expect(read == plain && calls > 1)
        let missing = ArchiveObject.wal(systemIdentifier: 42, file: try #require(WALFileName("000000010000000000000008")))
        #expect(try await repository.readArchiveObject(missing) { _ in Issue.record("a missing object has no pieces") } == false)
        if encrypted {
            // A damaged stored object is refused before its bad segment is handed over.
            let path = repository.archivePath(object)
            var stored = try Data(contentsOf: URL(fileURLWithPath: path))
            stored[stored.count - 100] ^= 1
            try stored.write(to: URL(fileURLWithPath: path))
            var handed = 0
            await #expect(throws: TSBackupError.self) { _ = try await repository.readArchiveObject(object) { handed += $0.count } }
            #expect(handed < plain.count)
        }
    }

    @Test("the library's wal-fetch (the path S3 and encrypted repositories take) relies on the frame checksum too: a flipped payload bit fails and leaves nothing, an old object is SHA-256-checked", arguments: [false, true])
    func libraryFetchFrameChecksum(encrypted: Bool) async throws {
        let root = NSTemporaryDirectory() + "tsbackup-walframe-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/out", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let encryption = encrypted
            ? try RepositoryEncryption.create(keyFile: EncryptionKeyFile(path: "/test/key", contents: Array("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".utf8))).0
            : nil
        let repository = LocalRepository(root: root + "/repo", codec: ObjectCodec(encryption: encryption))
        _ = try await WALArchiveMarker.claim(repository, systemIdentifier: 42, segmentSize: 1 << 20, magic: 0xD110)
        let name = "000000010000000000000007"
        let object = ArchiveObject.wal(systemIdentifier: 42, file: try #require(WALFileName(name)))
        let plain = Self.walLike(1 << 20)
        let digest = Array(SHA256.hash(data: plain))
        let destination = root + "/out/RECOVERYXLOG"
        func fetch(_ stored: Data) async throws -> WALFetch.Outcome {
            try? FileManager.default.removeItem(atPath: repository.archivePath(object))
            unlink(destination)
            #expect(try await repository.createArchiveObject(object, pieces: [stored]) == .created)
            return try await WALFetch.run(name: name, destination: destination, repository: repository, workingDirectory: "/")
        }
        let flipAt = 52 + 300_000 / 4  // inside the payload, before the encryption's tag
        for (object, label) in [(try WALObjectFormat.encode(plain, sha256: digest), "frame checksum"),
                                (try WALObjectFormat.encode(plain, sha256: digest, frameChecksum: false), "old")] {
            #expect(try await fetch(object) == .restored(file: try #require(WALFileName(name)), bytes: Int64(plain.count)), "\(label)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: destination)) == plain)
            // Payload damage before it was stored (encryption cannot see it): refused by the
            // frame checksum or the SHA-256, nothing at DEST.
            for position in [flipAt, object.count - 1] {
                var bad = object
                bad[position] ^= 0x04
                await #expect(throws: TSBackupError.self, "\(label), byte \(position)") { _ = try await fetch(bad) }
                #expect(!FileManager.default.fileExists(atPath: destination) && !FileManager.default.fileExists(atPath: destination + ".tsbackup-tmp"))
            }
        }
    }

    @Test("the long page header gives the system identifier and segment size")
    func pageHeader() throws {
        var page = Data(count: 8192)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { page.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: $0) }
        }
        put(UInt16(0xD110), at: 0)
        put(UInt16(0x0002), at: 2)
        put(UInt32(1), at: 4)
        put(UInt64(0x0100_0000), at: 8)
        put(UInt64(7_311_111_111_111_111_111), at: 24)
        put(UInt32(16 << 20), at: 32)
        put(UInt32(8192), at: 36)
        let header = try #require(ClusterIdentity.segmentHeader(page))
        #expect(header.systemIdentifier == 7_311_111_111_111_111_111 && header.segmentSize == 16 << 20 && header.blockSize == 8192)
        #expect(header.magic == ClusterIdentity.pageMagic15 && header.timeline == 1)
        put(UInt16(0), at: 2)  // a short header carries no system identifier
        #expect(ClusterIdentity.segmentHeader(page) == nil)
    }
}

import Crypto
import Foundation
import Testing
@testable import TSBackup

/// The synchronous wal-push/wal-fetch path (`TSBackupWAL`) that `tsbackup-wal` and `tsbackup`
/// run for local repositories: the same objects, marker and refusals as the library's path.
@Suite("Local WAL archive fast path: format, refusals, and what it hands to the full command")
struct LocalWALArchiveTests {
    /// A 1 MB "segment" whose first page carries a long page header for `system`.
    static func segment(system: UInt64, seed: UInt8 = 0) -> Data {
        var data = WALArchiveUnitTests.walLike(1 << 20)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { data.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: $0) }
        }
        put(UInt16(0xD110), at: 0)
        put(UInt16(0x0002), at: 2)
        put(UInt32(1), at: 4)
        put(system, at: 24)
        put(UInt32(1 << 20), at: 32)
        put(UInt32(8192), at: 36)
        data[500_000] = seed
        return data
    }

    /// A scratch directory with a plain repository (its marker written by the library).
    static func withRepository(_ body: (_ scratch: String, _ root: String) throws -> Void) throws {
        let scratch = NSTemporaryDirectory() + "tsbackup-walfast-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = scratch + "/repo"
        _ = try LocalRepository.open(root, create: true)
        try body(scratch, root)
    }

    /// What ``push(system:name:scratch:root:sourceLocation:)`` archived.
    struct Pushed {
        let plain: Data
        let file: WALFileName
        let plainBytes: Int64
        let storedBytes: Int64
        /// The object's path in the repository, and its bytes as stored.
        let objectPath: String
        let stored: Data
    }

    /// Writes a segment of `system` as `name` in `scratch` (standing in for the data directory)
    /// and pushes it as archive_command gives it (%p relative to the data directory). Nil, with
    /// the failure recorded, when it was not archived.
    static func push(system: UInt64, name: String, scratch: String, root: String,
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> Pushed? {
        let plain = segment(system: system)
        try plain.write(to: URL(fileURLWithPath: scratch + "/" + name))
        guard case .archived(let file, let plainBytes, let storedBytes) = try LocalWALArchive.push(path: name, root: root, dataDirectory: scratch) else {
            Issue.record("not archived", sourceLocation: sourceLocation)
            return nil
        }
        let objectPath = root + "/wal/\(system)/00000001/\(name).zst"
        return Pushed(plain: plain, file: file, plainBytes: plainBytes, storedBytes: storedBytes, objectPath: objectPath,
                      stored: try Data(contentsOf: URL(fileURLWithPath: objectPath)))
    }

    @Test("a header declaring more than 1 GB (PostgreSQL's largest segment) is refused, whole or streamed, before anything that size is allocated")
    func declaredSizeCap() throws {
        func object(declaring size: UInt64) -> Data {
            var bytes = Array("TSBWAL01".utf8) + [1, 0, 0, 0]
            bytes += (0..<8).map { UInt8(truncatingIfNeeded: size >> (56 - 8 * $0)) }
            bytes += [UInt8](repeating: 0, count: 32)
            return Data(bytes) + Data([0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0])
        }
        #expect(try WALObjectFormat.header(of: object(declaring: 1 << 30)).plainSize == 1 << 30)
        for size in [UInt64(1 << 30) + 1, 1 << 31, UInt64.max] {
            #expect { try WALObjectFormat.header(of: object(declaring: size)) } throws: { error in
                guard let error = error as? WALObjectError, case .malformed(let reason) = error else { return false }
                return reason.contains("\(size) bytes") && reason.contains("1 GB")
            }
            #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(object(declaring: size)) }
            #expect(throws: WALObjectError.self) { try WALObjectFormat.Decoder().update(object(declaring: size)) { _ in Issue.record("nothing is handed over") } }
        }
    }

    @Test("push stores the library's object format; fetch restores the bytes; repeats, conflicts, other clusters, misses and damage")
    func pushAndFetch() throws {
        try Self.withRepository { scratch, root in
            let name = "000000010000000000000003"
            // Relative to the data directory, as archive_command gives %p.
            guard let pushed = try Self.push(system: 7_000_000_000_000_000_001, name: name, scratch: scratch, root: root) else { return }
            let (plain, file, objectPath, stored) = (pushed.plain, pushed.file, pushed.objectPath, pushed.stored)
            #expect(file.name == name && pushed.plainBytes == Int64(plain.count))
            #expect(objectPath == root + "/wal/7000000000000000001/00000001/\(name).zst")
            #expect(Int64(stored.count) == pushed.storedBytes && stored.count < plain.count / 2)
            // The library reads it as its own: whole, and through the repository in pieces.
            let (header, decoded) = try WALObjectFormat.decode(stored)
            #expect(decoded == plain && header.sha256 == Array(SHA256.hash(data: plain)))
            let marker = try JSONOutput.decode(WALArchiveMarker.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/wal/archive.json")))
            #expect(marker.system == 7_000_000_000_000_000_001 && marker.walSegmentSize == 1 << 20 && marker.walPageMagic == "D110")
            #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/wal/7000000000000000001/00000001") == [name + ".zst"], "no temporary file left")

            // Fetched back, byte for byte, through a temporary file that does not stay.
            #expect(try LocalWALArchive.fetch(name: name, destination: "RECOVERYXLOG", root: root, workingDirectory: scratch) == .restored(file: file, bytes: Int64(plain.count)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: scratch + "/RECOVERYXLOG")) == plain)
            #expect(!FileManager.default.fileExists(atPath: scratch + "/RECOVERYXLOG.tsbackup-tmp"))

            // The same content again: fine, nothing stored.
            #expect(try LocalWALArchive.push(path: scratch + "/" + name, root: root, dataDirectory: "/") == .alreadyArchived(file: file))
            // Different content under the name: refused, the stored object kept.
            let forged = scratch + "/forged/" + name
            try FileManager.default.createDirectory(atPath: scratch + "/forged", withIntermediateDirectories: true)
            try Self.segment(system: 7_000_000_000_000_000_001, seed: 99).write(to: URL(fileURLWithPath: forged))
            #expect { try LocalWALArchive.push(path: forged, root: root, dataDirectory: "/") } throws: { error in
                let error = error as? TSBackupError
                // Both files named whole: each SHA-256 in full (64 hex digits), and the sizes.
                let forgedDigest = WALDigest.hex(Array(SHA256.hash(data: try! Data(contentsOf: URL(fileURLWithPath: forged)))))
                return error?.kind == .failed && error?.message.contains("different content") == true && error?.message.contains(name) == true
                    && error?.message.contains(WALDigest.hex(Array(SHA256.hash(data: plain)))) == true && error?.message.contains(forgedDigest) == true
                    && error?.message.contains("\(plain.count) bytes") == true
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: objectPath)) == stored)
            // Another cluster's segment: refused as a precondition, nothing stored for it.
            let other = scratch + "/other/" + name
            try FileManager.default.createDirectory(atPath: scratch + "/other", withIntermediateDirectories: true)
            try Self.segment(system: 42).write(to: URL(fileURLWithPath: other))
            #expect { try LocalWALArchive.push(path: other, root: root, dataDirectory: "/") } throws: { error in
                let error = error as? TSBackupError
                return error?.kind == .precondition && error?.message.contains("another PostgreSQL cluster") == true
            }
            #expect(!FileManager.default.fileExists(atPath: root + "/wal/42"))
            // A segment whose size is not its header's: refused.
            let cut = scratch + "/cut/" + name
            try FileManager.default.createDirectory(atPath: scratch + "/cut", withIntermediateDirectories: true)
            try plain.prefix(500_000).write(to: URL(fileURLWithPath: cut))
            #expect(throws: TSBackupError.self) { try LocalWALArchive.push(path: cut, root: root, dataDirectory: "/") }
            // A name PostgreSQL does not archive, and a file that is not there.
            #expect { try LocalWALArchive.push(path: scratch + "/notwal", root: root, dataDirectory: "/") } throws: { ($0 as? TSBackupError)?.kind == .usage }
            #expect { try LocalWALArchive.push(path: scratch + "/000000010000000000000009", root: root, dataDirectory: "/") } throws: { ($0 as? TSBackupError)?.kind == .notFound }

            // Missing files are an outcome, and leave nothing behind.
            #expect(try LocalWALArchive.fetch(name: "0000000100000000000000F0", destination: scratch + "/miss", root: root, workingDirectory: "/") == .missing)
            #expect(try LocalWALArchive.fetch(name: "00000009.history", destination: scratch + "/miss", root: root, workingDirectory: "/") == .missing)
            #expect(!FileManager.default.fileExists(atPath: scratch + "/miss"))

            // Damage: a flipped payload byte, and a header declaring more than 1 GB.
            var tampered = stored
            tampered[tampered.count - 100] ^= 0x01
            try tampered.write(to: URL(fileURLWithPath: objectPath))
            #expect { try LocalWALArchive.fetch(name: name, destination: scratch + "/bad", root: root, workingDirectory: "/") } throws: { error in
                let error = error as? TSBackupError
                return error?.kind == .failed && error?.message.contains("corrupt") == true && error?.message.contains(name) == true
            }
            var oversized = stored
            oversized.replaceSubrange(12..<20, with: [0, 0, 0, 0, 0x40, 0, 0, 1])
            try oversized.write(to: URL(fileURLWithPath: objectPath))
            #expect { try LocalWALArchive.fetch(name: name, destination: scratch + "/bad", root: root, workingDirectory: "/") } throws: { error in
                (error as? TSBackupError)?.message.contains("largest WAL segment (1 GB)") == true
            }
            #expect(!FileManager.default.fileExists(atPath: scratch + "/bad") && !FileManager.default.fileExists(atPath: scratch + "/bad.tsbackup-tmp"))
        }
    }

    @Test("fetch relies on zstd's frame checksum where the object has one: any flipped payload or size byte fails and leaves nothing; objects without one keep the SHA-256 check")
    func frameChecksum() throws {
        try Self.withRepository { scratch, root in
            let name = "000000010000000000000004"
            guard let pushed = try Self.push(system: 7_000_000_000_000_000_002, name: name, scratch: scratch, root: root) else { return }
            let (plain, file, objectPath, stored) = (pushed.plain, pushed.file, pushed.objectPath, pushed.stored)
            let headerSize = WALObjectFormat.headerSize
            #expect(WALObjectFormat.frameDeclaresContentChecksum(stored.suffix(from: headerSize)), "push writes zstd's frame checksum")
            // Standard zstd: the one-shot decompressor of the whole-object read (which older
            // builds' fetch used too) reads it, checksum included.
            #expect(try WALObjectFormat.decode(stored).1 == plain)

            let destination = scratch + "/RECOVERYXLOG"
            func fetch(_ object: Data) throws -> LocalWALArchive.FetchOutcome {
                try object.write(to: URL(fileURLWithPath: objectPath))
                unlink(destination)
                return try LocalWALArchive.fetch(name: name, destination: "RECOVERYXLOG", root: root, workingDirectory: scratch)
            }
            func refused(_ object: Data, _ what: String) {
                #expect(throws: TSBackupError.self, "\(what)") { _ = try fetch(object) }
                #expect(!FileManager.default.fileExists(atPath: destination) && !FileManager.default.fileExists(atPath: destination + ".tsbackup-tmp"), "\(what) leaves nothing")
            }
            #expect(try fetch(stored) == .restored(file: file, bytes: Int64(plain.count)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: destination)) == plain)

            // A flipped bit across the payload (literals included, which only a checksum of the
            // content catches), and in its last 8 bytes (the frame checksum, the last block's
            // first-read bits): never wrong content at DEST. Either the fetch fails and leaves
            // nothing, or the changed frame still decodes to exactly the archived bytes (a match
            // offset changed to another run of the same bytes, say), which the SHA-256 would
            // have accepted too.
            func flips(_ object: Data, _ positions: [Int], _ label: String) {
                var failed = 0
                for position in positions {
                    var bad = object
                    bad[position] ^= UInt8(1) << (position % 8)
                    let what = "\(label): bit \(position % 8) of byte \(position) of \(object.count)"
                    if (try? fetch(bad)) != nil {
                        #expect((try? Data(contentsOf: URL(fileURLWithPath: destination))) == plain, "\(what) restored the archived bytes")
                    } else {
                        failed += 1
                        #expect(!FileManager.default.fileExists(atPath: destination) && !FileManager.default.fileExists(atPath: destination + ".tsbackup-tmp"), "\(what) leaves nothing")
                    }
                }
                #expect(failed * 10 > positions.count * 9, "\(label): \(failed) of \(positions.count) flips failed the fetch")
            }
            flips(stored, Array(stride(from: headerSize, to: stored.count, by: 1999)) + Array((stored.count - 8)..<stored.count), "new object")
            // The frame checksum itself: each of its 4 bytes.
            for position in (stored.count - 4)..<stored.count {
                var bad = stored
                bad[position] ^= 0x01
                refused(bad, "frame checksum byte \(position - stored.count + 4)")
            }
            var size = stored
            size[19] ^= 0x01
            refused(size, "recorded size")
            var cleared = stored
            cleared[headerSize + 4] &= ~0x04
            refused(cleared, "checksum flag cleared")
            refused(stored + Data([0]), "a byte appended")

            // The stored SHA-256 alone flipped: the frame checksum confirms the content, so fetch
            // restores it (right); the whole-object read (history and .backup files) refuses the object, and a
            // push of the same segment is refused as different content, naming it.
            var digest = stored
            digest[20 + 7] ^= 0x80
            #expect(try fetch(digest) == .restored(file: file, bytes: Int64(plain.count)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: destination)) == plain)
            #expect(throws: WALObjectError.self) { try WALObjectFormat.decode(digest) }
            #expect { try LocalWALArchive.push(path: name, root: root, dataDirectory: scratch) } throws: { error in
                (error as? TSBackupError)?.message.contains("different content") == true
            }

            // An object pushed before the frame checksum: fetched, and checked by its SHA-256.
            let old = try WALObjectFormat.encode(plain, sha256: Array(SHA256.hash(data: plain)), frameChecksum: false)
            #expect(!WALObjectFormat.frameDeclaresContentChecksum(old.suffix(from: headerSize)))
            #expect(try fetch(old) == .restored(file: file, bytes: Int64(plain.count)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: destination)) == plain)
            var oldDigest = old
            oldDigest[20 + 7] ^= 0x80
            refused(oldDigest, "old object, SHA-256 field")
            #expect { _ = try fetch(oldDigest) } throws: { ($0 as? TSBackupError)?.message.contains("SHA-256") == true }
            flips(old, Array(stride(from: headerSize, to: old.count, by: 3989)), "old object")
            var claimed = old
            claimed[headerSize + 4] |= 0x04
            refused(claimed, "old object claiming a checksum it lacks")
        }
    }

    @Test("a history file (no page header) is archived under pg_control's system identifier")
    func historyFile() throws {
        try Self.withRepository { scratch, root in
            try FileManager.default.createDirectory(atPath: scratch + "/global", withIntermediateDirectories: true)
            var control = Data(count: 8192)
            withUnsafeBytes(of: UInt64(1234).littleEndian) { control.replaceSubrange(0..<8, with: $0) }
            try control.write(to: URL(fileURLWithPath: scratch + "/global/pg_control"))
            let history = Data("1\t0/3000000\tno recovery target specified\n".utf8)
            try history.write(to: URL(fileURLWithPath: scratch + "/00000002.history"))
            let file = try #require(WALFileName("00000002.history"))
            #expect(try LocalWALArchive.push(path: "00000002.history", root: root, dataDirectory: scratch) == .archived(file: file, plainBytes: Int64(history.count), storedBytes: Int64(try Data(contentsOf: URL(fileURLWithPath: root + "/wal/1234/00000002/00000002.history.zst")).count)))
            #expect(try LocalWALArchive.fetch(name: "00000002.history", destination: scratch + "/h", root: root, workingDirectory: "/") == .restored(file: file, bytes: Int64(history.count)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: scratch + "/h")) == history)
            // An empty file round-trips too.
            try Data().write(to: URL(fileURLWithPath: scratch + "/00000003.history"))
            _ = try LocalWALArchive.push(path: "00000003.history", root: root, dataDirectory: scratch)
            #expect(try LocalWALArchive.fetch(name: "00000003.history", destination: scratch + "/e", root: root, workingDirectory: "/") == .restored(file: try #require(WALFileName("00000003.history")), bytes: 0))
            #expect(try Data(contentsOf: URL(fileURLWithPath: scratch + "/e")).isEmpty)
        }
    }

    @Test("objects of every level fetch alike: the new default (-1), the previous default (1, with and without zstd's frame checksum), and higher levels")
    func levels() throws {
        try Self.withRepository { scratch, root in
            let plain = Self.segment(system: 7_000_000_000_000_000_003)
            let name = "000000010000000000000005"
            try plain.write(to: URL(fileURLWithPath: scratch + "/" + name))
            #expect(WALObjectFormat.defaultLevel < 0, "WAL is pushed at one of zstd's fast levels")
            let objectPath = root + "/wal/7000000000000000003/00000001/\(name).zst"
            let file = try #require(WALFileName(name))
            let digest = Array(SHA256.hash(data: plain))
            var stored: [Int32: Int] = [:]
            for level in [WALObjectFormat.defaultLevel, -5, 1, 3] {
                // Pushed at that level by the fast path (the mapped file), then fetched by the fast
                // path and read whole by the library: the level is nowhere recorded nor needed.
                try? FileManager.default.removeItem(atPath: objectPath)
                guard case .archived(_, _, let storedBytes) = try LocalWALArchive.push(path: name, root: root, dataDirectory: scratch, level: level) else {
                    Issue.record("level \(level) not archived")
                    continue
                }
                stored[level] = Int(storedBytes)
                let object = try Data(contentsOf: URL(fileURLWithPath: objectPath))
                #expect(WALObjectFormat.frameDeclaresContentChecksum(object.suffix(from: WALObjectFormat.headerSize)))
                let (header, decoded) = try WALObjectFormat.decode(object)
                #expect(decoded == plain && header.sha256 == digest && header.plainSize == Int64(plain.count) && header.compression == WALObjectFormat.compressionZstd)
                unlink(scratch + "/back")
                #expect(try LocalWALArchive.fetch(name: name, destination: "back", root: root, workingDirectory: scratch) == .restored(file: file, bytes: Int64(plain.count)))
                #expect(try Data(contentsOf: URL(fileURLWithPath: scratch + "/back")) == plain, "level \(level)")
                // A retry of the same content is recognised whatever level the stored copy has.
                #expect(try LocalWALArchive.push(path: name, root: root, dataDirectory: scratch) == .alreadyArchived(file: file))
            }
            #expect((stored[1] ?? 0) < plain.count / 2 && (stored[WALObjectFormat.defaultLevel] ?? 0) < plain.count / 2)
            // What the previous builds wrote (level 1, with the frame checksum; and before that
            // without it), put in place as they stored it: fetched by this build.
            for old in [try WALObjectFormat.encode(plain, sha256: digest, level: 1),
                        try WALObjectFormat.encode(plain, sha256: digest, level: 1, frameChecksum: false)] {
                try old.write(to: URL(fileURLWithPath: objectPath))
                unlink(scratch + "/back")
                #expect(try LocalWALArchive.fetch(name: name, destination: "back", root: root, workingDirectory: scratch) == .restored(file: file, bytes: Int64(plain.count)))
                #expect(try Data(contentsOf: URL(fileURLWithPath: scratch + "/back")) == plain)
                #expect(try LocalWALArchive.push(path: name, root: root, dataDirectory: scratch) == .alreadyArchived(file: file))
            }
        }
    }

    @Test("a mapped file compresses to the bytes the piece-wise read gives, across steps, empty, and with its pages dropped behind")
    func mappedCompress() throws {
        let scratch = NSTemporaryDirectory() + "tsbackup-walmap-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for count in [0, 1, 4095, WALObjectFormat.mappedStepSize, 3 * WALObjectFormat.mappedStepSize + 12345] {
            let plain = WALArchiveUnitTests.walLike(count)
            let path = scratch + "/00000002.history"
            try plain.write(to: URL(fileURLWithPath: path))
            let source = try WALSourceFile.open(path: path, baseName: "00000002.history", dataDirectory: "/")
            defer { source.close() }
            let mapped = try #require(MappedWALFile(source))
            #expect(mapped.bytes.count == count)
            var payload = Data()
            var prepared: [Range<Int>] = []
            var released: [Range<Int>] = []
            let digest = try WALObjectFormat.compress(mapped: mapped.bytes, prepare: { range in
                prepared.append(range)
                try mapped.prepare(range)
            }, release: { range in
                released.append(range)
                mapped.release(range)
            }) { payload.append(contentsOf: $0) }
            #expect(digest == Array(SHA256.hash(data: plain)), "\(count) bytes")
            // Every byte offered once, in order; what was dropped lies behind.
            #expect(prepared.map(\.count).reduce(0, +) == count && zip(prepared, prepared.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(released.allSatisfy { $0.upperBound <= max(0, count - WALObjectFormat.mappedStepSize) })
            if count > 2 * WALObjectFormat.mappedStepSize { #expect(!released.isEmpty) }
            let object = WALObjectFormat.headerBytes(compression: WALObjectFormat.compressionZstd, plainSize: Int64(count), sha256: digest) + payload
            #expect(try WALObjectFormat.decode(object).1 == plain, "\(count) bytes")
            // The piece-wise read path (where a file cannot be mapped) writes the same frame's content.
            var offset = 0
            var readPayload = Data()
            let read = try WALObjectFormat.compress(pledgedSize: Int64(count), read: { buffer in
                let n = min(buffer.count, count - offset)
                plain.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                offset += n
                return n
            }) { readPayload.append(contentsOf: $0) }
            #expect(read.digest == digest)
            #expect(try WALObjectFormat.decode(WALObjectFormat.headerBytes(compression: WALObjectFormat.compressionZstd, plainSize: Int64(count), sha256: digest) + readPayload).1 == plain)
        }
    }

    @Test("a mapped file that shrank is an error while its pages are brought in, not a crash")
    func mappedShrink() throws {
        let scratch = NSTemporaryDirectory() + "tsbackup-walmap-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let path = scratch + "/000000010000000000000007"
        try WALArchiveUnitTests.walLike(4 << 20).write(to: URL(fileURLWithPath: path))
        let source = try WALSourceFile.open(path: path, baseName: "000000010000000000000007", dataDirectory: "/")
        defer { source.close() }
        let mapped = try #require(MappedWALFile(source))
        try mapped.prepare(0..<(1 << 20))
        #expect(truncate(path, 1 << 20) == 0)
        #expect { try mapped.prepare((2 << 20)..<(3 << 20)) } throws: { error in
            let error = error as? TSBackupError
            return error?.kind == .failed && error?.message.contains("000000010000000000000007 shrank while it was read") == true
        }
        #expect(source.currentSize() == 1 << 20)
    }

    @Test("the command line takes only plain local repositories; everything else goes to the full command")
    func handOver() throws {
        try Self.withRepository { scratch, root in
            let name = "000000010000000000000003"
            try Self.segment(system: 5).write(to: URL(fileURLWithPath: scratch + "/" + name))
            let segment = scratch + "/" + name
            #expect(LocalWALArchive.plainRoot(root) == root)
            #expect(LocalWALArchive.plainRoot(root + "/../repo/.") == root)
            // Handled: 0 pushed, 0 fetched, 1 missing.
            #expect(WALCommandLine.run(["wal-push", segment, "--repo", root], environment: [:]) == 0)
            #expect(WALCommandLine.run(["wal-push", "--repo=\(root)", segment], environment: [:]) == 0)
            #expect(WALCommandLine.run(["wal-fetch", name, scratch + "/back", "--repo", root], environment: [:]) == 0)
            #expect(WALCommandLine.run(["wal-fetch", "0000000100000000000000F0", scratch + "/none"], environment: ["TSBACKUP_REPO": root]) == 1)
            // Errors are exit codes by kind.
            #expect(WALCommandLine.run(["wal-push", scratch + "/notwal", "--repo", root], environment: [:]) == 64)

            // Not handled (nil): the full command decides, with its own messages.
            let encryptedRepo = scratch + "/encrypted"
            try FileManager.default.createDirectory(atPath: encryptedRepo, withIntermediateDirectories: true)
            try Data(#"{"format_version": 1, "kind": "tsbackup-repository", "layout": "x", "encryption": {"algorithm": "aes-256-gcm"}}"#.utf8)
                .write(to: URL(fileURLWithPath: encryptedRepo + "/tsbackup-repository.json"))
            for arguments in [["wal-push", segment, "--repo", "s3://bucket/prefix"],
                              ["wal-push", segment, "--repo", "file://" + root],
                              ["wal-push", segment, "--repo", scratch + "/none-yet"],
                              ["wal-push", segment, "--repo", encryptedRepo],
                              ["wal-push", segment, "--repo", root, "--encryption-key-file", "/k"],
                              ["wal-push", segment],
                              ["wal-push", segment, "--repo"],
                              ["wal-push", segment, "--repo", root, "--help"],
                              ["wal-push", segment, "extra", "--repo", root],
                              ["wal-fetch", name, "--repo", root],
                              ["list", "--repo", root],
                              []] {
                #expect(WALCommandLine.run(arguments, environment: [:]) == nil, "\(arguments)")
            }
            #expect(WALCommandLine.run(["wal-push", segment, "--repo", root], environment: ["TSBACKUP_ENCRYPTION_KEY_FILE": "/k"]) == nil)
        }
    }
}

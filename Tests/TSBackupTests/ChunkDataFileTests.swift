import Foundation
import NIOCore
import Testing
@testable import TSBackup

/// The chunk batches' data files: psql's COPY output with a `\.` line after each chunk's rows,
/// one zstd frame; read back part by part for COPY FROM, and scanned by `verify`.
@Suite("chunk batch data files: parts kept apart by their end lines, zstd checks, damage named")
struct ChunkDataFileTests {
    static func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.path + "/tsbackup-chunkdata-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Rows in COPY's text format, with escaped backslashes, tabs and newlines in values (a row
    /// that starts with an escaped backslash looks like `\\.` but is not an end line).
    static func part(rows: Int, seed: Int) -> String {
        (0..<rows).map { row in
            row % 7 == 3 ? "\\\\.\\t\(seed)\t\(row)\\n\n" : "2026-01-01 00:\(String(format: "%02d", row % 60)):00+00\t\(seed + row)\tnote \(row % 13)\n"
        }.joined()
    }

    /// Writes `parts` (each followed by its end line) compressed into `dir/name`.
    static func dataFile(_ parts: [String], in dir: String, name: String = "batch.copy.zst", trailer: String = "") throws -> String {
        let plain = dir + "/" + name + ".plain"
        try Data((parts.map { $0 + "\\.\n" }.joined() + trailer).utf8).write(to: URL(fileURLWithPath: plain))
        defer { try? FileManager.default.removeItem(atPath: plain) }
        _ = try ZstdFile.compress(plain, to: dir + "/" + name, level: 1)
        return dir + "/" + name
    }

    /// Reads every part of `path`: its bytes and rows.
    static func readParts(_ path: String) async throws -> [(text: String, rows: Int64)] {
        let reader = try ChunkDataFileReader(path, name: "chunks/batch.copy.zst")
        var parts: [(String, Int64)] = []
        while true {
            var bytes: [UInt8] = []
            guard let rows = try await reader.nextPart({ buffer in bytes += buffer.readableBytesView }) else { break }
            parts.append((String(decoding: bytes, as: UTF8.self), rows))
        }
        return parts
    }

    @Test("psql's output keeps its end lines in the file; rows are counted per part however the buffers cut them")
    func splitterKeepsMarkers() {
        let text = Self.part(rows: 5, seed: 1) + "\\.\n" + "\\.\n" + Self.part(rows: 3, seed: 2) + "\\.\n"
        let bytes = Array(text.utf8)
        for cut in [1, 2, 3, 7, 64, bytes.count] {
            var splitter = CopyPipeline.MarkerSplitter(keepMarkers: true)
            var out: [UInt8] = []
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + cut)
                out += bytes[start..<end].withUnsafeBytes { splitter.feed($0) }
                start = end
            }
            let (counted, rest) = splitter.finish()
            out += rest
            #expect(out == bytes, "cut \(cut)")
            #expect(counted.rowsPerPart == [5, 0, 3], "cut \(cut)")
            #expect(counted.rows == 8, "cut \(cut)")
        }
    }

    @Test("parts come back in order with their bytes and rows, an empty part included, across zstd's pieces")
    func roundTrip() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The third part is several MiB: it crosses the reader's pieces and lines are cut between them.
        let parts = [Self.part(rows: 6, seed: 10), "", Self.part(rows: 120_000, seed: 30), Self.part(rows: 1, seed: 40)]
        let path = try Self.dataFile(parts, in: dir)
        let read = try await Self.readParts(path)
        #expect(read.map(\.text) == parts)
        #expect(read.map(\.rows) == [6, 0, 120_000, 1])
        let scanned = try await ChunkBatchRun.scan(path, name: "chunks/batch.copy.zst")
        #expect(scanned.parts == 4)
        #expect(scanned.rows == 120_007)
    }

    @Test("a truncated file, bytes after the frame, or rows without their end line fail naming the file")
    func damage() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = try Self.dataFile([Self.part(rows: 2_000, seed: 1), Self.part(rows: 10, seed: 2)], in: dir)
        let data = try Data(contentsOf: URL(fileURLWithPath: good))

        let truncated = dir + "/truncated.copy.zst"
        try data.prefix(data.count - 9).write(to: URL(fileURLWithPath: truncated))
        let appended = dir + "/appended.copy.zst"
        try (data + data.prefix(16)).write(to: URL(fileURLWithPath: appended))
        var flipped = data
        flipped[flipped.count / 2] ^= 0x40
        let corrupt = dir + "/flipped.copy.zst"
        try flipped.write(to: URL(fileURLWithPath: corrupt))
        // A well-formed frame whose last part has no end line.
        let unterminated = try Self.dataFile([Self.part(rows: 3, seed: 1)], in: dir, name: "open.copy.zst", trailer: "2026-01-01\t1\tx\n")

        for path in [truncated, appended, corrupt, unterminated] {
            do {
                _ = try await ChunkBatchRun.scan(path, name: "chunks/batch-00007.copy.zst")
                Issue.record("\(path) was read without an error")
            } catch let error as TSBackupError {
                #expect(error.kind == .failed)
                #expect(error.message.contains("chunks/batch-00007.copy.zst"), "\(error.message)")
                #expect(error.message.contains("corrupt"), "\(error.message)")
            }
        }
    }

    @Test("parts of chunks dropped after their copy are taken out of the plain file, the others kept byte for byte")
    func keepParts() async throws {
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The second part crosses several of the filter's pieces.
        let parts = [Self.part(rows: 4, seed: 1), Self.part(rows: 90_000, seed: 2), "", Self.part(rows: 3, seed: 3), Self.part(rows: 70_000, seed: 4)]
        let plain = dir + "/batch.copy.zst.plain"
        for keep in [[true, false, true, false, true], [false, true, false, true, false], [true, true, true, true, true], [false, false, false, false, false]] {
            try Data(parts.map { $0 + "\\.\n" }.joined().utf8).write(to: URL(fileURLWithPath: plain))
            try BatchedDump.keepParts(of: plain, where: keep)
            let expected = zip(parts, keep).filter(\.1).map { $0.0 + "\\.\n" }.joined()
            #expect(try String(contentsOfFile: plain, encoding: .utf8) == expected, "\(keep)")
        }
        #expect(!FileManager.default.fileExists(atPath: plain + ".kept"))
    }
}

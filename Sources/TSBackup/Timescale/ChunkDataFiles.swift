import Foundation
import NIOCore
import PostgresNIO

/// A batched backup's chunk data file (``BackupManifest/ChunkPath/DataForm/copyFiles``), read
/// part by part: one zstd frame holding, for each chunk of its batch in order, the chunk's rows
/// in COPY's text format followed by a line `\.`. COPY's text format escapes every backslash in
/// data, so no row is that line; a part needs no count to be found again.
final class ChunkDataFileReader {
    private let reader: ZstdFile.Reader
    private let name: String
    /// Plain bytes read but not yet handed out: at most an incomplete line and one piece.
    private var buffer: [UInt8] = []
    private var atEnd = false

    /// `name`: the file as the manifest calls it (for errors).
    init(_ path: String, name: String) throws {
        reader = try ZstdFile.Reader(path, name: name)
        self.name = name
    }

    /// Hands the next part's rows to `write` in pieces of whole lines (the `\.` line left out)
    /// and returns how many rows it had; nil when the file has no part left.
    func nextPart(_ write: ((ByteBuffer) async throws -> Void)?) async throws -> Int64? {
        var rows: Int64 = 0
        var started = false
        while true {
            // Whole lines in the buffer: up to the part's end, or to the last newline.
            var lineStart = 0
            var end: Int?
            buffer.withUnsafeBytes { bytes in
                var index = 0
                while index < bytes.count, let found = memchr(bytes.baseAddress! + index, 0x0A, bytes.count - index) {
                    let next = UnsafeRawPointer(found) - bytes.baseAddress! + 1
                    if next - index == CopyPipeline.marker.count, bytes[index] == CopyPipeline.marker[0], bytes[index + 1] == CopyPipeline.marker[1] {
                        end = index
                        return
                    }
                    rows += 1
                    index = next
                    lineStart = next
                }
            }
            if !buffer.isEmpty { started = true }
            let whole = end ?? lineStart
            if whole > 0, let write {
                try await write(ByteBuffer(bytes: buffer[0..<whole]))
            }
            if let end {
                buffer.removeSubrange(0..<(end + CopyPipeline.marker.count))
                return rows
            }
            buffer.removeSubrange(0..<whole)
            guard !atEnd else {
                if !started && buffer.isEmpty { return nil }
                throw ZstdFile.corrupt(name, "it ends inside a chunk's rows")
            }
            if let piece = try reader.next() {
                buffer.append(contentsOf: piece)
            } else {
                atEnd = true
            }
        }
    }
}

extension ChunkBatchRun {
    /// Checks each batch's data file as `verify` checks archives: listed (so hashed) in the
    /// manifest's files, one whole zstd frame whose content checksum holds, and split into one
    /// part per chunk of the batch whose rows add up to the batch's recorded rows.
    static func dataFileProblems(_ manifest: BackupManifest, directory: String) async -> [String] {
        guard let path = manifest.chunkPath else { return [] }
        let listed = Set(manifest.files.map(\.path))
        var problems: [String] = []
        for batch in path.batches {
            guard let file = batch.dataFile else { continue }
            guard listed.contains(file) else {
                problems.append("data file \(file) of chunk batch \(batch.archive) has no checksum in the manifest")
                continue
            }
            do {
                let (parts, rows) = try await scan(try EntryPath.resolve(file, in: directory), name: file)
                if parts != batch.chunks.count {
                    problems.append("data file \(file) holds \(parts) chunk part(s), its batch lists \(batch.chunks.count) chunks")
                } else if rows != batch.rowCount {
                    problems.append("data file \(file) holds \(rows) rows, the manifest records \(batch.rowCount)")
                }
            } catch let error as TSBackupError {
                problems.append(error.message)
            } catch {
                problems.append("data file \(file) cannot be read: \(error)")
            }
        }
        return problems
    }

    /// Parts and rows of a data file, reading it whole.
    static func scan(_ path: String, name: String) async throws -> (parts: Int, rows: Int64) {
        let reader = try ChunkDataFileReader(path, name: name)
        var parts = 0
        var rows: Int64 = 0
        while let part = try await reader.nextPart(nil) {
            parts += 1
            rows += part
        }
        return (parts, rows)
    }
}

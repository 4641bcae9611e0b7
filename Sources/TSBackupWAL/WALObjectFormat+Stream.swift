import CZstd
import Crypto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The WAL object format (``WALObjectFormat``) written and read in pieces, so that wal-push and
/// wal-fetch never hold a whole 16 MB segment: a whole segment held in memory costs ~4,000 fresh
/// pages (page faults) per copy, which was most of their time (docs/pitr.md). The bytes written
/// are the same format as ``WALObjectFormat/encode(_:sha256:level:)``'s (one zstd frame that
/// records its content size, and since it was added zstd's content checksum), so old and new
/// objects read alike.
extension WALObjectFormat {
    /// Bytes of plain input read, and of plain output written, per piece.
    package static let pieceSize = 1 << 20

    /// Compresses a file fed in pieces and hashes the same bytes as it goes.
    ///
    /// The header carries the SHA-256 of the whole file, known only at its end, and precedes the
    /// payload; so the compressed payload (about a quarter of the segment) is kept as pieces and
    /// handed over with the header by ``finish()``. The plain file is never held.
    package final class Encoder {
        private let stream: ZstdCompressionStream
        private var hasher = SHA256()
        private var plainBytes: Int64 = 0
        private var payload: [Data] = []
        private var finished = false

        /// `pledgedSize`: the file's size, recorded in the zstd frame as the one-shot form does.
        package init(level: Int32 = defaultLevel, pledgedSize: Int64) throws {
            stream = try ZstdCompressionStream(level: level, pledgedSize: pledgedSize, outputSize: pieceSize)
        }

        /// Hashes and compresses the next piece of the file.
        package func update(_ input: UnsafeRawBufferPointer) throws {
            precondition(!finished, "WALObjectFormat.Encoder used after finish()")
            guard input.count > 0 else { return }
            hasher.update(bufferPointer: input)
            plainBytes += Int64(input.count)
            try stream.compress(input, sink: keep)
        }

        /// Ends the frame. Returns the header (size and SHA-256 of everything fed) and the
        /// compressed payload's pieces, which follow the header in the object.
        package func finish() throws -> (header: Data, payload: [Data], digest: [UInt8], plainBytes: Int64) {
            precondition(!finished, "WALObjectFormat.Encoder finished twice")
            finished = true
            try stream.end(sink: keep)
            let digest = Array(hasher.finalize())
            return (headerBytes(compression: compressionZstd, plainSize: plainBytes, sha256: digest), payload, digest, plainBytes)
        }

        /// Keeps a piece of the compressed payload.
        private func keep(_ piece: UnsafeRawBufferPointer) {
            payload.append(Data(bytes: piece.baseAddress!, count: piece.count))
        }
    }

    /// Reads a stored object fed in pieces from its first byte: parses the header, decompresses
    /// the payload into a reused buffer and hands each plain piece to the caller, counting it.
    /// Nothing it hands over is confirmed until ``finish()`` returns: the caller writes to a
    /// temporary file and renames it only then.
    ///
    /// What confirms the content: when the zstd frame declares zstd's content checksum (objects
    /// pushed since it was added), that checksum, which the decompressor checks at the frame's
    /// end (a frame that ends without it, or with a different one, is an error), and the size the
    /// header records; the header's SHA-256 is then not recomputed, which was about 40 % of a
    /// fetch's CPU (docs/pitr.md). Objects without it (older pushes, compression none) have their
    /// SHA-256 checked as before. A damaged SHA-256 field alone therefore does not stop a fetch
    /// of a checksummed object (its content is right); `decode(_:)`, and a push of the same
    /// segment, compare the field.
    package final class Decoder {
        private var headerBuffer = Data()
        package private(set) var header: Header?
        /// The payload's decompression (nil before the header, and for compression none).
        private var stream: ZstdDecompressionStream?
        private let outputSize: Int
        private var hasher = SHA256()
        private var plainBytes: Int64 = 0
        /// The payload's first bytes, until there are 5: the frame magic and header descriptor.
        private var frameStart: [UInt8] = []
        /// Decided at the first plain byte: whether the SHA-256 is computed (nil: not yet).
        private var hashing: Bool?
        /// Whether the content was confirmed by zstd's frame checksum rather than the SHA-256
        /// (known once ``finish()`` returned).
        package var checkedByFrameChecksum: Bool { hashing == false }

        /// `outputSize`: bytes of plain output handed over at a time.
        package init(outputSize: Int = pieceSize) {
            self.outputSize = outputSize
        }

        /// Takes the next stored bytes; calls `sink` with each plain piece (valid only during the call).
        package func update(_ stored: Data, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            try stored.withUnsafeBytes { (raw: UnsafeRawBufferPointer) throws -> Void in
                var input = raw
                if header == nil {
                    let take = min(headerSize - headerBuffer.count, input.count)
                    headerBuffer.append(contentsOf: input.prefix(take))
                    input = UnsafeRawBufferPointer(rebasing: input.dropFirst(take))
                    guard headerBuffer.count == headerSize else { return }
                    let parsed = try WALObjectFormat.header(of: headerBuffer)
                    header = parsed
                    if parsed.compression == compressionZstd {
                        do {
                            stream = try ZstdDecompressionStream(outputSize: outputSize)
                        } catch let error as ZstdStreamError {
                            throw WALObjectError.malformed(error.reason)
                        }
                    }
                }
                guard input.count > 0 else { return }
                guard let stream else {
                    try emit(input, sink: sink)
                    return
                }
                if frameStart.count < 5 { frameStart.append(contentsOf: input.prefix(5 - frameStart.count)) }
                // An object is one frame; bytes after it would start a second frame, which the
                // first one's checksum would not cover (ZstdStreamError.bytesAfterFrame).
                do {
                    try stream.decompress(input) { try emit($0, sink: sink) }
                } catch let error as ZstdStreamError {
                    throw WALObjectError.malformed("its compressed data does not decompress (\(error.reason))")
                }
            }
        }

        /// Checks that the object was whole: a complete frame (whose content checksum, when it
        /// has one, zstd checked at its end), the size the header recorded, and the SHA-256 it
        /// recorded unless the frame checksum confirmed the content. Returns the header.
        package func finish() throws(WALObjectError) -> Header {
            guard let header else { throw .malformed("it is shorter than its header") }
            if let stream, !stream.isFrameComplete {
                throw .malformed("its compressed data does not decompress (\(ZstdStreamError.truncated.reason))")
            }
            guard plainBytes == header.plainSize else {
                throw .checksumMismatch("it decompresses to \(plainBytes) bytes, its header says \(header.plainSize)")
            }
            // An empty file emits nothing: decide here too.
            if hashing == nil { hashing = !(stream != nil && WALObjectFormat.frameDeclaresContentChecksum(frameStart)) }
            guard hashing == false || Array(hasher.finalize()) == header.sha256 else {
                throw .checksumMismatch("the SHA-256 of its content differs from the one recorded when it was archived")
            }
            return header
        }

        private func emit(_ plain: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            plainBytes += Int64(plain.count)
            // Stop as soon as it runs past the recorded size: a crafted object cannot fill the disk.
            guard let header, plainBytes <= header.plainSize else {
                throw WALObjectError.checksumMismatch("it decompresses to more than the \(header?.plainSize ?? 0) bytes its header says")
            }
            // zstd emits nothing before it parsed the frame header, so the first 5 payload bytes
            // are known here; decided once, for the whole object.
            if hashing == nil { hashing = !(stream != nil && WALObjectFormat.frameDeclaresContentChecksum(frameStart)) }
            if hashing == true { hasher.update(bufferPointer: plain) }
            try sink(plain)
        }
    }
}

extension WALObjectFormat {
    /// Bytes read, and compressed bytes handed on, at a time by ``compress(pledgedSize:level:read:sink:)``:
    /// small enough that both buffers stay in the CPU's cache and add little to the process's memory.
    package static let streamPieceSize = 256 << 10

    /// Compresses a file read in pieces (`read` fills the buffer it is given and returns the bytes
    /// it put there, 0 at the end) into the payload of an object: one zstd frame that records its
    /// content size (`pledgedSize`), as ``encode(_:sha256:level:)`` writes, handed to `sink` in
    /// pieces (valid only during the call), while each piece read is hashed. Returns the SHA-256 and
    /// the bytes read; a file whose length is not `pledgedSize` is refused by zstd (an error).
    ///
    /// Neither the file nor the compressed payload is ever held: the header, which carries the
    /// SHA-256, is written by the caller once this returns (in place, at the object's start).
    package static func compress(pledgedSize: Int64, level: Int32 = defaultLevel, read: (UnsafeMutableRawBufferPointer) throws -> Int,
                                 sink: (UnsafeRawBufferPointer) throws -> Void) throws -> (digest: [UInt8], plainBytes: Int64) {
        let stream = try ZstdCompressionStream(level: level, pledgedSize: pledgedSize, outputSize: streamPieceSize)
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: streamPieceSize, alignment: 16)
        defer { input.deallocate() }
        var hasher = SHA256()
        var plainBytes: Int64 = 0
        while true {
            let count = try read(input)
            if count == 0 { break }
            let piece = UnsafeRawBufferPointer(start: input.baseAddress, count: count)
            hasher.update(bufferPointer: piece)
            plainBytes += Int64(count)
            try stream.compress(piece, sink: sink)
        }
        try stream.end(sink: sink)
        return (Array(hasher.finalize()), plainBytes)
    }
}

extension WALObjectFormat {
    /// Compresses a file already in memory (wal-push maps the segment: ``MappedWALFile``) into
    /// the payload of an object, the same frame ``compress(pledgedSize:level:read:sink:)`` writes
    /// (content size and zstd's content checksum), handed to `sink` in pieces. Returns the
    /// SHA-256 of `input`.
    ///
    /// zstd reads `input` in place (`ZSTD_c_stableInBuffer`) instead of copying each piece into
    /// its own window buffer, and the file is not copied by `read` either: together about 4 ms of
    /// a 16 MB segment's ~40 ms (docs/pitr.md). The input is offered 1 MiB more at a time, each
    /// step hashed and then compressed while it is in the cache; `prepare` runs before a step
    /// touches its range (the caller brings those pages in), `release` after zstd has passed a
    /// range for good (the caller drops them from the process: the page cache keeps them).
    package static func compress(mapped input: UnsafeRawBufferPointer, level: Int32 = defaultLevel,
                                 prepare: (Range<Int>) throws -> Void = { _ in }, release: (Range<Int>) -> Void = { _ in },
                                 sink: (UnsafeRawBufferPointer) throws -> Void) throws -> [UInt8] {
        // A libzstd without the stable input copies it, as the read path does.
        let stream = try ZstdCompressionStream(level: level, pledgedSize: Int64(input.count), outputSize: streamPieceSize, stableInput: true)
        var hasher = SHA256()
        // With a stable input zstd requires the same `src` on every call; only `size` grows.
        var source = ZSTD_inBuffer(src: input.baseAddress, size: 0, pos: 0)
        var released = 0
        while source.size < input.count {
            let range = source.size..<min(source.size + mappedStepSize, input.count)
            try prepare(range)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: input[range]))
            source.size = range.upperBound
            try stream.compress(&source, sink: sink)
            // zstd looks back at most its window (512 KiB at the levels wal-push uses); what lies
            // more than a step behind that is done with. Dropping it is only a hint: pages it
            // did need again would come back from the page cache unchanged.
            let done = max(0, range.lowerBound - mappedStepSize)
            if done > released {
                release(released..<done)
                released = done
            }
        }
        try stream.end(&source, sink: sink)
        return Array(hasher.finalize())
    }

    /// Bytes of a mapped file hashed and offered to zstd per step.
    package static let mappedStepSize = 1 << 20
}

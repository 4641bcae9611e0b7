import CZstd
import Crypto
import Foundation

/// Whole files compressed and decompressed with libzstd, streaming (through the WAL archive's
/// ``ZstdCompressionStream`` and ``ZstdDecompressionStream``): one zstd frame per file,
/// with zstd's content checksum (XXH64 of the plain bytes, checked by the decompressor at the
/// frame's end) and the plain size recorded in the frame. Memory stays at two 1 MiB buffers and
/// zstd's context whatever the file's size.
///
/// Used for the data files of directory archives (``ArchiveDataCompression``): pg_dump 15 only
/// has gzip, and zstd compresses several times faster than gzip for the same size.
enum ZstdFile {
    static let pieceSize = 1 << 20

    /// What compressing a file produced: the stored (compressed) file's size and SHA-256 (the
    /// figures the manifest records), and the plain size.
    struct Compressed: Sendable {
        var bytes: Int64
        var sha256: String
        var plainBytes: Int64
    }

    /// Compresses `source` into a new file `destination` (mode 0600), hashing the compressed
    /// bytes as they are written. A failure removes `destination`.
    static func compress(_ source: String, to destination: String, level: Int) throws -> Compressed {
        try transfer(source, to: destination) { input, output in
            var info = stat()
            guard fstat(input, &info) == 0 else { throw FileSystem.ioError("stat \(source)") }
            let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: pieceSize, alignment: 16)
            defer { plain.deallocate() }
            var hasher = SHA256()
            var written: Int64 = 0
            var plainBytes: Int64 = 0
            /// The compressed bytes, hashed and written.
            let sink = { (bytes: UnsafeRawBufferPointer) in
                hasher.update(bufferPointer: bytes)
                try FileSystem.writeAll(output, bytes, path: destination)
                written += Int64(bytes.count)
            }
            do {
                let stream = try ZstdCompressionStream(level: Int32(level), pledgedSize: Int64(info.st_size), outputSize: ZSTD_CStreamOutSize())
                while true {
                    let n = try FileSystem.readSome(input, into: plain, path: source)
                    if n == 0 { break }
                    plainBytes += Int64(n)
                    try stream.compress(UnsafeRawBufferPointer(rebasing: plain[0..<n]), sink: sink)
                }
                guard plainBytes == Int64(info.st_size) else {
                    throw TSBackupError(.failed, "The file \(source) changed size while it was compressed (\(info.st_size) bytes, then \(plainBytes)); the backup was not kept. Run it again.")
                }
                try stream.end(sink: sink)
            } catch let error as Zstd.Failure {
                throw failure(error.description, source)
            }
            return Compressed(bytes: written, sha256: FileSystem.hex(hasher.finalize()), plainBytes: plainBytes)
        }
    }

    /// Decompresses `source`, one zstd frame, into a new file `destination` (mode 0600). The frame
    /// must be complete, its content checksum (when it has one) right, and nothing may follow it;
    /// `expectedBytes`, when given, is the plain size the output must have. A failure removes
    /// `destination` and names `name` (the file as the manifest calls it).
    static func decompress(_ source: String, to destination: String, name: String, expectedBytes: Int64? = nil) throws -> Int64 {
        try transfer(source, to: destination) { input, output in
            let packed = UnsafeMutableRawBufferPointer.allocate(byteCount: ZSTD_DStreamInSize(), alignment: 16)
            defer { packed.deallocate() }
            var produced: Int64 = 0
            var sawInput = false
            do {
                // One frame per file: bytes after it would be a second frame its checksum does not cover.
                let stream = try ZstdDecompressionStream(outputSize: ZSTD_DStreamOutSize())
                while true {
                    let n = try FileSystem.readSome(input, into: packed, path: source)
                    if n == 0 { break }
                    sawInput = true
                    try stream.decompress(UnsafeRawBufferPointer(rebasing: packed[0..<n])) { plain in
                        produced += Int64(plain.count)
                        if let expectedBytes, produced > expectedBytes {
                            throw corrupt(name, "it decompresses to more than the \(expectedBytes) bytes recorded")
                        }
                        try FileSystem.writeAll(output, plain, path: destination)
                    }
                }
                guard sawInput, stream.isFrameComplete else { throw ZstdStreamError.truncated }
            } catch let error as ZstdStreamError {
                throw corrupt(name, error.reason)
            }
            if let expectedBytes, produced != expectedBytes {
                throw corrupt(name, "it decompresses to \(produced) bytes, \(expectedBytes) were recorded")
            }
            return produced
        }
    }

    /// Reads one zstd file's plain bytes piece by piece, for a caller that works on them as they
    /// come (a COPY FROM fed from a data file): the same checks as ``decompress(_:to:name:expectedBytes:)``
    /// (one complete frame, its content checksum, nothing after it), the last ones when the
    /// file's end is read. Not shared between tasks.
    final class Reader {
        private let input: Int32
        private let path: String
        private let name: String
        private let context: OpaquePointer
        private let packed: UnsafeMutableRawBufferPointer
        private let plain: UnsafeMutableRawBufferPointer
        private var piece = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        private var pending = 1
        private var sawInput = false
        private var finished = false
        /// Plain bytes handed out so far.
        private(set) var produced: Int64 = 0

        init(_ path: String, name: String) throws {
            input = open(path, O_RDONLY | O_CLOEXEC)
            guard input >= 0 else { throw FileSystem.ioError("open \(path)") }
            guard let context = ZSTD_createDCtx() else {
                close(input)
                throw ZstdFile.corrupt(name, "zstd could not allocate its context")
            }
            self.path = path
            self.name = name
            self.context = context
            packed = .allocate(byteCount: ZSTD_DStreamInSize(), alignment: 16)
            plain = .allocate(byteCount: ZSTD_DStreamOutSize(), alignment: 16)
        }

        deinit {
            close(input)
            ZSTD_freeDCtx(context)
            packed.deallocate()
            plain.deallocate()
        }

        /// The next plain bytes (valid until the next call), or nil at the file's end, once the
        /// frame is checked complete.
        func next() throws -> UnsafeRawBufferPointer? {
            while !finished {
                if piece.pos == piece.size {
                    let n = try FileSystem.readSome(input, into: packed, path: path)
                    if n == 0 {
                        // zstd may still hold output when its last call filled the buffer.
                        if pending != 0, sawInput, let out = try step() { return out }
                        finished = true
                        guard sawInput, pending == 0 else { throw ZstdFile.corrupt(name, "it ends inside its zstd frame") }
                        return nil
                    }
                    sawInput = true
                    piece = ZSTD_inBuffer(src: packed.baseAddress, size: n, pos: 0)
                }
                if pending == 0 { throw ZstdFile.corrupt(name, "bytes follow its zstd frame") }
                if let out = try step() { return out }
            }
            return nil
        }

        /// One ZSTD_decompressStream call; its output, nil when it produced none.
        private func step() throws -> UnsafeRawBufferPointer? {
            var target = ZSTD_outBuffer(dst: plain.baseAddress, size: plain.count, pos: 0)
            let result = ZSTD_decompressStream(context, &target, &piece)
            if ZSTD_isError(result) != 0 { throw ZstdFile.corrupt(name, String(cString: ZSTD_getErrorName(result))) }
            pending = result
            guard target.pos > 0 else { return nil }
            produced += Int64(target.pos)
            return UnsafeRawBufferPointer(start: plain.baseAddress, count: target.pos)
        }
    }

    /// Opens `source` for reading and creates `destination` (mode 0600; it must not exist) for
    /// `body`, which streams one into the other. Closes both; removes `destination` when `body`
    /// throws or the close that flushes it fails, so no partial file is left.
    private static func transfer<T>(_ source: String, to destination: String, _ body: (_ input: Int32, _ output: Int32) throws -> T) throws -> T {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FileSystem.ioError("open \(source)") }
        defer { close(input) }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw FileSystem.ioError("create \(destination)") }
        var closed = false
        defer { if !closed { close(output) } }
        do {
            let result = try body(input, output)
            closed = true
            guard close(output) == 0 else { throw FileSystem.ioError("write \(destination)") }
            return result
        } catch {
            unlink(destination)
            throw error
        }
    }

    static func corrupt(_ name: String, _ problem: String) -> TSBackupError {
        TSBackupError(.failed, "The file \(name) does not decompress (\(problem)): it is corrupt; it was not used. Run `tsbackup verify` on the backup and restore another one.")
    }

    private static func failure(_ problem: String, _ source: String) -> TSBackupError {
        TSBackupError(.failed, "Compressing \(source) with zstd failed: \(problem).")
    }
}

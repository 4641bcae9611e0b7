import CZstd

/// libzstd's streaming API, driven in one place for every stream tsbackup writes or reads: WAL
/// objects (``WALObjectFormat/Encoder``, ``WALObjectFormat/Decoder`` and the `compress` forms
/// wal-push uses) and the library's compressed data files (`ZstdFile`). Each makes one frame
/// that records its content size and carries zstd's content checksum, or reads exactly one.
/// Output goes to the caller's `sink` a buffer at a time (valid only during the call); zstd's
/// own errors are ``Zstd/Failure`` (compressing) or ``ZstdStreamError`` (decompressing), and
/// whatever the sink throws passes through unchanged, so each caller words its errors itself.
package final class ZstdCompressionStream {
    private let context: OpaquePointer
    private let output: UnsafeMutableRawBufferPointer

    /// A frame of `pledgedSize` bytes (a different length is zstd's error) at `level`, with the
    /// content checksum, handing on up to `outputSize` bytes at a time. `stableInput`: the caller
    /// keeps the input in place across calls (``compress(_:sink:)`` with the same `src`, only
    /// `size` growing), so zstd reads it there instead of copying it into its window
    /// (`ZSTD_c_stableInBuffer`); a libzstd without it copies, as without the flag.
    package init(level: Int32, pledgedSize: Int64, outputSize: Int, stableInput: Bool = false) throws(Zstd.Failure) {
        guard let context = ZSTD_createCCtx() else { throw Zstd.Failure(description: "out of memory") }
        for code in [ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level),
                     ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1),
                     ZSTD_CCtx_setPledgedSrcSize(context, UInt64(pledgedSize))] where ZSTD_isError(code) != 0 {
            ZSTD_freeCCtx(context)
            throw Zstd.Failure(description: String(cString: ZSTD_getErrorName(code)))
        }
        if stableInput { _ = ZSTD_CCtx_setParameter(context, tsbackup_ZSTD_c_stableInBuffer(), 1) }
        self.context = context
        output = .allocate(byteCount: outputSize, alignment: 16)
    }

    deinit {
        ZSTD_freeCCtx(context)
        output.deallocate()
    }

    /// Compresses what `source` holds from its `pos` to its `size`.
    package func compress(_ source: inout ZSTD_inBuffer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        while source.pos < source.size { _ = try step(&source, ZSTD_e_continue, sink: sink) }
    }

    /// Compresses `input` (copied by zstd as it needs).
    package func compress(_ input: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        try compress(&source, sink: sink)
    }

    /// Ends the frame: everything zstd still holds, then the frame's end and checksum.
    /// `source`: the stable input, when there is one (zstd wants the same buffer to the end).
    package func end(_ source: inout ZSTD_inBuffer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        while try step(&source, ZSTD_e_end, sink: sink) != 0 {}
    }

    /// Ends the frame of a stream without a stable input.
    package func end(sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var none = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        try end(&none, sink: sink)
    }

    /// One call of ZSTD_compressStream2, what it produced handed on. Returns what zstd still
    /// holds to flush (0 when a frame end is complete).
    private func step(_ source: inout ZSTD_inBuffer, _ directive: ZSTD_EndDirective, sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let remaining = ZSTD_compressStream2(context, &target, &source, directive)
        if ZSTD_isError(remaining) != 0 { throw Zstd.Failure(description: String(cString: ZSTD_getErrorName(remaining))) }
        if target.pos > 0 { try sink(UnsafeRawBufferPointer(start: output.baseAddress, count: target.pos)) }
        return remaining
    }
}

/// Why a stream did not decompress, in words that follow "does not decompress (...)".
package enum ZstdStreamError: Error, Equatable {
    /// zstd refused the data; its error name.
    case zstd(String)
    /// Bytes follow the frame: a second frame, which the first one's checksum would not cover.
    case bytesAfterFrame
    /// The input ended inside the frame.
    case truncated

    package var reason: String {
        switch self {
        case .zstd(let name): name
        case .bytesAfterFrame: "bytes follow its zstd frame"
        case .truncated: "it ends inside its zstd frame"
        }
    }
}

/// Decompresses exactly one zstd frame fed in pieces (see ``ZstdCompressionStream``).
package final class ZstdDecompressionStream {
    private let context: OpaquePointer
    private let output: UnsafeMutableRawBufferPointer
    /// ZSTD_decompressStream's last answer: 0 once the frame is complete and flushed.
    private var pending = 1

    /// Hands on up to `outputSize` bytes of plain output at a time.
    package init(outputSize: Int) throws(ZstdStreamError) {
        guard let context = ZSTD_createDCtx() else { throw .zstd("zstd could not allocate its context") }
        self.context = context
        output = .allocate(byteCount: outputSize, alignment: 16)
    }

    deinit {
        ZSTD_freeDCtx(context)
        output.deallocate()
    }

    /// Whether the frame is complete: its end (and checksum, which zstd checked there) read.
    package var isFrameComplete: Bool { pending == 0 }

    /// Decompresses the next stored bytes, handing each plain piece to `sink`.
    package func decompress(_ input: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var full = false
        // A full output buffer may leave data inside zstd: call again until it is not full.
        while source.pos < source.size || full {
            if pending == 0 { throw ZstdStreamError.bytesAfterFrame }
            var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            let result = ZSTD_decompressStream(context, &target, &source)
            if ZSTD_isError(result) != 0 { throw ZstdStreamError.zstd(String(cString: ZSTD_getErrorName(result))) }
            pending = result
            // 0: the frame is complete and flushed, even when it just filled the buffer (a 16 MiB
            // segment fills it exactly); calling again would start a new frame.
            full = target.pos == target.size && result != 0
            if target.pos > 0 { try sink(UnsafeRawBufferPointer(start: output.baseAddress, count: target.pos)) }
        }
    }
}

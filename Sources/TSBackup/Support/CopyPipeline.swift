import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// COPY data between `psql` and a compressed file, as two child processes.
///
/// postgres-nio cannot read COPY TO STDOUT, so psql does the talking. On the way out the rows
/// pass through this process, which counts them (COPY's text format writes one line per row,
/// escaping newlines inside values) on their way to the compressor. On the way in a kernel pipe
/// joins the decompressor to psql: the bytes were hashed already.
enum CopyPipeline {
    struct Exported {
        var rows: Int64
        var rawBytes: Int64
        /// Rows between consecutive ``marker`` lines, one entry per marker: what each COPY of a
        /// multi-COPY script sent. Empty when the script prints no markers.
        var rowsPerPart: [Int64] = []
    }

    /// The line a script prints (`\echo '\\.'`) after each COPY so the rows of each part can be
    /// counted. COPY's text format escapes every backslash in data, so no data line is `\.`;
    /// marker lines are counted and left out of the file.
    static let marker: [UInt8] = [0x5C, 0x2E, 0x0A]
    /// The psql command that prints ``marker``.
    static let markerCommand = "\\echo '\\\\.'"

    /// Runs `script` in psql (it must COPY ... TO STDOUT) and writes psql's output, compressed by
    /// `compressor`, to `outputPath`.
    static func export(psql: String, environment: [String: String?], script: String,
                       compressor: [String], outputPath: String, what: String) async throws -> Exported {
        let file: FileDescriptor
        do {
            file = try FileDescriptor.open(FilePath(outputPath), .writeOnly, options: [.create, .truncate],
                                           permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw FileSystem.ioError("create \(outputPath)", underlying: error)
        }
        do {
            let compressorCommand = ChildLaunch.command(compressor[0], Array(compressor.dropFirst()))
            let psqlCommand = ChildLaunch.command(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            let compressorRun = try await Subprocess.run(
                compressorCommand.0, arguments: compressorCommand.1,
                environment: ChildEnvironment.subprocess(), platformOptions: teardown, input: .inputWriter,
                output: .fileDescriptor(file, closeAfterSpawningProcess: true), error: .string(limit: 64 << 10)
            ) { compressorExecution -> (ProcessResult, Exported) in
                let writer = compressorExecution.standardInputWriter
                let psqlRun = try await Subprocess.run(
                    psqlCommand.0, arguments: psqlCommand.1,
                    environment: ChildEnvironment.subprocess(environment), platformOptions: teardown,
                    input: .string(script), output: .sequence, error: .string(limit: 1 << 20)
                ) { psqlExecution -> Exported in
                    var splitter = MarkerSplitter()
                    for try await buffer in psqlExecution.standardOutput {
                        let data = buffer.withUnsafeBytes { splitter.feed($0) }
                        if !data.isEmpty { _ = try await writer.write(data) }
                    }
                    let (counted, rest) = splitter.finish()
                    if !rest.isEmpty { _ = try await writer.write(rest) }
                    return counted
                }
                try await writer.finish()
                return (ProcessResult(exitCode: exitCode(psqlRun.terminationStatus), signal: signal(psqlRun.terminationStatus),
                                      standardOutput: "", standardError: psqlRun.standardError), psqlRun.closureResult)
            }
            let (psqlResult, counted) = compressorRun.closureResult
            guard psqlResult.succeeded else {
                throw TSBackupError(.failed, "psql could not export \(what) (\(psqlResult.statusDescription)): \(psqlResult.standardError.singleLine(limit: 500)). Nothing was kept; fix the cause and export again.")
            }
            guard exitCode(compressorRun.terminationStatus) == 0 else {
                throw TSBackupError(.failed, "\(compressor[0]) failed while compressing \(what) (\(describe(compressorRun.terminationStatus))): \(compressorRun.standardError.singleLine(limit: 300)). Check free space in the repository.")
            }
            return counted
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql or \(compressor[0]) failed for \(what): \(error). Check that both are installed and that the repository has free space.")
        }
    }

    /// Runs `script` in psql (it must COPY ... TO STDOUT, ``markerCommand`` after each COPY) and
    /// writes psql's output as it is, markers included, to the new file `outputPath` (mode 0600):
    /// each COPY's rows end with a line `\\.`, so the file splits into its parts again without a
    /// count (the chunk batches' data files, ``BatchedDump``).
    static func exportKeepingMarkers(psql: String, environment: [String: String?], script: String,
                                     outputPath: String, what: String) async throws -> Exported {
        let file = open(outputPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw FileSystem.ioError("create \(outputPath)") }
        var closed = false
        defer { if !closed { close(file) } }
        do {
            let psqlCommand = ChildLaunch.command(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            let psqlRun = try await Subprocess.run(
                psqlCommand.0, arguments: psqlCommand.1,
                environment: ChildEnvironment.subprocess(environment), platformOptions: teardown,
                input: .string(script), output: .sequence, error: .string(limit: 1 << 20)
            ) { execution -> Exported in
                var splitter = MarkerSplitter(keepMarkers: true)
                for try await buffer in execution.standardOutput {
                    let data = buffer.withUnsafeBytes { splitter.feed($0) }
                    try data.withUnsafeBytes { try FileSystem.writeAll(file, $0, path: outputPath) }
                }
                let (counted, rest) = splitter.finish()
                try rest.withUnsafeBytes { try FileSystem.writeAll(file, $0, path: outputPath) }
                return counted
            }
            closed = true
            guard close(file) == 0 else { throw FileSystem.ioError("write \(outputPath)") }
            guard exitCode(psqlRun.terminationStatus) == 0 else {
                throw TSBackupError(.failed, "psql could not copy \(what) (\(describe(psqlRun.terminationStatus))): \(psqlRun.standardError.singleLine(limit: 500)). Nothing was kept; fix the cause and run the backup again.")
            }
            return psqlRun.closureResult
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql failed for \(what): \(error). Check that it is installed and executable.")
        }
    }

    /// Decompresses `inputPath` with `decompressor` straight into `psql -c command` (a COPY FROM
    /// STDIN); returns the number of rows psql reports.
    static func load(psql: String, environment: [String: String?], command: String,
                     decompressor: [String], inputPath: String, what: String) async throws -> Int64 {
        let pipe = try loadPipe(what)
        do {
            let decompressorCommand = ChildLaunch.command(decompressor[0], Array(decompressor.dropFirst()) + [inputPath])
            let psqlCommand = ChildLaunch.command(psql, ["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
            async let decompressed = Subprocess.run(
                decompressorCommand.0, arguments: decompressorCommand.1,
                environment: ChildEnvironment.subprocess(), platformOptions: teardown,
                output: .fileDescriptor(pipe.writeEnd, closeAfterSpawningProcess: true),
                error: .string(limit: 64 << 10))
            async let loaded = Subprocess.run(
                psqlCommand.0, arguments: psqlCommand.1,
                environment: ChildEnvironment.subprocess(environment), platformOptions: teardown,
                input: .fileDescriptor(pipe.readEnd, closeAfterSpawningProcess: true),
                output: .string(limit: 64 << 10), error: .string(limit: 1 << 20))
            let (unpacked, psqlRun) = try await (decompressed, loaded)
            return try loadedRows(psql: (psqlRun.terminationStatus, psqlRun.standardOutput, psqlRun.standardError),
                                  decompressor: (unpacked.terminationStatus, unpacked.standardError),
                                  decompressorFailure: "\(decompressor[0]) could not read \(inputPath)", what: what)
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql or \(decompressor[0]) failed for \(what): \(error). Check that both are installed and executable.")
        }
    }

    /// Like ``load(psql:environment:command:decompressor:inputPath:what:)``, but the compressed
    /// bytes come from `source`, which hands each piece to the `write` it is given (a file
    /// streamed from a repository): they go through this process into the decompressor's
    /// standard input, so nothing is staged on disk. If `source` throws, the load fails with its
    /// error (psql may have loaded a part: the caller undoes the load).
    static func loadStreaming(psql: String, environment: [String: String?], command: String, decompressor: [String], what: String,
                              source: @escaping @Sendable (_ write: @Sendable (Data) async throws -> Void) async throws -> Void) async throws -> Int64 {
        let pipe = try loadPipe(what)
        do {
            let psqlCommand = ChildLaunch.command(psql, ["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
            let decompressorCommand = ChildLaunch.command(decompressor[0], Array(decompressor.dropFirst()))
            async let loaded = Subprocess.run(
                psqlCommand.0, arguments: psqlCommand.1,
                environment: ChildEnvironment.subprocess(environment), platformOptions: teardown,
                input: .fileDescriptor(pipe.readEnd, closeAfterSpawningProcess: true),
                output: .string(limit: 64 << 10), error: .string(limit: 1 << 20))
            let unpacked = try await Subprocess.run(
                decompressorCommand.0, arguments: decompressorCommand.1,
                environment: ChildEnvironment.subprocess(), platformOptions: teardown, input: .inputWriter,
                output: .fileDescriptor(pipe.writeEnd, closeAfterSpawningProcess: true), error: .string(limit: 64 << 10)
            ) { execution -> TSBackupError? in
                let writer = execution.standardInputWriter
                do {
                    try await source { data in _ = try await writer.write(data) }
                    try await writer.finish()
                    return nil
                } catch {
                    // Returned, not thrown: psql is still awaited (it sees end of input) before the error is raised.
                    try? await writer.finish()
                    return error as? TSBackupError ?? TSBackupError(.failed, "Reading \(what) failed: \(error).")
                }
            }
            let psqlRun = try await loaded
            if let failure = unpacked.closureResult { throw failure }
            return try loadedRows(psql: (psqlRun.terminationStatus, psqlRun.standardOutput, psqlRun.standardError),
                                  decompressor: (unpacked.terminationStatus, unpacked.standardError),
                                  decompressorFailure: "\(decompressor[0]) could not decompress \(what)", what: what)
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql or \(decompressor[0]) failed for \(what): \(error). Check that both are installed and executable.")
        }
    }

    /// The pipe that joins a load's decompressor to psql.
    private static func loadPipe(_ what: String) throws -> (readEnd: FileDescriptor, writeEnd: FileDescriptor) {
        do {
            return try FileDescriptor.pipe()
        } catch {
            throw TSBackupError(.failed, "Could not create a pipe for loading \(what): \(error).")
        }
    }

    /// Both loads' outcome once psql and the decompressor have ended: psql's failure first (it
    /// names the row at fault), then the decompressor's (`decompressorFailure` says what it could
    /// not do), then the row count from psql's "COPY n".
    private static func loadedRows(psql: (status: TerminationStatus, output: String?, error: String?),
                                   decompressor: (status: TerminationStatus, error: String?),
                                   decompressorFailure: String, what: String) throws -> Int64 {
        guard exitCode(psql.status) == 0 else {
            throw TSBackupError(.failed, "psql could not load \(what) (\(describe(psql.status))): \((psql.error ?? "").singleLine(limit: 500)).")
        }
        guard exitCode(decompressor.status) == 0 else {
            throw TSBackupError(.failed, "\(decompressorFailure) (\(describe(decompressor.status))): \((decompressor.error ?? "").singleLine(limit: 300)). The file is damaged; run `tsbackup verify`.")
        }
        let output = (psql.output ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard output.hasPrefix("COPY "), let rows = Int64(output.dropFirst("COPY ".count)) else {
            throw TSBackupError(.failed, "psql loaded \(what) but did not report a row count (it printed \"\(output.singleLine(limit: 100))\").")
        }
        return rows
    }

    private static var teardown: PlatformOptions {
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        return options
    }

    /// Counts COPY text lines as they stream past and takes ``marker`` lines out, counting the
    /// rows between them. Buffers may split a line (or a marker) anywhere.
    struct MarkerSplitter {
        private(set) var counted = Exported(rows: 0, rawBytes: 0)
        private var atLineStart = true
        /// The start of a line held back because it may be a marker cut by the buffer's end.
        private var held: [UInt8] = []
        private var rowsInPart: Int64 = 0
        /// Marker lines stay in the output (they are still counted, and not as rows).
        let keepMarkers: Bool

        init(keepMarkers: Bool = false) {
            self.keepMarkers = keepMarkers
        }

        /// Returns the bytes to keep (everything but marker lines).
        mutating func feed(_ input: UnsafeRawBufferPointer) -> [UInt8] {
            guard input.count > 0 else { return [] }
            if !held.isEmpty {
                let joined = held + Array(input)
                held = []
                return joined.withUnsafeBytes { feedBytes($0) }
            }
            return feedBytes(input)
        }

        private mutating func feedBytes(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            let count = bytes.count
            let marker = CopyPipeline.marker
            var index = 0
            // Bytes from `kept` on are copied out in one piece when a marker (or the end) is reached.
            var kept = 0
            while index < count {
                if atLineStart && bytes[index] == marker[0] {
                    let available = min(marker.count, count - index)
                    if (0..<available).allSatisfy({ bytes[index + $0] == marker[$0] }) {
                        out.append(contentsOf: bytes[kept..<index])
                        if available < marker.count {
                            held = Array(bytes[index..<count])
                            kept = count
                            break
                        }
                        counted.rowsPerPart.append(rowsInPart)
                        rowsInPart = 0
                        if keepMarkers { out.append(contentsOf: marker) }
                        index += marker.count
                        kept = index
                        continue
                    }
                }
                if let found = memchr(bytes.baseAddress! + index, 0x0A, count - index) {
                    index = UnsafeRawPointer(found) - bytes.baseAddress! + 1
                    counted.rows += 1
                    rowsInPart += 1
                    atLineStart = true
                } else {
                    index = count
                    atLineStart = false
                }
            }
            if kept < count { out.append(contentsOf: bytes[kept..<count]) }
            counted.rawBytes += Int64(out.count)
            return out
        }

        /// The counts, and bytes still held: a lone backslash (and dot) at the very end, without
        /// a newline, is not a marker but the start of an unterminated line, and is kept.
        mutating func finish() -> (Exported, [UInt8]) {
            let rest = held
            held = []
            counted.rawBytes += Int64(rest.count)
            return (counted, rest)
        }
    }

    private static func exitCode(_ status: TerminationStatus) -> Int32? {
        if case .exited(let code) = status { return Int32(code) }
        return nil
    }

    private static func signal(_ status: TerminationStatus) -> Int32? {
        if case .signaled(let signal) = status { return Int32(signal) }
        return nil
    }

    private static func describe(_ status: TerminationStatus) -> String {
        switch status {
        case .exited(let code): "exit code \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

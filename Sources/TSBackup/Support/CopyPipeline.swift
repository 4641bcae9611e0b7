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
    }

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
            let compressorRun = try await Subprocess.run(
                .path(FilePath(compressor[0])), arguments: Arguments(Array(compressor.dropFirst())),
                platformOptions: teardown, input: .inputWriter,
                output: .fileDescriptor(file, closeAfterSpawningProcess: true), error: .string(limit: 64 << 10)
            ) { compressorExecution -> (ProcessResult, Exported) in
                let writer = compressorExecution.standardInputWriter
                let psqlRun = try await Subprocess.run(
                    .path(FilePath(psql)), arguments: ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                    environment: .inherit.updating(keys(environment)), platformOptions: teardown,
                    input: .string(script), output: .sequence, error: .string(limit: 1 << 20)
                ) { psqlExecution -> Exported in
                    var counted = Exported(rows: 0, rawBytes: 0)
                    for try await buffer in psqlExecution.standardOutput {
                        counted.rows += Int64(buffer.withUnsafeBytes { newlines(in: $0) })
                        counted.rawBytes += Int64(buffer.count)
                        _ = try await writer.write(buffer.bytes)
                    }
                    return counted
                }
                try await writer.finish()
                return (ProcessResult(exitCode: exitCode(psqlRun.terminationStatus), signal: signal(psqlRun.terminationStatus),
                                      standardOutput: "", standardError: psqlRun.standardError ?? ""), psqlRun.closureResult)
            }
            let (psqlResult, counted) = compressorRun.closureResult
            guard psqlResult.succeeded else {
                throw TSBackupError(.failed, "psql could not export \(what) (\(psqlResult.statusDescription)): \(psqlResult.standardError.singleLine(limit: 500)). Nothing was kept; fix the cause and export again.")
            }
            guard exitCode(compressorRun.terminationStatus) == 0 else {
                throw TSBackupError(.failed, "\(compressor[0]) failed while compressing \(what) (\(describe(compressorRun.terminationStatus))): \((compressorRun.standardError ?? "").singleLine(limit: 300)). Check free space in the repository.")
            }
            return counted
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql or \(compressor[0]) failed for \(what): \(error). Check that both are installed and that the repository has free space.")
        }
    }

    /// Decompresses `inputPath` with `decompressor` straight into `psql -c command` (a COPY FROM
    /// STDIN); returns the number of rows psql reports.
    static func load(psql: String, environment: [String: String?], command: String,
                     decompressor: [String], inputPath: String, what: String) async throws -> Int64 {
        let pipe: (readEnd: FileDescriptor, writeEnd: FileDescriptor)
        do {
            pipe = try FileDescriptor.pipe()
        } catch {
            throw TSBackupError(.failed, "Could not create a pipe for loading \(what): \(error).")
        }
        do {
            async let decompressed = Subprocess.run(
                .path(FilePath(decompressor[0])), arguments: Arguments(Array(decompressor.dropFirst()) + [inputPath]),
                platformOptions: teardown, output: .fileDescriptor(pipe.writeEnd, closeAfterSpawningProcess: true),
                error: .string(limit: 64 << 10))
            async let loaded = Subprocess.run(
                .path(FilePath(psql)), arguments: ["-X", "-v", "ON_ERROR_STOP=1", "-c", command],
                environment: .inherit.updating(keys(environment)), platformOptions: teardown,
                input: .fileDescriptor(pipe.readEnd, closeAfterSpawningProcess: true),
                output: .string(limit: 64 << 10), error: .string(limit: 1 << 20))
            let (unpacked, psqlRun) = try await (decompressed, loaded)
            guard exitCode(psqlRun.terminationStatus) == 0 else {
                throw TSBackupError(.failed, "psql could not load \(what) (\(describe(psqlRun.terminationStatus))): \((psqlRun.standardError ?? "").singleLine(limit: 500)).")
            }
            guard exitCode(unpacked.terminationStatus) == 0 else {
                throw TSBackupError(.failed, "\(decompressor[0]) could not read \(inputPath) (\(describe(unpacked.terminationStatus))): \((unpacked.standardError ?? "").singleLine(limit: 300)). The file is damaged; run `tsbackup verify`.")
            }
            let output = (psqlRun.standardOutput ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard output.hasPrefix("COPY "), let rows = Int64(output.dropFirst("COPY ".count)) else {
                throw TSBackupError(.failed, "psql loaded \(what) but did not report a row count (it printed \"\(output.singleLine(limit: 100))\").")
            }
            return rows
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "psql or \(decompressor[0]) failed for \(what): \(error). Check that both are installed and executable.")
        }
    }

    private static var teardown: PlatformOptions {
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        return options
    }

    private static func keys(_ environment: [String: String?]) -> [Environment.Key: String?] {
        var env: [Environment.Key: String?] = [:]
        for (key, value) in environment {
            if let envKey = Environment.Key(rawValue: key) { env[envKey] = value }
        }
        return env
    }

    private static func newlines(in bytes: UnsafeRawBufferPointer) -> Int {
        guard var cursor = bytes.baseAddress else { return 0 }
        let end = cursor + bytes.count
        var count = 0
        while cursor < end, let found = memchr(cursor, 0x0A, end - cursor) {
            count += 1
            cursor = UnsafeRawPointer(found) + 1
        }
        return count
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

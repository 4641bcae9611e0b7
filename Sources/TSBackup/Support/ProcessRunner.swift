import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// The outcome of a finished child process, with its output collected.
public struct ProcessResult: Sendable {
    /// The exit code, or nil when the process was killed by a signal.
    public var exitCode: Int32?
    public var signal: Int32?
    public var standardOutput: String
    public var standardError: String

    public var succeeded: Bool { exitCode == 0 }

    /// "exit code 1" / "killed by signal 9", for messages.
    public var statusDescription: String {
        if let exitCode { return "exit code \(exitCode)" }
        return "killed by signal \(signal ?? -1)"
    }
}

extension ProcessResult {
    /// The outcome swift-subprocess reports, in this type's terms (the one place that maps it).
    init(_ status: TerminationStatus, standardOutput: String = "", standardError: String = "") {
        switch status {
        case .exited(let code): self.init(exitCode: Int32(code), signal: nil, standardOutput: standardOutput, standardError: standardError)
        case .signaled(let signal): self.init(exitCode: nil, signal: Int32(signal), standardOutput: standardOutput, standardError: standardError)
        }
    }
}

/// Runs external programs (initdb, pg_ctl, pg_dump, psql...) without a shell.
///
/// Secrets reach children through `environment` only, never through `arguments`, which any user
/// of the machine can read in the process list. Children print their messages in English
/// (``ChildEnvironment``), because tsbackup reads them.
public enum ProcessRunner {
    public static func run(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String?] = [:],
        workingDirectory: String? = nil,
        input: String? = nil,
        outputLimit: Int = 256 << 20,
        outlivesParent: Bool = false
    ) async throws -> ProcessResult {
        // Children end with tsbackup (ChildLaunch) unless the caller needs them to finish.
        let (exe, launchArguments) = ChildLaunch.command(executable, arguments, outlivesParent: outlivesParent)
        let environment = ChildEnvironment.subprocess(environment)
        let directory = workingDirectory.map { FilePath($0) }
        do {
            let result: ExecutionResult<Void, StringOutput<Unicode.UTF8>, StringOutput<Unicode.UTF8>>
            if let input {
                result = try await Subprocess.run(exe, arguments: launchArguments, environment: environment,
                                                  workingDirectory: directory, input: .string(input),
                                                  output: .string(limit: outputLimit), error: .string(limit: outputLimit))
            } else {
                result = try await Subprocess.run(exe, arguments: launchArguments, environment: environment,
                                                  workingDirectory: directory,
                                                  output: .string(limit: outputLimit), error: .string(limit: outputLimit))
            }
            return ProcessResult(result.terminationStatus, standardOutput: result.standardOutput,
                                 standardError: result.standardError)
        } catch let error as SubprocessError {
            throw TSBackupError(.precondition, "Could not start \(executable): \(error). Check that it is installed and executable.")
        }
    }
}

extension ProcessRunner {
    /// Runs a program whose standard output is not needed (it writes files), handing each line of
    /// its standard error to `onErrorLine` as it arrives: pg_dump's progress and warnings.
    public static func runStreamingErrors(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String?] = [:],
        onErrorLine: @escaping @Sendable (String) -> Void
    ) async throws -> ProcessResult {
        var options = PlatformOptions()
        // SIGTERM, a grace period, then SIGKILL, when the task running us is cancelled.
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        do {
            let (exe, launchArguments) = ChildLaunch.command(executable, arguments)
            let result = try await Subprocess.run(
                exe, arguments: launchArguments,
                environment: ChildEnvironment.subprocess(environment),
                platformOptions: options, input: .none, output: .discarded, error: .sequence
            ) { execution in
                for try await line in execution.standardError.strings() {
                    onErrorLine(line)
                }
            }
            return ProcessResult(result.terminationStatus)
        } catch let error as SubprocessError {
            throw TSBackupError(.precondition, "Could not start \(executable): \(error). Check that it is installed and executable.")
        }
    }
}

extension ProcessRunner {
    /// Runs a program handing each line of its standard output to `onOutputLine` as it arrives,
    /// without collecting it: `pg_restore --list` of an archive with tens of thousands of chunks
    /// prints tens of megabytes. A line is handed over as its bytes (without the "\n"), valid
    /// only during the call; lines are split here with memchr, since a line-by-line String
    /// sequence cost more than the work done on the lines. Standard error is collected (up to
    /// `errorLimit` bytes) for messages.
    public static func runStreamingOutput(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String?] = [:],
        errorLimit: Int = 1 << 20,
        onOutputLine: (UnsafeRawBufferPointer) -> Void
    ) async throws -> ProcessResult {
        // Like `run`, the child ends with tsbackup (ChildLaunch).
        let (exe, launchArguments) = ChildLaunch.command(executable, arguments)
        do {
            let result = try await Subprocess.run(
                exe, arguments: launchArguments,
                environment: ChildEnvironment.subprocess(environment),
                input: .none, output: .sequence, error: .string(limit: errorLimit)
            ) { execution in
                // The start of a line whose end has not arrived yet.
                var partial: [UInt8] = []
                for try await buffer in execution.standardOutput {
                    buffer.withUnsafeBytes { bytes in
                        guard let base = bytes.baseAddress else { return }
                        var start = 0
                        while start < bytes.count {
                            guard let found = memchr(base + start, Int32(UInt8(ascii: "\n")), bytes.count - start) else {
                                partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
                                return
                            }
                            let end = base.distance(to: UnsafeRawPointer(found))
                            if partial.isEmpty {
                                onOutputLine(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                            } else {
                                partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                                partial.withUnsafeBytes { onOutputLine($0) }
                                partial.removeAll(keepingCapacity: true)
                            }
                            start = end + 1
                        }
                    }
                }
                if !partial.isEmpty { partial.withUnsafeBytes { onOutputLine($0) } }
            }
            return ProcessResult(result.terminationStatus, standardError: result.standardError)
        } catch let error as SubprocessError {
            throw TSBackupError(.precondition, "Could not start \(executable): \(error). Check that it is installed and executable.")
        }
    }
}

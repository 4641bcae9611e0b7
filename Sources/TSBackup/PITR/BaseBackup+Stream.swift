import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

extension BaseBackup {
    // MARK: The stream

    /// Runs pg_basebackup writing a zstd-compressed tar to standard output, and hands that
    /// stream to `write` in order as it arrives (the repository stores and hashes it). A slow
    /// `write` slows pg_basebackup down through the pipe, so nothing piles up in memory.
    static func stream(tool: PostgresTool, settings: ConnectionSettings, jobs: Int, label: String,
                       to write: @escaping @Sendable (Data) async throws -> Void) async throws {
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        let compression = "client-zstd:level=1" + (jobs > 1 ? ",workers=\(jobs)" : "")
        let arguments = ["-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v",
                         "--compress=\(compression)", "-l", label]
        let exitStatus: TerminationStatus
        let stderr: String
        do {
            let (exe, launchArguments) = ChildLaunch.command(tool.path, arguments)
            let run = try await Subprocess.run(
                exe, arguments: launchArguments,
                environment: ChildEnvironment.subprocess(settings.childProcessEnvironment()),
                platformOptions: options, input: .none, output: .sequence, error: .string(limit: 1 << 20)
            ) { execution in
                var first = true
                for try await buffer in execution.standardOutput {
                    let data = buffer.withUnsafeBytes { Data($0) }
                    try await write(data)
                    if first {
                        first = false
                        // pg_basebackup has started and blocks on the pipe while this waits: its
                        // walsender stays connected, so a test can crash the server mid-copy.
                        await TestSeams.pauseIfAsked(atStep: "base backup: streaming")
                    }
                }
            }
            exitStatus = run.terminationStatus
            stderr = run.standardError
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "pg_basebackup could not be run: \(error). Check that it is installed.")
        } catch let error as TSBackupError {
            throw error
        } catch let error as S3Error {
            throw error
        } catch {
            throw TSBackupError(.failed, "The base backup's stream could not be stored: \(error). Check the repository and run base-backup again.")
        }
        guard case .exited(0) = exitStatus else {
            throw PgBaseBackupStderr.failure(stderr, settings: settings)
        }
    }
}

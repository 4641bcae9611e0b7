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
                for try await buffer in execution.standardOutput {
                    let data = buffer.withUnsafeBytes { Data($0) }
                    try await write(data)
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
            throw TSBackupError(.failed, "The base backup's stream could not be stored: \(error). Nothing was kept; check the repository and run base-backup again.")
        }
        guard case .exited(0) = exitStatus else {
            throw failure(stderr, settings: settings)
        }
    }

    /// pg_basebackup's failure as an error the user can act on (permission problems are exit 3).
    static func failure(_ stderr: String, settings: ConnectionSettings) -> TSBackupError {
        let text = stderr.singleLine(limit: 600)
        if stderr.contains("no pg_hba.conf entry for replication") {
            return TSBackupError(.permission, "The server refuses replication connections from this host for \(settings.user): \(text). Add a `host replication \(settings.user) <this host>/32 scram-sha-256` line to pg_hba.conf, reload the server, and run base-backup again.")
        }
        if stderr.contains("password authentication failed") || stderr.contains("must be superuser or replication role") || stderr.contains("permission denied") {
            return TSBackupError(.permission, "pg_basebackup was refused by the server: \(text). Give the role REPLICATION (or connect as one that has it) and check its password.")
        }
        if stderr.contains("could not connect") || stderr.contains("Connection refused") {
            return TSBackupError(.connection, "pg_basebackup could not reach \(settings.displayName): \(text). Check the host and port and that the server accepts connections.")
        }
        return TSBackupError(.failed, "pg_basebackup failed: \(text). Nothing was kept; fix the cause and run base-backup again.")
    }
}

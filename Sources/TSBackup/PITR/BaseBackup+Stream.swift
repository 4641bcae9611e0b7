import Crypto
import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

extension BaseBackup {
    // MARK: The stream

    struct Streamed {
        var bytes: Int64
        var sha256: String
    }

    /// Runs pg_basebackup writing a zstd-compressed tar to standard output, and writes that
    /// stream to `path`, hashing it on the way.
    static func stream(tool: PostgresTool, settings: ConnectionSettings, jobs: Int, label: String, to path: String) async throws -> Streamed {
        let file: FileDescriptor
        do {
            file = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        } catch {
            throw FileSystem.ioError("create \(path)", underlying: error)
        }
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        let compression = "client-zstd:level=1" + (jobs > 1 ? ",workers=\(jobs)" : "")
        let arguments = ["-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v",
                         "--compress=\(compression)", "-l", label]
        let exitStatus: TerminationStatus
        let stderr: String
        let written: (Int64, String)
        do {
            defer { try? file.close() }
            let run = try await Subprocess.run(
                .path(FilePath(tool.path)), arguments: Arguments(arguments),
                environment: ChildEnvironment.subprocess(settings.childProcessEnvironment()),
                platformOptions: options, input: .none, output: .sequence, error: .string(limit: 1 << 20)
            ) { execution -> (Int64, String) in
                var hasher = SHA256()
                var total: Int64 = 0
                for try await buffer in execution.standardOutput {
                    try buffer.withUnsafeBytes { bytes in
                        hasher.update(bufferPointer: bytes)
                        var offset = 0
                        while offset < bytes.count {
                            offset += try file.write(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                        }
                    }
                    total += Int64(buffer.count)
                }
                guard fsync(file.rawValue) == 0 else { throw FileSystem.ioError("fsync \(path)") }
                return (total, hasher.finalize().map { String(format: "%02x", $0) }.joined())
            }
            exitStatus = run.terminationStatus
            stderr = run.standardError
            written = run.closureResult
        } catch let error as SubprocessError {
            throw TSBackupError(.failed, "pg_basebackup could not be run: \(error). Check that it is installed and that the repository has free space.")
        } catch let error as TSBackupError {
            throw error
        } catch {
            throw FileSystem.ioError("write \(path)", underlying: error)
        }
        guard case .exited(0) = exitStatus else {
            throw failure(stderr, settings: settings)
        }
        return Streamed(bytes: written.0, sha256: written.1)
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

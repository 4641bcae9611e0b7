import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

extension Recover {
    // MARK: The data directory

    /// Unpacks the base backup's tar into `pgdata` (created with mode 0700, handed to `postgres`
    /// when run as root).
    ///
    /// A plain local repository's tar is read in place by `tar`. Any other (S3, or encrypted) is
    /// streamed: downloaded with `jobs` ranged GETs in flight, authenticated and decrypted segment
    /// by segment, into `tar --zstd -x` as it arrives, so no copy of the tar is staged locally.
    /// The tar's size and SHA-256 are checked against the manifest as it streams; a mismatch
    /// (or a failed download) fails the lay-down and what was unpacked is removed: the directory
    /// was empty or absent before (``checkTargetDirectory(_:)``), so nothing else is touched.
    /// pg_verifybackup then checks every file against PostgreSQL's own backup_manifest.
    static func layDown(entry: RepositoryEntry, base: BaseBackupManifest, repository: any Repository, pgdata: String, jobs: Int) async throws {
        try FileManager.default.createDirectory(atPath: pgdata, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            if repository.readsInPlace {
                let local = try await repository.materialize(entry, files: base.files)
                // One tar per archive; with tablespaces there would be several, extracted side by side.
                _ = try await Concurrently.map(base.archives, limit: 4) { archive in
                    try await unpack(archive, of: base, repository: repository, pgdata: pgdata, source: .file(local.directory + "/" + archive))
                }
            } else {
                for archive in base.archives {
                    guard let file = base.files.first(where: { $0.path == archive }) else {
                        throw TSBackupError(.failed, "Base backup \(base.id) names the archive \(archive) but does not list it among its files; its manifest is damaged. Recover from another base backup.")
                    }
                    try await unpack(archive, of: base, repository: repository, pgdata: pgdata, source: .stream { write in
                        try await repository.streamFile(file, of: entry, readAhead: max(1, jobs), to: write)
                    })
                }
            }
        } catch {
            // Only what this run unpacked is there: the directory was checked empty first.
            for name in (try? FileManager.default.contentsOfDirectory(atPath: pgdata)) ?? [] {
                try? FileManager.default.removeItem(atPath: pgdata + "/" + name)
            }
            throw error
        }
        // pg_basebackup -X none leaves pg_wal empty; it must exist for the server to start.
        try? FileManager.default.createDirectory(atPath: pgdata + "/pg_wal/archive_status", withIntermediateDirectories: true)
        chmod(pgdata, 0o700)
        try await ServerControl.handToServerUser(pgdata)
    }

    enum TarSource: Sendable {
        case file(String)
        case stream(@Sendable (_ write: @Sendable (Data) async throws -> Void) async throws -> Void)
    }

    static func unpack(_ archive: String, of base: BaseBackupManifest, repository: any Repository, pgdata: String, source: TarSource) async throws {
        func failed(_ detail: String) -> TSBackupError {
            TSBackupError(.failed, "Could not unpack \(archive) of base backup \(base.id) into \(pgdata) (\(detail)). What was unpacked was removed; run `tsbackup verify \(base.id) --repo \(repository.location)`, then recover again.")
        }
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        let environment = ChildEnvironment.subprocess(["LC_MESSAGES": "C"])
        do {
            switch source {
            case .file(let path):
                let (exe, arguments) = ChildLaunch.command("tar", ["--zstd", "-x", "-f", path, "-C", pgdata])
                let run = try await Subprocess.run(
                    exe, arguments: arguments, environment: environment,
                    platformOptions: options, input: .none, output: .discarded, error: .string(limit: 64 << 10))
                guard case .exited(0) = run.terminationStatus else {
                    throw failed("\(run.terminationStatus): \(run.standardError.singleLine(limit: 300))")
                }
            case .stream(let produce):
                let (exe, arguments) = ChildLaunch.command("tar", ["--zstd", "-x", "-f", "-", "-C", pgdata])
                let run = try await Subprocess.run(
                    exe, arguments: arguments, environment: environment,
                    platformOptions: options, input: .inputWriter, output: .discarded, error: .string(limit: 64 << 10)
                ) { execution -> (any Error)? in
                    let writer = execution.standardInputWriter
                    do {
                        try await produce { data in _ = try await writer.write(data) }
                        try await writer.finish()
                        return nil
                    } catch {
                        // Returned, not thrown: tar sees the end of its input and is awaited first.
                        try? await writer.finish()
                        return error
                    }
                }
                if let error = run.closureResult {
                    if let error = error as? TSBackupError { throw error }
                    // tar stopped reading (it failed): its own message says why.
                    guard case .exited(0) = run.terminationStatus else {
                        throw failed("\(run.terminationStatus): \(run.standardError.singleLine(limit: 300))")
                    }
                    throw failed("\(error)")
                }
                guard case .exited(0) = run.terminationStatus else {
                    throw failed("\(run.terminationStatus): \(run.standardError.singleLine(limit: 300))")
                }
            }
        } catch let error as SubprocessError {
            throw failed("tar could not be run: \(error); check that GNU tar and zstd are installed")
        }
    }
}

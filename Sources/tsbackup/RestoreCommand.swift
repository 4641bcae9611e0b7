import ArgumentParser
import Foundation
import TSBackup

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup into a new database, verify it, and optionally promote it.",
        discussion: """
            Preflight first (the backup verifies; the target role is a superuser; the target's \
            PostgreSQL is not older and offers the backup's TimescaleDB version; needed roles \
            exist; the new database does not; its TimescaleDB scheduler will find a slot in both \
            timescaledb.max_background_workers and max_worker_processes, which the launcher, every \
            other database's scheduler and other long-running workers hold: refused with exit 5 \
            when either is full). Then the TimescaleDB procedure: CREATE DATABASE, \
            CREATE EXTENSION timescaledb VERSION '<backup's>', timescaledb_pre_restore(), a phased \
            pg_restore (pre-data; catalog data serially; data and post-data with --jobs), \
            timescaledb_post_restore(), a restart of background workers from a new session, ANALYZE. \
            Then every figure of the manifest is checked in the new database. Any failure drops the \
            new database (kept with --keep-failed) and leaves everything else untouched.

            --update-extension[=VERSION]: after that verification, a fresh session whose first \
            statement is ALTER EXTENSION timescaledb UPDATE [TO 'VERSION'] (default: the target's \
            default version), in one transaction with a check of the installed and catalog \
            versions; then background workers are restarted and everything is verified again. If \
            the update fails it rolls back: the database stays at the backup's version, verified, \
            and is not promoted. Sessions on the new database run with synchronous_commit off \
            until a final synchronous WAL flush, which makes the whole restore durable before it \
            reports success.
            """
    )

    @Argument(help: "The backup id (see list).") var id: String
    @OptionGroup var repository: RepositoryOptions

    @Option(name: .customLong("target"), help: ArgumentHelp(
        "Connection URL of the target server (any existing database on it, e.g. /postgres).", valueName: "url"))
    var target: String?

    @Option(help: "Name of the new database (default: <source db>_restore_<id>).")
    var into: String?

    @Option(help: "pg_restore jobs for the data phase (default: number of cores).")
    var jobs: Int?

    @Option(name: .customLong("promote-to"), help: "After verification, move this database aside and give the restored one its name (needs --yes).")
    var promoteTo: String?

    @Flag(help: "Confirm --promote-to.") var yes = false

    @Flag(name: .customLong("keep-failed"), help: "Keep the new database when a step fails (never in restore mode).")
    var keepFailed = false

    @Flag(name: .customLong("create-roles"), help: "Create roles the backup needs and the target lacks (without passwords).")
    var createRoles = false

    @Option(name: .customLong("update-extension"), help: ArgumentHelp(
        "After verification, update TimescaleDB (bare --update-extension: to the target's default; --update-extension=VERSION: to VERSION) and verify again.",
        valueName: "version"))
    var updateExtensionVersion: String?

    @Flag(name: .customLong("update-extension-default"), help: .hidden)
    var updateExtensionDefault = false

    @Flag(help: "Print the report as JSON.") var json = false

    func validate() throws {
        if promoteTo != nil && !yes {
            throw ValidationError("--promote-to renames databases on the target; add --yes to confirm.")
        }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
        if let version = updateExtensionVersion, !ExtensionUpdate.isPlausibleVersion(version) {
            throw ValidationError("--update-extension=\(version) is not a TimescaleDB version (letters, digits, '.', '-', '_', '+'; e.g. --update-extension=2.19.3). A bare --update-extension updates to the target's default version.")
        }
    }

    func run() async throws {
        try await reportingErrors {
            var request = Restore.Request(id: id, repository: try repository.resolved(),
                                          target: try ConnectionSettings.resolve(target))
            request.into = into
            if let jobs { request.jobs = jobs }
            request.promoteTo = promoteTo
            request.keepFailed = keepFailed
            request.createRoles = createRoles
            request.cleanupPatience = try WaitSetting.seconds(WaitSetting.cleanup)
            if let version = updateExtensionVersion {
                request.updateExtension = .version(version)
            } else if updateExtensionDefault {
                request.updateExtension = .defaultVersion
            }
            // Tests only (one TimescaleDB version is built here): run the real ALTER EXTENSION even
            // when it would be a no-op or has no update path.
            request.forceExtensionUpdateForTesting = ProcessInfo.processInfo.environment["TSBACKUP_TEST_FORCE_EXTENSION_UPDATE"] == "1"
            let showProgress = ProgressLine.enabled && !json
            let onProgress: (@Sendable (Restore.Progress) -> Void)? = showProgress ? Self.render : nil
            do {
                let report = try await Restore.run(request, onProgress: onProgress)
                if showProgress { ProgressLine.clear() }
                print(json ? try JSONOutput.encode(report) : report.renderReport())
                // Out (not in a pipe's buffer) before the database stops counting as an
                // interrupted run's: a kill after this leaves a database the report named.
                fflush(nil)  // every stream: stdout among them
                do {
                    try await Restore.acknowledge(report, request: request)
                } catch {
                    let message = (error as? TSBackupError)?.message ?? "\(error)"
                    throw TSBackupError(.failed, "The restore of \(report.id) into \(report.database) verified (report above), but its in-progress marker could not be removed (\(message)); until it is, the next restore on this server drops \(report.database) as an interrupted run's. Remove it: COMMENT ON DATABASE \(quoteIdentifier(report.database)) IS NULL.")
                }
            } catch let failure as Restore.Failure {
                if showProgress { ProgressLine.clear() }
                print(json ? try JSONOutput.encode(failure.report) : failure.report.renderReport())
                throw failure.error
            }
        }
    }

    @Sendable static func render(_ p: Restore.Progress) {
        var text = "restore: \(p.phase)"
        if p.objectsTotal > 0 {
            text += "  objects \(p.objectsDone)/\(p.objectsTotal)"
        }
        if p.bytesTotal > 0 {
            text += "  \(ByteCount.format(p.bytesLoaded)) of \(ByteCount.format(p.bytesTotal)) loaded"
        }
        ProgressLine.show(text + "  elapsed \(ProgressLine.duration(p.elapsed))")
    }
}

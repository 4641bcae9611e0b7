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
            exist; the new database does not). Then the TimescaleDB procedure: CREATE DATABASE, \
            CREATE EXTENSION timescaledb VERSION '<backup's>', timescaledb_pre_restore(), a phased \
            pg_restore (pre-data; catalog data serially; data and post-data with --jobs), CHECKPOINT, \
            timescaledb_post_restore(), a restart of background workers from a new session, ANALYZE. \
            Then every figure of the manifest is checked in the new database. Any failure drops the \
            new database (kept with --keep-failed) and leaves everything else untouched.
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

    @Flag(help: "Print the report as JSON.") var json = false

    func validate() throws {
        if promoteTo != nil && !yes {
            throw ValidationError("--promote-to renames databases on the target; add --yes to confirm.")
        }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
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
            let showProgress = ProgressLine.enabled && !json
            let onProgress: (@Sendable (Restore.Progress) -> Void)? = showProgress ? Self.render : nil
            do {
                let report = try await Restore.run(request, onProgress: onProgress)
                if showProgress { ProgressLine.clear() }
                print(json ? try JSONOutput.encode(report) : report.renderReport())
            } catch let failure as Restore.Failure {
                if showProgress { ProgressLine.clear() }
                print(json ? try JSONOutput.encode(failure.report) : failure.report.renderReport())
                throw failure.error
            }
        }
    }

    @Sendable static func render(_ p: Restore.Progress) {
        ProgressLine.show("restore: \(p.phase)  elapsed \(ProgressLine.duration(p.elapsed))")
    }
}

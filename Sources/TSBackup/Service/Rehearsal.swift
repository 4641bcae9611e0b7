import Foundation
import PostgresNIO

/// A restore rehearsal: the newest complete backup of a database restored into a uniquely named
/// scratch database on a rehearsal server, with the restore's full verification (catalog,
/// dimensions and chunks, rows and content hashes, indexes, constraints, foreign keys, jobs,
/// restore mode, scheduler, a rolled-back insert per hypertable), then dropped.
///
/// The scratch database never remains: the restore drops it on any failure, and the rehearsal
/// drops it after success, and checks `pg_database` afterwards either way; a scratch database
/// still there is a failed rehearsal, named in the result.
public enum Rehearsal {
    public struct Request: Sendable {
        /// The service's name for the database (used in the scratch name and the result).
        public var database: String
        public var repository: RepositoryAccess
        /// The rehearsal server (any existing database on it, e.g. postgres), as a superuser.
        public var server: ConnectionSettings
        /// Which repository entries are this database's backups.
        public var belongs: @Sendable (BackupManifest) -> Bool
        /// A specific backup; nil rehearses the newest complete one.
        public var backupID: String?
        public var jobs: Int = 2

        public init(database: String, repository: RepositoryAccess, server: ConnectionSettings,
                    belongs: @escaping @Sendable (BackupManifest) -> Bool, backupID: String? = nil) {
            self.database = database
            self.repository = repository
            self.server = server
            self.belongs = belongs
            self.backupID = backupID
        }
    }

    /// What a rehearsal found; stored by the service and shown on the dashboard and in metrics.
    public struct Result: Codable, Sendable {
        public var database: String
        /// The backup restored; nil when there was none to rehearse.
        public var backupID: String?
        public var scratchDatabase: String?
        public var server: String
        public var ok: Bool
        public var startedAt: Date
        public var durationSeconds: Double
        /// The failure, in the restore's words (a step and what to do).
        public var error: String?
        /// Whether the scratch database is gone afterwards (checked in pg_database).
        public var scratchDropped: Bool
        /// The restore's report: steps, versions and every verification check.
        public var report: Restore.Report?
        /// True when the repository held no complete backup of the database to rehearse (a
        /// schedule that fires before the first backup); absent otherwise.
        public var nothingToRehearse: Bool?

        enum CodingKeys: String, CodingKey {
            case database
            case backupID = "backup_id"
            case scratchDatabase = "scratch_database"
            case server, ok
            case startedAt = "started_at"
            case durationSeconds = "duration_seconds"
            case error
            case scratchDropped = "scratch_dropped"
            case report
            case nothingToRehearse = "nothing_to_rehearse"
        }

        public init(database: String, backupID: String?, scratchDatabase: String?, server: String, ok: Bool, startedAt: Date,
                    durationSeconds: Double, error: String?, scratchDropped: Bool, report: Restore.Report?, nothingToRehearse: Bool? = nil) {
            self.database = database
            self.backupID = backupID
            self.scratchDatabase = scratchDatabase
            self.server = server
            self.ok = ok
            self.startedAt = startedAt
            self.durationSeconds = durationSeconds
            self.error = error
            self.scratchDropped = scratchDropped
            self.report = report
            self.nothingToRehearse = nothingToRehearse
        }

        /// Verification checks passed / total, for summaries.
        public var checksSummary: String {
            guard let checks = report?.checks, !checks.isEmpty else { return "no checks" }
            return "\(checks.filter(\.ok).count)/\(checks.count) checks ok"
        }
    }

    /// The prefix of every scratch database, so leftovers are recognisable.
    public static let scratchPrefix = "tsbackup_rehearsal_"

    /// `tsbackup_rehearsal_<database>_<id>_<random>`, lower case, at most 63 bytes.
    public static func scratchName(database: String, backupID: String) -> String {
        let clean = { (text: String) in
            String(text.lowercased().map { ($0.isASCII && ($0.isLetter || $0.isNumber)) ? $0 : "_" })
        }
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let tail = "_" + clean(backupID) + "_" + random
        let room = 63 - scratchPrefix.utf8.count - tail.utf8.count
        return scratchPrefix + String(clean(database).prefix(max(0, room))) + tail
    }

    /// Runs one rehearsal. Never throws: every failure is a result with `ok == false`.
    public static func run(_ request: Request) async -> Result {
        let started = Date()
        var result = Result(database: request.database, backupID: nil, scratchDatabase: nil, server: request.server.displayName,
                            ok: false, startedAt: started, durationSeconds: 0, error: nil, scratchDropped: true, report: nil)
        do {
            let id: String
            if let chosen = request.backupID {
                id = chosen
            } else {
                let found: String?
                do {
                    found = try await newestCompleteBackup(request)
                } catch let error as TSBackupError where error.kind == .notFound {
                    // The repository does not exist yet: no backup was ever taken into it.
                    result.error = "No backup of \(request.database) to rehearse: \(error.message) Take a backup first."
                    result.nothingToRehearse = true
                    result.durationSeconds = Date().timeIntervalSince(started)
                    return result
                }
                guard let newest = found else {
                    result.error = "No complete backup of \(request.database) in \(request.repository.url) to rehearse. Take a backup first."
                    result.nothingToRehearse = true
                    result.durationSeconds = Date().timeIntervalSince(started)
                    return result
                }
                id = newest
            }
            result.backupID = id
            let scratch = scratchName(database: request.database, backupID: id)
            result.scratchDatabase = scratch
            var restore = Restore.Request(id: id, repository: request.repository, target: request.server)
            restore.into = scratch
            restore.jobs = request.jobs
            do {
                let report = try await Restore.run(restore)
                result.report = report
                result.ok = report.ok
            } catch let failure as Restore.Failure {
                result.report = failure.report
                result.error = failure.error.message
            } catch {
                result.error = (error as? TSBackupError)?.message ?? "The rehearsal failed: \(error)"
            }
            // Drop it whatever happened, then make sure it is gone; in a task of its own, so a
            // rehearsal cancelled at shutdown still cleans up.
            let server = request.server
            let dropped = await Task { await dropScratch(scratch, server: server) }.value
            result.scratchDropped = dropped.gone
            if !dropped.gone {
                result.ok = false
                result.error = [result.error, "The scratch database \(scratch) could not be dropped on \(request.server.displayName): \(dropped.problem ?? "it is still there"). Drop it by hand."]
                    .compactMap { $0 }.joined(separator: " ")
            }
        } catch {
            result.error = (error as? TSBackupError)?.message ?? "The rehearsal failed: \(error)"
        }
        result.durationSeconds = Date().timeIntervalSince(started)
        return result
    }

    /// The newest complete database backup that belongs to the request's database.
    static func newestCompleteBackup(_ request: Request) async throws -> String? {
        try await request.repository.with(create: false) { repository in
            try await repository.entries()
                .filter { $0.state == .complete && $0.problem == nil && $0.manifest.map(request.belongs) == true }
                .max { ($0.manifest!.startedAt, $0.id) < ($1.manifest!.startedAt, $1.id) }?.id
        }
    }

    /// Drops the scratch database (forcing out sessions) and reports whether it is gone.
    static func dropScratch(_ name: String, server: ConnectionSettings) async -> (gone: Bool, problem: String?) {
        do {
            return try await DatabaseSession.with(server) { session in
                try await session.execute("DROP DATABASE IF EXISTS \(SQLIdentifier.quote(name)) WITH (FORCE)", purpose: "dropping the rehearsal's scratch database")
                let remaining = try await session.value("SELECT count(*) FROM pg_database WHERE datname = \(name)", as: Int64.self,
                                                        purpose: "checking the scratch database is gone")
                return (remaining == 0, remaining == 0 ? nil : "it is still listed in pg_database")
            }
        } catch {
            return (false, (error as? TSBackupError)?.message ?? "\(error)")
        }
    }
}

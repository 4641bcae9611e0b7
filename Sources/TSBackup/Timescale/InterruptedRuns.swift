import Foundation
import PostgresNIO
import Synchronization

/// What a restore or an import leaves on the target while it runs, so that a run killed outright
/// (SIGKILL, OOM killer, power loss: no cleanup code runs) is found and undone by the next one.
///
/// The new database (restore) or table (import-hypertable) carries a comment naming the run:
/// `tsbackup restore in progress: backup=ID pid=PID host=HOST started=TIME`. The next restore or
/// import on the same target looks for marked objects: one whose run is gone (same host, no
/// process with that pid) is dropped and the drop is reported as a warning; one whose run may
/// still be going (a live pid, or another host, where liveness cannot be told) is left alone and
/// named.
///
/// A restore's database is created already marked (psql runs CREATE DATABASE and the COMMENT as
/// a process that finishes even if tsbackup is killed between them), and the marker is removed
/// only after the run's report was printed or recorded (``Restore/acknowledge(_:request:)``), or
/// just before a promotion. An import's table is marked in the transaction that creates it and
/// unmarked after the report was printed (``HypertableImport/acknowledge(_:request:)``). A run
/// killed after printing its report but before it exited counts as interrupted too (its exit
/// status is not 0): the next run drops what it made, and says so.
public enum InterruptedRuns {
    public enum Kind: String, Sendable {
        case restore, `import`
    }

    /// Who created a marked object.
    public struct Owner: Sendable, Equatable {
        public var kind: Kind
        public var backup: String
        public var pid: Int32
        public var host: String
        public var started: String

        public init(kind: Kind, backup: String, pid: Int32 = getpid(), host: String = ProcessInfo.processInfo.hostName,
                    started: String = ISO8601DateFormatter().string(from: Date())) {
            self.kind = kind
            self.backup = backup
            self.pid = pid
            self.host = host
            self.started = started
        }

        /// The comment text.
        public var comment: String {
            "tsbackup \(kind.rawValue) in progress: backup=\(backup) pid=\(pid) host=\(host) started=\(started)"
        }

        public var description: String {
            "\(kind.rawValue) of \(backup) by pid \(pid) on \(host), started \(started)"
        }

        /// Parses a comment written by ``comment``; nil for anything else.
        public static func parse(_ text: String) -> Owner? {
            for kind in [Kind.restore, .import] {
                let prefix = "tsbackup \(kind.rawValue) in progress: "
                guard text.hasPrefix(prefix) else { continue }
                var fields: [String: String] = [:]
                for word in text.dropFirst(prefix.count).split(separator: " ") {
                    guard let equals = word.firstIndex(of: "=") else { return nil }
                    fields[String(word[..<equals])] = String(word[word.index(after: equals)...])
                }
                guard let backup = fields["backup"], let pidText = fields["pid"], let pid = Int32(pidText),
                      let host = fields["host"], let started = fields["started"] else { return nil }
                return Owner(kind: kind, backup: backup, pid: pid, host: host, started: started)
            }
            return nil
        }

        /// Whether the run is certainly gone: it ran on this host and no process has its pid.
        /// (Not this process: a service runs several restores at once.)
        public func isGone(thisHost: String = ProcessInfo.processInfo.hostName) -> Bool {
            guard host == thisHost, pid != getpid() else { return false }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
    }

    /// The pattern the comments match, for the catalog queries.
    static func likePattern(_ kind: Kind) -> String { "tsbackup \(kind.rawValue) in progress: %" }

    /// The `application_name` of the psql that creates a restore's database and marks it
    /// (`Restore`'s `createDatabase`), so that a sweep can see that such a pair is still running.
    public static let creatorApplicationName = "tsbackup restore: creating database"

    /// How long a sweep waits at most for pairs still creating their database: a hang guard (a
    /// pair takes seconds, even on a loaded server); after it, the sweep looks anyway.
    public static let creatorPatience: Duration = .seconds(300)

    /// Waits until no restore is creating its database on the server: no session with
    /// ``creatorApplicationName`` is open, and (for pairs started on this host that have not
    /// connected yet) no local psql runs such a pair.
    ///
    /// Why: a killed restore's psql pair outlives it and commits the marker comment a moment after
    /// CREATE DATABASE. A sweep that looked in between saw an unmarked database, left it alone,
    /// and the database stayed, named by no one (the kill campaign's `chaos_r_k73`). Says on
    /// stderr when it waits, since a restore then seems to stand still.
    static func waitForDatabaseCreators(_ session: DatabaseSession, server: String, patience: Duration = creatorPatience) async throws {
        let deadline = ContinuousClock.now + patience
        var said = false
        while true {
            let sessions = try await session.value(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = \(creatorApplicationName) AND pid <> pg_backend_pid()",
                as: Int64.self, purpose: "looking for restores still creating their database")
            let waiting = max(Int(sessions), localCreators())
            if waiting == 0 { return }
            if !said {
                said = true
                standardError("tsbackup: waiting for \(waiting) restore(s) still creating their database on \(server) before looking for databases of interrupted restores.")
            }
            guard ContinuousClock.now < deadline else {
                standardError("tsbackup: stopped waiting after \(patience) for restores creating their database on \(server); looking now.")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The psql processes on this host that run a restore's CREATE DATABASE + marker pair (their
    /// arguments hold the marker comment; /proc/PID/cmdline is readable for every process).
    static func localCreators(proc: String = "/proc") -> Int {
        let prefix = Array("tsbackup \(Kind.restore.rawValue) in progress: ".utf8)
        return ((try? FileManager.default.contentsOfDirectory(atPath: proc)) ?? []).filter { entry in
            guard Int32(entry) != nil, let data = FileManager.default.contents(atPath: "\(proc)/\(entry)/cmdline") else { return false }
            let words = data.split(separator: 0, omittingEmptySubsequences: false)
            guard let program = words.first, program.split(separator: UInt8(ascii: "/")).last.map({ Array($0) == Array("psql".utf8) }) == true else { return false }
            return words.contains { word in
                Array(word).starts(with: Array("COMMENT ON DATABASE ".utf8)) && Array(word).firstRange(of: prefix) != nil
            }
        }.count
    }

    static func standardError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Drops the databases on the target server that restores which no longer run left behind;
    /// returns one warning per database found (dropped, or named and kept). Needs a superuser
    /// session (a restore's own preflight has checked that). Waits first for restores that are
    /// still creating their database (``waitForDatabaseCreators(_:server:patience:)``).
    static func sweepDatabases(_ session: DatabaseSession, server: String, patience: Duration = creatorPatience) async throws -> [String] {
        try await waitForDatabaseCreators(session, server: server, patience: patience)
        let rows = try await session.rows(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE \(likePattern(.restore)) ORDER BY 1",
            as: (String, String).self, purpose: "looking for databases of interrupted restores")
        return try await sweep(session, rows.map { database, comment in
            Marked(object: "the database \(database) on \(server)", name: database, comment: comment,
                   current: "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = \(database)",
                   drop: "DROP DATABASE \(quoteIdentifier(database)) WITH (FORCE)",
                   dropIfExists: "DROP DATABASE IF EXISTS \(quoteIdentifier(database)) WITH (FORCE)", leftState: "half-restored (or restored but never reported) and possibly in TimescaleDB's restore mode")
        }, kind: .restore)
    }

    /// Drops the tables in the session's database that imports which no longer run left behind;
    /// returns one warning per table found.
    static func sweepTables(_ session: DatabaseSession, database: String) async throws -> [String] {
        let rows = try await session.rows(
            """
            SELECT n.nspname::text, c.relname::text, obj_description(c.oid, 'pg_class')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND obj_description(c.oid, 'pg_class') LIKE \(likePattern(.import)) ORDER BY 1, 2
            """, as: (String, String, String).self, purpose: "looking for tables of interrupted imports")
        return try await sweep(session, rows.map { schema, table, comment in
            Marked(object: "the table \(schema).\(table) in database \"\(database)\"", name: "\(schema).\(table)", comment: comment,
                   current: "SELECT obj_description(to_regclass(\("\(quoteIdentifier(schema)).\(quoteIdentifier(table))")), 'pg_class')",
                   drop: "DROP TABLE \(quoteIdentifier(schema)).\(quoteIdentifier(table)) CASCADE",
                   dropIfExists: "DROP TABLE IF EXISTS \(quoteIdentifier(schema)).\(quoteIdentifier(table)) CASCADE", leftState: "half-imported")
        }, kind: .import)
    }

    /// One marked object a sweep found.
    struct Marked {
        /// "the database x on host:port", "the table s.t in database \"d\"", for messages.
        var object: String
        /// The name the drop reports (the campaign matches exact names).
        var name: String
        var comment: String
        /// The object's comment as it is now (NULL when it or its comment is gone).
        var current: PostgresQuery
        /// The statement given to the operator when it cannot be dropped here.
        var drop: String
        /// The statement the sweep runs (IF EXISTS: a concurrent sweep may have been first).
        var dropIfExists: String
        /// What the interrupted run left it as, for messages.
        var leftState: String
    }

    /// The sweeps' shared loop: drops what runs that are certainly gone left, names what runs
    /// on other hosts are marked with, leaves live runs' objects alone.
    static func sweep(_ session: DatabaseSession, _ found: [Marked], kind: Kind) async throws -> [String] {
        var warnings: [String] = []
        for item in found {
            guard let owner = Owner.parse(item.comment), owner.kind == kind else { continue }
            await TestSeams.pauseIfAsked(atStep: "sweep: checking \(item.name)")
            if owner.isGone() {
                // The marker was read before the run was found gone: a run that finished in
                // between removed its marker, then exited, and its object is complete. Read the
                // marker again, after the run was seen gone: if it is still there, the run ended
                // without removing it (a run removes it before it exits), so the object is a leftover.
                let now = try await session.value(item.current, as: String?.self, purpose: "reading the marker of \(item.name) again")
                guard now == item.comment else { continue }
                do {
                    try await session.execute(item.dropIfExists, purpose: "dropping \(item.name)")
                    warnings.append("Dropped \(item.object): an interrupted \(kind.rawValue) (\(owner.description), a process that no longer runs) had left it \(item.leftState).")
                } catch let error as TSBackupError {
                    warnings.append("\(capitalized(item.object)) was left \(item.leftState) by an interrupted \(kind.rawValue) (\(owner.description)) but could not be dropped (\(error.message)); drop it: \(item.drop).")
                }
            } else if owner.host != ProcessInfo.processInfo.hostName {
                warnings.append("\(capitalized(item.object)) is marked as being \(kind == .restore ? "restored" : "imported") by another host (\(owner.description)). If that run is gone, drop it: \(item.drop).")
            }
        }
        return warnings
    }

    static func capitalized(_ text: String) -> String { text.prefix(1).uppercased() + text.dropFirst() }

    /// The sweep of ``sweepDatabases(_:server:)`` on its own session: the service runs it when it
    /// starts after a restore job was interrupted, so the leftover is dropped (and said so) then,
    /// not only at the next restore. Needs a superuser connection to the target server. A server
    /// that cannot be reached yet (or is starting up) is tried again for up to `patience`: the
    /// service often starts beside it, or on a loaded machine.
    public static func sweepRestores(on target: ConnectionSettings, patience: Duration = .seconds(120)) async throws -> [String] {
        let found = Mutex<[String]>([])
        let problem = await ServerRecovery.retryingWhileUnreachable(patience: patience) {
            let warnings = try await DatabaseSession.with(target) { session in
                try await sweepDatabases(session, server: "\(target.host):\(target.port)")
            }
            found.withLock { $0 = warnings }
        }
        if let problem { throw TSBackupError(.failed, "Looking for databases of interrupted restores on \(target.host):\(target.port) failed: \(problem)") }
        return found.withLock { $0 }
    }

    /// Removes this process's restore marker from `database` (see ``Restore/acknowledge(_:request:)``);
    /// a marker that is not this process's for `backup` (or none) is left as it is.
    static func release(database: String, backup: String, settings: ConnectionSettings) async throws {
        try await DatabaseSession.with(settings) { session in
            let comment = try await session.values(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = \(database)",
                as: String?.self, purpose: "reading the restored database's marker").first ?? nil
            guard let comment, let owner = Owner.parse(comment), owner.kind == .restore, owner.backup == backup,
                  owner.pid == getpid(), owner.host == ProcessInfo.processInfo.hostName else { return }
            try await session.execute("COMMENT ON DATABASE \(quoteIdentifier(database)) IS NULL", purpose: "removing the restored database's marker")
        }
    }
}

import Foundation
import PostgresNIO

/// What a restore or an import leaves on the target while it runs, so that a run killed outright
/// (SIGKILL, OOM killer, power loss: no cleanup code runs) is found and undone by the next one.
///
/// The new database (restore) or table (import-hypertable) carries a comment naming the run:
/// `tsbackup restore in progress: backup=ID pid=PID host=HOST started=TIME`. The comment is
/// removed as the run's last change before it reports success (a promoted database never carries
/// it). The next restore or import on the same target looks for marked objects: one whose run is
/// gone (same host, no process with that pid) is dropped and the drop is reported as a warning;
/// one whose run may still be going (a live pid, or another host, where liveness cannot be told)
/// is left alone and named.
///
/// The comment is set right after CREATE DATABASE (which cannot share a transaction); a kill in
/// the round trip between the two leaves an empty, unmarked database outside restore mode.
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

    /// Drops the databases on the target server that restores which no longer run left behind;
    /// returns one warning per database found (dropped, or named and kept). Needs a superuser
    /// session (a restore's own preflight has checked that).
    static func sweepDatabases(_ session: DatabaseSession, server: String) async throws -> [String] {
        let rows = try await session.rows(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE \(likePattern(.restore)) ORDER BY 1",
            as: (String, String).self, purpose: "looking for databases of interrupted restores")
        var warnings: [String] = []
        for (database, comment) in rows {
            guard let owner = Owner.parse(comment) else { continue }
            if owner.isGone() {
                do {
                    try await session.execute("DROP DATABASE IF EXISTS \(quoteIdentifier(database)) WITH (FORCE)", purpose: "dropping \(database)")
                    warnings.append("Dropped the database \(database) on \(server): an interrupted restore (\(owner.description), a process that no longer runs) had left it half-restored and in TimescaleDB's restore mode.")
                } catch let error as TSBackupError {
                    warnings.append("The database \(database) on \(server) was left by an interrupted restore (\(owner.description)) but could not be dropped (\(error.message)); drop it: DROP DATABASE \(quoteIdentifier(database)) WITH (FORCE).")
                }
            } else if owner.host != ProcessInfo.processInfo.hostName {
                warnings.append("The database \(database) on \(server) is marked as being restored by another host (\(owner.description)). If that run is gone, drop it: DROP DATABASE \(quoteIdentifier(database)) WITH (FORCE).")
            }
        }
        return warnings
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
        var warnings: [String] = []
        for (schema, table, comment) in rows {
            guard let owner = Owner.parse(comment) else { continue }
            let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(table))"
            if owner.isGone() {
                do {
                    try await session.execute("DROP TABLE IF EXISTS \(qualified) CASCADE", purpose: "dropping \(schema).\(table)")
                    warnings.append("Dropped the table \(schema).\(table) in database \"\(database)\": an interrupted import (\(owner.description), a process that no longer runs) had left it half-imported.")
                } catch let error as TSBackupError {
                    warnings.append("The table \(schema).\(table) in database \"\(database)\" was left half-imported by an interrupted import (\(owner.description)) but could not be dropped (\(error.message)); drop it: DROP TABLE \(qualified) CASCADE.")
                }
            } else if owner.host != ProcessInfo.processInfo.hostName {
                warnings.append("The table \(schema).\(table) in database \"\(database)\" is marked as being imported by another host (\(owner.description)). If that run is gone, drop it: DROP TABLE \(qualified) CASCADE.")
            }
        }
        return warnings
    }
}

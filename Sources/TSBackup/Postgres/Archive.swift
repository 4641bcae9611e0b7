import Foundation
import PostgresNIO

/// Reading pg_dump archives with pg_restore.
public enum Archive {
    /// The archive's table of contents (`pg_restore --list`).
    public static func list(_ path: String, pgRestore: PostgresTool) async throws -> ArchiveContents {
        let result = try await ProcessRunner.run(pgRestore.path, ["--list", path])
        guard result.succeeded else {
            throw TSBackupError(.failed, "pg_restore cannot read the archive \(path) (\(result.statusDescription)): \(result.standardError.singleLine(limit: 400)). The archive is damaged or incomplete.")
        }
        return ArchiveContents(listing: result.standardOutput)
    }

    /// The completeness check of the backup (``ArchiveCompleteness``) over the tables of contents
    /// of `paths` together, each streamed from `pg_restore --list` and never held whole: what is
    /// missing, empty when complete.
    public static func missingTimescaleEntries(_ paths: [String], pgRestore: PostgresTool, chunks: [String],
                                               timescaleInstalled: Bool, dataCopied: [String] = []) async throws -> [String] {
        var check = ArchiveCompleteness(chunks: chunks, timescaleInstalled: timescaleInstalled)
        check.dataCopied(dataCopied)
        for path in paths {
            let result = try await ProcessRunner.runStreamingOutput(pgRestore.path, ["--list", path]) { check.take(line: $0) }
            guard result.succeeded else {
                throw TSBackupError(.failed, "pg_restore cannot read the archive \(path) (\(result.statusDescription)): \(result.standardError.singleLine(limit: 400)). The archive is damaged or incomplete.")
            }
        }
        return check.missing
    }
}

/// The roles a database needs, captured beside every backup: TimescaleDB stores job owners as
/// role names, and objects belong to roles; a restore target without them loses jobs.
enum RoleDump {
    /// Runs `pg_dumpall --roles-only --no-role-passwords` into `path`: true when it did, false
    /// when there is no pg_dumpall or it refused (``writeFromCatalog(to:session:)`` then).
    static func dumpAll(to path: String, plan: Backup.Plan, settings: ConnectionSettings) async throws -> Bool {
        // Looked up here, beside pg_dump, not in the preflight: a missing pg_dumpall stops nothing.
        guard let pgDumpAll = try? await PostgresTools.locate("pg_dumpall", minimumMajor: plan.server.majorVersion) else { return false }
        let environment = settings.childProcessEnvironment()
        let result = try await ProcessRunner.run(pgDumpAll.path, [
            "--roles-only", "--no-role-passwords", "--no-password", "--file=\(path)", "--database=\(settings.database)",
        ], environment: environment)
        return result.succeeded
    }

    /// Writes CREATE ROLE statements without passwords to `path`, rebuilt from pg_roles and
    /// pg_auth_members; returns how they were obtained ("catalog query").
    static func writeFromCatalog(to path: String, session: DatabaseSession) async throws -> String {
        let roles = try await session.rows(
            """
            SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls
            FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1
            """, as: (String, Bool, Bool, Bool, Bool, Bool, Bool, Bool).self, purpose: "listing roles")
        var sql = "-- Roles needed by the database, without passwords (written by tsbackup from pg_roles).\n"
        for role in roles {
            let name = quoteIdentifier(role.0)
            let options = [role.1 ? "SUPERUSER" : "NOSUPERUSER", role.2 ? "INHERIT" : "NOINHERIT",
                           role.3 ? "CREATEROLE" : "NOCREATEROLE", role.4 ? "CREATEDB" : "NOCREATEDB",
                           role.5 ? "LOGIN" : "NOLOGIN", role.6 ? "REPLICATION" : "NOREPLICATION",
                           role.7 ? "BYPASSRLS" : "NOBYPASSRLS"].joined(separator: " ")
            sql += "CREATE ROLE \(name);\nALTER ROLE \(name) WITH \(options);\n"
        }
        let memberships = try await session.rows(
            """
            SELECT r.rolname::text, m.rolname::text FROM pg_auth_members a
            JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
            WHERE r.rolname !~ '^pg_' ORDER BY 1, 2
            """, as: (String, String).self, purpose: "listing role memberships")
        for (role, member) in memberships {
            sql += "GRANT \(quoteIdentifier(role)) TO \(quoteIdentifier(member));\n"
        }
        do {
            try sql.write(toFile: path, atomically: false, encoding: .utf8)
        } catch {
            throw FileSystem.ioError("write \(path)", underlying: error)
        }
        return "catalog query"
    }
}

import Foundation

/// TimescaleDB's version rules for a restore, and the update that may follow it.
///
/// A TimescaleDB dump restores only into the version that wrote it; afterwards
/// `ALTER EXTENSION timescaledb UPDATE [TO 'v']` walks the update scripts the server ships
/// (`timescaledb--A--B.sql`), which `pg_extension_update_paths('timescaledb')` lists.
public enum ExtensionUpdate {
    /// One row of `pg_extension_update_paths('timescaledb')`: `path` is nil when no chain of
    /// update scripts leads from `source` to `target`.
    public struct PathRow: Sendable, Equatable {
        public var source: String
        public var target: String
        public var path: String?

        public init(source: String, target: String, path: String?) {
            self.source = source
            self.target = target
            self.path = path
        }

        /// The versions the update passes through, source first: "2.18.2--2.19.0--2.19.3" gives
        /// ["2.18.2", "2.19.0", "2.19.3"]. Version strings never contain "--" (PostgreSQL forbids it).
        public var steps: [String] {
            guard let path, !path.isEmpty else { return [] }
            return path.components(separatedBy: "--")
        }
    }

    /// What `--update-extension` asked for.
    public enum Requested: Sendable, Equatable {
        /// The target server's default version (`pg_available_extensions.default_version`).
        case defaultVersion
        case version(String)
    }

    /// What the restore will do after the first verification.
    public enum Decision: Sendable, Equatable {
        /// No update asked for.
        case none
        /// Asked for, but the backup's version already is the target version.
        case noOp(version: String)
        /// `ALTER EXTENSION timescaledb UPDATE TO 'to'` along `path` (nil only for a test-forced update).
        case update(from: String, to: String, path: String?)
        /// Asked for but impossible; `reason` says why and what to do.
        case refused(reason: String)
    }

    /// Decides the update from the backup's version, what the target offers and the update paths.
    /// `forced` (tests only) skips the no-op and path checks so the real statement always runs.
    public static func decide(backupVersion: String, requested: Requested?, installable: [String], defaultVersion: String?,
                              paths: [PathRow], forced: Bool = false) -> Decision {
        guard let requested else { return .none }
        let target: String
        switch requested {
        case .version(let version): target = version
        case .defaultVersion:
            guard let defaultVersion else {
                return .refused(reason: "the target server names no default TimescaleDB version, so there is nothing to update to; name one with --update-extension=VERSION")
            }
            target = defaultVersion
        }
        if forced { return .update(from: backupVersion, to: target, path: path(from: backupVersion, to: target, in: paths)?.path) }
        if target == backupVersion { return .noOp(version: target) }
        if VersionNumber.isOrderedBefore(target, backupVersion) {
            return .refused(reason: "TimescaleDB \(target) is older than the backup's \(backupVersion); --update-extension only moves forward. Restore without it, or name a newer version")
        }
        guard installable.contains(target) else {
            let offer = installable.isEmpty ? "none" : installable.joined(separator: ", ")
            return .refused(reason: "TimescaleDB \(target) is not installable on the target server (installable: \(offer)); name one of those, or install \(target) there first")
        }
        guard let row = path(from: backupVersion, to: target, in: paths) else {
            return .refused(reason: "the target server ships no update path from TimescaleDB \(backupVersion) to \(target) (pg_extension_update_paths('timescaledb') lists none); install the TimescaleDB package that provides the timescaledb--\(backupVersion)--\(target).sql update script, or restore without --update-extension")
        }
        return .update(from: backupVersion, to: target, path: row.path)
    }

    /// The row leading from `source` to `target`, if a path exists.
    public static func path(from source: String, to target: String, in rows: [PathRow]) -> PathRow? {
        rows.first { $0.source == source && $0.target == target && !$0.steps.isEmpty }
    }

    /// The installable versions nearest to `wanted`: the newest one below it and the oldest one
    /// above it, whichever exist.
    public static func closest(to wanted: String, among installable: [String]) -> [String] {
        let sorted = installable.sorted(by: VersionNumber.isOrderedBefore)
        let below = sorted.last { VersionNumber.isOrderedBefore($0, wanted) }
        let above = sorted.first { VersionNumber.isOrderedBefore(wanted, $0) }
        return [below, above].compactMap { $0 }
    }

    /// A version string as `ALTER EXTENSION ... UPDATE TO` may name it: PostgreSQL takes any
    /// string, tsbackup only plain ones (it is quoted as a literal in SQL it cannot bind).
    public static func isPlausibleVersion(_ text: String) -> Bool {
        let alphanumeric = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let allowed = alphanumeric.union(CharacterSet(charactersIn: ".-_+"))
        guard let first = text.unicodeScalars.first, alphanumeric.contains(first), text.count <= 64, !text.contains("--") else { return false }
        return text.unicodeScalars.allSatisfy { allowed.contains($0) }
    }

    /// The SQL sent as ONE simple-protocol query (psql -c), so PostgreSQL runs it as one
    /// transaction: the update, then a check that the extension and its catalog now stand at
    /// `target`. A failing update or check rolls everything back to the restored version. The
    /// update is the session's first statement; anything before it would load the old library.
    static func updateSQL(to target: String) -> String {
        precondition(isPlausibleVersion(target))
        return """
            ALTER EXTENSION timescaledb UPDATE TO '\(target)';
            DO $tsbackup$
            DECLARE
              installed text;
              catalog text;
            BEGIN
              SELECT extversion INTO installed FROM pg_extension WHERE extname = 'timescaledb';
              SELECT value INTO catalog FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version';
              IF installed IS DISTINCT FROM '\(target)' OR catalog IS DISTINCT FROM '\(target)' THEN
                RAISE EXCEPTION 'after the update the extension is at %, its catalog at %, not at \(target)', installed, catalog;
              END IF;
            END
            $tsbackup$;
            """
    }

    /// TimescaleDB's (PostgreSQL's) own words from psql's stderr: the ERROR line and any
    /// DETAIL/HINT after it, without psql's "psql:<where>:" prefix (``PsqlStderr``).
    public static func serverMessage(fromPsqlError stderr: String) -> String {
        PsqlStderr.serverMessage(stderr)
    }
}

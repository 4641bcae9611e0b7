import Foundation

/// Finds pg_dump, pg_restore, pg_dumpall and psql of a suitable major version: on PATH and in
/// Debian's per-major directories `/usr/lib/postgresql/<major>/bin`.
public enum PostgresTools {
    /// The newest `name` whose major version is at least `minimumMajor` (pg_dump and pg_restore
    /// can read older servers and archives, not newer ones).
    public static func locate(_ name: String, minimumMajor: Int, environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> PostgresTool {
        var candidates: [String] = []
        for directory in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            candidates.append("\(directory)/\(name)")
        }
        let debianRoot = "/usr/lib/postgresql"
        let majors = ((try? FileManager.default.contentsOfDirectory(atPath: debianRoot)) ?? []).compactMap(Int.init).sorted(by: >)
        candidates += majors.map { "\(debianRoot)/\($0)/bin/\(name)" }

        var found: [PostgresTool] = []
        var seen = Set<String>()
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
            guard let resolved = realPath(candidate) else { continue }
            guard seen.insert(resolved).inserted else { continue }
            // Debian's /usr/bin/pg_dump is a wrapper that picks a version by itself; use the real
            // per-major binaries so the version we check is the version that runs.
            if resolved.hasSuffix("pg_wrapper") { continue }
            guard let result = try? await ProcessRunner.run(resolved, ["--version"]), result.succeeded,
                  let major = majorVersion(fromVersionOutput: result.standardOutput) else { continue }
            found.append(PostgresTool(path: resolved, version: result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), majorVersion: major))
        }
        // The newest major wins; among equals the first found, so PATH order overrides Debian's layout.
        if let newest = found.filter({ $0.majorVersion >= minimumMajor }).map(\.majorVersion).max(),
           let best = found.first(where: { $0.majorVersion == newest }) {
            return best
        }
        let have = found.isEmpty ? "none was found" : "only " + found.map { "\($0.path) (\($0.majorVersion))" }.joined(separator: ", ") + " was found"
        throw TSBackupError(.precondition, "tsbackup needs \(name) from PostgreSQL \(minimumMajor) or newer (the server's major version), but \(have). Install postgresql-client-\(minimumMajor) (e.g. apt-get install postgresql-client-\(minimumMajor)) or put a newer \(name) on PATH.")
    }

    /// The canonical path (every symlink, relative ones included, resolved), so that
    /// /bin/pg_dump, /usr/bin/pg_dump and Debian's pg_wrapper behind them are recognised.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// "pg_dump (PostgreSQL) 15.20 (Debian ...)" -> 15; "... 9.6.24" -> 9.
    static func majorVersion(fromVersionOutput output: String) -> Int? {
        guard let range = output.range(of: #"\(PostgreSQL\) (\d+)"#, options: .regularExpression) else { return nil }
        return Int(output[range].split(separator: " ").last ?? "")
    }
}

import Foundation
import Synchronization

/// Finds pg_dump, pg_restore, pg_dumpall and psql of a suitable major version: on PATH and in
/// Debian's per-major directories `/usr/lib/postgresql/<major>/bin`.
public enum PostgresTools {
    /// The newest `name` whose major version is at least `minimumMajor` (pg_dump and pg_restore
    /// can read older servers and archives, not newer ones).
    public static func locate(_ name: String, minimumMajor: Int, environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> PostgresTool {
        let found = await discover(name, environment: environment)
        // The newest major wins; among equals the first found, so PATH order overrides Debian's layout.
        if let newest = found.filter({ $0.majorVersion >= minimumMajor }).map(\.majorVersion).max(),
           let best = found.first(where: { $0.majorVersion == newest }) {
            return best
        }
        let have = found.isEmpty ? "none was found" : "only " + found.map { "\($0.path) (\($0.majorVersion))" }.joined(separator: ", ") + " was found"
        throw TSBackupError(.precondition, "tsbackup needs \(name) from PostgreSQL \(minimumMajor) or newer (the server's major version), but \(have). Install postgresql-client-\(minimumMajor) (e.g. apt-get install postgresql-client-\(minimumMajor)) or put a newer \(name) on PATH.")
    }

    /// Starts the `--version` runs of every candidate of `names` in the background and returns at
    /// once, so that a later ``locate(_:minimumMajor:environment:)`` (which needs the server's
    /// major version, known only after connecting) finds them done or under way.
    public static func prefetch(_ names: [String], environment: [String: String] = ProcessInfo.processInfo.environment) {
        let file = VersionCacheFile(environment: environment)
        for name in names {
            for candidate in candidates(name, environment: environment) {
                _ = VersionCache.shared.lookup(candidate, file: file)
            }
        }
    }

    /// Every `name` that answers `--version`, in search order (PATH first, then Debian's
    /// directories, newest major first), each real binary once.
    static func discover(_ name: String, environment: [String: String]) async -> [PostgresTool] {
        // Every candidate's lookup starts before the first is awaited: they run side by side.
        let file = VersionCacheFile(environment: environment)
        let lookups = candidates(name, environment: environment).map { VersionCache.shared.lookup($0, file: file) }
        var found: [PostgresTool] = []
        for lookup in lookups {
            if let tool = await lookup.value { found.append(tool) }
        }
        return found
    }

    /// The executable files that may be `name`, canonical and each once, wrappers left out.
    /// Only directory listings and `stat`s: cheap enough to redo on every lookup, so a tool
    /// installed or removed while a long-running process (`tsbackup serve`) lives is seen.
    static func candidates(_ name: String, environment: [String: String]) -> [Candidate] {
        var paths: [String] = []
        for directory in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            paths.append("\(directory)/\(name)")
        }
        let debianRoot = "/usr/lib/postgresql"
        let majors = ((try? FileManager.default.contentsOfDirectory(atPath: debianRoot)) ?? []).compactMap(Int.init).sorted(by: >)
        paths += majors.map { "\(debianRoot)/\($0)/bin/\(name)" }

        var result: [Candidate] = []
        var seen = Set<String>()
        for path in paths where FileManager.default.isExecutableFile(atPath: path) {
            guard let resolved = realPath(path) else { continue }
            guard seen.insert(resolved).inserted else { continue }
            // Debian's /usr/bin/pg_dump is a wrapper that picks a version by itself; use the real
            // per-major binaries so the version we check is the version that runs.
            if resolved.hasSuffix("pg_wrapper") { continue }
            guard let identity = Candidate.Identity(path: resolved) else { continue }
            result.append(Candidate(path: resolved, identity: identity))
        }
        return result
    }

    /// A canonical path to an executable, and what tells a replaced file from the one seen before.
    struct Candidate: Sendable, Hashable {
        struct Identity: Sendable, Hashable {
            var device: UInt64
            var inode: UInt64
            var size: Int64
            var modifiedSeconds: Int
            var modifiedNanoseconds: Int

            init?(path: String) {
                var info = stat()
                guard stat(path, &info) == 0 else { return nil }
                device = UInt64(info.st_dev)
                inode = UInt64(info.st_ino)
                size = Int64(info.st_size)
                modifiedSeconds = Int(info.st_mtim.tv_sec)
                modifiedNanoseconds = Int(info.st_mtim.tv_nsec)
            }
        }

        var path: String
        var identity: Identity
    }

    /// Each binary's `--version`, run once per process and file: a backup needs three tools and
    /// `tsbackup serve` runs backup after backup, and every run is a child process (tens of
    /// milliseconds each on a loaded machine). A file replaced in place (a package upgrade) has a
    /// new inode, size or modification time and is asked again. A failed run is not kept.
    /// Across processes the answers are kept in a file (``VersionCacheFile``) under the same key.
    final class VersionCache: Sendable {
        static let shared = VersionCache()

        private let lookups = Mutex<[String: (identity: Candidate.Identity, task: Task<PostgresTool?, Never>)]>([:])
        private let fileWrites = Mutex(())

        /// The lookup of `candidate`: the one already started for the same file, or a new one,
        /// which takes the answer `file` kept for exactly this file or else runs `--version` (and
        /// keeps a successful answer in `file`).
        func lookup(_ candidate: Candidate, file: VersionCacheFile? = nil) -> Task<PostgresTool?, Never> {
            lookups.withLock { lookups in
                if let known = lookups[candidate.path], known.identity == candidate.identity { return known.task }
                let task = Task<PostgresTool?, Never> {
                    if let kept = file?.answer(for: candidate) { return kept }
                    let tool = await Self.run(candidate.path)
                    if let tool {
                        // Kept only if the file is still the one asked (not replaced meanwhile);
                        // one writer at a time in this process, each merging the file it reads.
                        if let file, Candidate.Identity(path: candidate.path) == candidate.identity {
                            self.fileWrites.withLock { _ in file.store(tool, for: candidate) }
                        }
                    } else {
                        self.forget(candidate)
                    }
                    return tool
                }
                lookups[candidate.path] = (candidate.identity, task)
                return task
            }
        }

        private func forget(_ candidate: Candidate) {
            lookups.withLock { lookups in
                if lookups[candidate.path]?.identity == candidate.identity { lookups[candidate.path] = nil }
            }
        }

        /// Forgets every lookup (tests).
        func reset() {
            lookups.withLock { $0.removeAll() }
        }

        static func run(_ path: String) async -> PostgresTool? {
            // Without ChildLaunch's setpriv wrapper (one exec less on the way to every backup's
            // first step): a `--version` child prints a line and exits; it cannot go on as an
            // orphan that writes or holds anything.
            guard let result = try? await ProcessRunner.run(path, ["--version"], outlivesParent: true), result.succeeded,
                  let major = majorVersion(fromVersionOutput: result.standardOutput) else { return nil }
            return PostgresTool(path: path, version: result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines), majorVersion: major)
        }
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

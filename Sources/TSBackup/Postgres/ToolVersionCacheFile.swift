import Foundation

extension PostgresTools {
    /// The tools' `--version` answers kept across processes, in one small file.
    ///
    /// Every backup needs the versions of pg_dump, pg_restore and pg_dumpall, and asking is a
    /// child process each (libpq, OpenSSL and Kerberos loaded only to print one line): about
    /// 0.07 s on the critical path of a small backup. The answers are kept under the same key as
    /// the in-process ``VersionCache`` (canonical path, device, inode, size and modification
    /// time), so a binary replaced in place (a package upgrade) no longer matches and is asked
    /// again. Only successful answers are written. Anything unexpected about the file (missing,
    /// unreadable, not ours, writable by others, not this format) makes it count as empty: the
    /// cache can only spare a `--version` run, never decide a version by itself.
    ///
    /// Where: `$XDG_CACHE_HOME/tsbackup/tool-versions.json`, else
    /// `$HOME/.cache/tsbackup/tool-versions.json` (the XDG base directory layout: a per-user place
    /// for data that may be deleted at any time). Without either variable (a service started
    /// with an empty environment) there is no file and every process asks, as before; a
    /// long-running `tsbackup serve` still keeps the answers in memory.
    struct VersionCacheFile: Sendable {
        /// The file's path.
        var path: String

        /// The layout of the file; a different value is ignored (and rewritten on the next answer).
        static let formatVersion = 1
        /// Entries kept at most: tests create fake tools in fresh directories, and a machine's
        /// real tools are a handful.
        static let maximumEntries = 64

        struct Entry: Codable, Sendable, Equatable {
            var path: String
            var device: UInt64
            var inode: UInt64
            var size: Int64
            var modifiedSeconds: Int
            var modifiedNanoseconds: Int
            var version: String
            var majorVersion: Int

            enum CodingKeys: String, CodingKey {
                case path, device, inode, size, version
                case modifiedSeconds = "mtime_sec"
                case modifiedNanoseconds = "mtime_nsec"
                case majorVersion = "major_version"
            }

            init(_ candidate: Candidate, tool: PostgresTool) {
                path = candidate.path
                device = candidate.identity.device
                inode = candidate.identity.inode
                size = candidate.identity.size
                modifiedSeconds = candidate.identity.modifiedSeconds
                modifiedNanoseconds = candidate.identity.modifiedNanoseconds
                version = tool.version
                majorVersion = tool.majorVersion
            }

            func matches(_ candidate: Candidate) -> Bool {
                path == candidate.path && device == candidate.identity.device && inode == candidate.identity.inode
                    && size == candidate.identity.size && modifiedSeconds == candidate.identity.modifiedSeconds
                    && modifiedNanoseconds == candidate.identity.modifiedNanoseconds
            }
        }

        struct Contents: Codable {
            var format: Int
            var tools: [Entry]
        }

        /// The cache file for `environment`, or nil when it names no cache directory.
        init?(environment: [String: String]) {
            let base: String
            if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
                // The XDG spec: a relative value is invalid and ignored.
                base = xdg
            } else if let home = environment["HOME"], home.hasPrefix("/") {
                base = home + "/.cache"
            } else {
                return nil
            }
            path = base + "/tsbackup/tool-versions.json"
        }

        init(path: String) {
            self.path = path
        }

        /// The kept answer for `candidate`, if the file holds one for exactly this file.
        func answer(for candidate: Candidate) -> PostgresTool? {
            guard let entry = read().first(where: { $0.matches(candidate) }) else { return nil }
            return PostgresTool(path: entry.path, version: entry.version, majorVersion: entry.majorVersion)
        }

        /// Every entry of the file; none when it is missing, not ours, writable by others or not
        /// in this format.
        func read() -> [Entry] {
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { return [] }
            defer { close(fd) }
            var info = stat()
            // Written by this user only: another user's file could name any version.
            guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == geteuid(),
                  info.st_mode & (S_IWGRP | S_IWOTH) == 0, info.st_size <= 1 << 20 else { return [] }
            var data = Data()
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { try? FileSystem.readSome(fd, into: $0, path: path) }
                guard let n else { return [] }
                if n == 0 { break }
                data.append(contentsOf: buffer[0..<n])
            }
            guard let contents = try? JSONDecoder().decode(Contents.self, from: data),
                  contents.format == Self.formatVersion else { return [] }
            return contents.tools
        }

        /// Adds `tool`'s answer for `candidate`, replacing any entry for the same path and
        /// dropping entries whose file is gone or changed. Written to a new file (mode 0600) that
        /// is renamed over the old one, so a reader sees the old file or the new, never a torn one
        /// (no fsync: a file lost to a crash only costs one `--version` run). Errors are ignored.
        func store(_ tool: PostgresTool, for candidate: Candidate) {
            var entries = read().filter { entry in
                guard entry.path != candidate.path, let identity = Candidate.Identity(path: entry.path) else { return false }
                return entry.matches(Candidate(path: entry.path, identity: identity))
            }
            entries.append(Entry(candidate, tool: tool))
            if entries.count > Self.maximumEntries { entries.removeFirst(entries.count - Self.maximumEntries) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            guard let data = try? encoder.encode(Contents(format: Self.formatVersion, tools: entries)) else { return }

            let directory = (path as NSString).deletingLastPathComponent
            if !FileManager.default.fileExists(atPath: directory) {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                         attributes: [.posixPermissions: 0o700])
            }
            let temporary = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { return }
            let written = data.withUnsafeBytes { (try? FileSystem.writeAll(fd, $0, path: temporary)) != nil }
            guard close(fd) == 0, written, Foundation.rename(temporary, path) == 0 else {
                unlink(temporary)
                return
            }
        }
    }
}

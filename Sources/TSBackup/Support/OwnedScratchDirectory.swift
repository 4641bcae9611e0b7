import Foundation

/// A scratch directory in `$TMPDIR` whose owner can be proven dead, so that the next run can
/// remove it when the run that made it was killed outright (SIGKILL skips every `defer`).
///
/// Beside the directory `<prefix><UUID>` lies the lock file `<prefix><UUID>.lock`, which the
/// owner holds with `flock(LOCK_EX)` from before the directory exists until after it is removed.
/// The kernel releases the lock when the owner dies, however it dies. So a sweep that takes the
/// lock without waiting (`LOCK_NB`) while the directory exists has proven that its owner is gone,
/// and removes the directory, then the lock file, still holding the lock. A directory without a
/// lock file (made by an older tsbackup) has no owner to prove gone: a sweep given `legacyAfter`
/// removes it only when it is certainly such a leftover (``isLegacyLeftover(name:path:prefix:olderThan:)``),
/// otherwise it is left alone.
struct OwnedScratchDirectory: Sendable {
    /// The directory's path.
    let path: String
    /// The lock file's descriptor, held for the directory's lifetime.
    let lockDescriptor: Int32

    var lockPath: String { path + ".lock" }

    /// Creates `<parent>/<prefix><UUID>` (mode 0700) and takes its lock first.
    init(prefix: String, parent: String = FileManager.default.temporaryDirectory.path) throws {
        let path = parent + "/" + prefix + UUID().uuidString
        let lockPath = path + ".lock"
        var descriptor: Int32 = -1
        // A sweep may remove a lock file it found without a directory between our open and our
        // flock; then the lock we hold is on an unlinked file, so check and start again.
        for _ in 0..<100 {
            descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw TSBackupError(.failed, "Creating the lock file \(lockPath) failed: \(String(cString: strerror(errno))). Check that $TMPDIR (\(parent)) is writable.")
            }
            if flock(descriptor, LOCK_EX) == 0, Self.isSameFile(descriptor, lockPath) { break }
            close(descriptor)
            descriptor = -1
        }
        guard descriptor >= 0 else { throw TSBackupError(.failed, "Could not take the lock file \(lockPath); try again.") }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        } catch {
            unlink(lockPath)
            close(descriptor)
            throw TSBackupError(.failed, "Creating the scratch directory \(path) failed: \(error.localizedDescription). Check that $TMPDIR (\(parent)) is writable.")
        }
        self.path = path
        self.lockDescriptor = descriptor
    }

    /// Removes the directory, then the lock file, then lets the lock go.
    func remove() {
        try? FileManager.default.removeItem(atPath: path)
        unlink(lockPath)
        close(lockDescriptor)
    }

    /// Whether the lock-less `path` (`name` in its parent) is certainly a scratch directory an
    /// older tsbackup made before the lock files, and one no run still uses: named exactly
    /// `<prefix><UUID>` as this type names them (so no other program's directory and no other
    /// kind of ours, such as `<prefix>data-<UUID>`), a directory itself (not a symbolic link),
    /// owned by this user, and with nothing in it (the directory and every entry under it)
    /// modified after `cutoff`. No lock proves its owner gone, so the age stands in for that
    /// proof: a run writes its scratch files as it starts (a restore its pg_restore lists), and
    /// the cutoff lies further back than any run lasts.
    static func isLegacyLeftover(name: String, path: String, prefix: String, olderThan cutoff: Date) -> Bool {
        let suffix = name.dropFirst(prefix.count)
        guard name.hasPrefix(prefix), suffix.count == 36, UUID(uuidString: String(suffix)) != nil else { return false }
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid() else { return false }
        func modified(_ info: stat) -> Date {
            Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec) + TimeInterval(info.st_mtim.tv_nsec) / 1e9)
        }
        guard modified(info) < cutoff else { return false }
        guard let entries = FileManager.default.enumerator(atPath: path) else { return false }
        while let relative = entries.nextObject() as? String {
            var entry = stat()
            guard lstat(path + "/" + relative, &entry) == 0, modified(entry) < cutoff else { return false }
        }
        return true
    }

    static func isSameFile(_ descriptor: Int32, _ path: String) -> Bool {
        var held = stat(), named = stat()
        guard fstat(descriptor, &held) == 0, stat(path, &named) == 0 else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// Removes the scratch directories (and stray lock files) with `prefix` in `parent` whose
    /// owner is provably gone; returns one message per directory removed. With `legacyAfter`,
    /// also the lock-less directories an older tsbackup left (``isLegacyLeftover(name:path:prefix:olderThan:)``).
    static func sweep(prefix: String, parent: String = FileManager.default.temporaryDirectory.path, what: String,
                      legacyAfter: TimeInterval? = nil, now: Date = Date()) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        var messages: [String] = []
        for name in names where name.hasPrefix(prefix) && !name.hasSuffix(".lock") {
            let path = parent + "/" + name
            let descriptor = open(path + ".lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else {
                // No lock file: not ours to judge, unless it is certainly an older tsbackup's leftover.
                guard errno == ENOENT, let legacyAfter,
                      isLegacyLeftover(name: name, path: path, prefix: prefix, olderThan: now.addingTimeInterval(-legacyAfter)) else { continue }
                let hours = Int(legacyAfter / 3600)
                do {
                    try FileManager.default.removeItem(atPath: path)
                    messages.append("Removed the scratch directory \(path) of an interrupted \(what), left by an older tsbackup (it has no lock file and nothing in it changed for more than \(hours) hours).")
                } catch {
                    messages.append("The scratch directory \(path) of an interrupted \(what), left by an older tsbackup, could not be removed (\(error.localizedDescription)); remove it: rm -rf '\(path)'.")
                }
                continue
            }
            defer { close(descriptor) }
            // Locked: the owner lives. The lock file replaced meanwhile: look again next time.
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0, isSameFile(descriptor, path + ".lock") else { continue }
            do {
                try FileManager.default.removeItem(atPath: path)
                unlink(path + ".lock")
                messages.append("Removed the scratch directory \(path) of an interrupted \(what) (the process that made it no longer runs).")
            } catch {
                messages.append("The scratch directory \(path) of an interrupted \(what) could not be removed (\(error.localizedDescription)); remove it: rm -rf '\(path)' '\(path).lock'.")
            }
        }
        // Lock files without a directory: an owner killed between taking the lock and creating
        // the directory, or between removing the directory and the lock file.
        for name in names where name.hasPrefix(prefix) && name.hasSuffix(".lock") {
            let lockPath = parent + "/" + name
            guard !FileManager.default.fileExists(atPath: String(lockPath.dropLast(".lock".count))) else { continue }
            let descriptor = open(lockPath, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { continue }
            defer { close(descriptor) }
            if flock(descriptor, LOCK_EX | LOCK_NB) == 0, isSameFile(descriptor, lockPath),
               !FileManager.default.fileExists(atPath: String(lockPath.dropLast(".lock".count))) {
                unlink(lockPath)
            }
        }
        return messages
    }
}

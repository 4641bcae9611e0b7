import Foundation

/// A scratch directory in `$TMPDIR` whose owner can be proven dead, so that the next run can
/// remove it when the run that made it was killed outright (SIGKILL skips every `defer`).
///
/// Beside the directory `<prefix><UUID>` lies the lock file `<prefix><UUID>.lock`, which the
/// owner holds with `flock(LOCK_EX)` from before the directory exists until after it is removed.
/// The kernel releases the lock when the owner dies, however it dies. So a sweep that takes the
/// lock without waiting (`LOCK_NB`) while the directory exists has proven that its owner is gone,
/// and removes the directory, then the lock file, still holding the lock. A directory without a
/// lock file (made by an older tsbackup) is left alone: nothing proves its owner gone.
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

    static func isSameFile(_ descriptor: Int32, _ path: String) -> Bool {
        var held = stat(), named = stat()
        guard fstat(descriptor, &held) == 0, stat(path, &named) == 0 else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// Removes the scratch directories (and stray lock files) with `prefix` in `parent` whose
    /// owner is provably gone; returns one message per directory removed.
    static func sweep(prefix: String, parent: String = FileManager.default.temporaryDirectory.path, what: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        var messages: [String] = []
        for name in names where name.hasPrefix(prefix) && !name.hasSuffix(".lock") {
            let path = parent + "/" + name
            let descriptor = open(path + ".lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { continue }  // no lock file: not ours to judge
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

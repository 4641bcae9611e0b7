import Foundation
import Synchronization

/// Keeps two processes from writing one repository at once.
///
/// An advisory `flock` on `REPO/lock`: the kernel releases it when the holder dies, however it
/// dies, so a lock can never outlive its process. The file names its holder (pid, host, time,
/// command); a file that still names a holder while nobody holds the lock was left by a process
/// that died, which ``acquire(_:command:)`` reports as `staleHolder`.
public final class RepositoryLock: RepositoryLease {
    /// The open lock file; nil once released, so a second release does nothing.
    private let descriptor: Mutex<Int32?>
    public let path: String
    /// What the lock file said when we took it over from a process that died, if anything.
    public let staleHolder: String?

    private init(descriptor: Int32, path: String, staleHolder: String?) {
        self.descriptor = Mutex(descriptor)
        self.path = path
        self.staleHolder = staleHolder
    }

    public static func acquire(_ repository: LocalRepository, command: String) throws -> RepositoryLock {
        let path = repository.root + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw TSBackupError(.failed, "Could not open the repository lock \(path): \(String(cString: strerror(errno))). Check the repository's permissions.")
        }
        let previous = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            let holder = previous.isEmpty ? "another tsbackup process" : previous
            throw TSBackupError(.precondition, "The repository \(repository.root) is in use by \(holder). Wait for that run to finish, then try again; two runs never write one repository at once.")
        }
        let holder = "pid \(getpid()) on \(ProcessInfo.processInfo.hostName) since \(ISO8601DateFormatter().string(from: Date())) (\(command))"
        ftruncate(fd, 0)
        _ = holder.withCString { pwrite(fd, $0, strlen($0), 0) }
        fsync(fd)
        return RepositoryLock(descriptor: fd, path: path, staleHolder: previous.isEmpty ? nil : previous)
    }

    /// Clears the holder's name and releases the lock.
    public func release() {
        descriptor.withLock { held in
            guard let fd = held else { return }
            held = nil
            ftruncate(fd, 0)
            flock(fd, LOCK_UN)
            close(fd)
        }
    }
}

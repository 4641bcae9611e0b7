#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The WAL archive's files in a local repository directory: create-only writes that reach the
/// disk before they count, and the errors that name what to do. Shared by both ways an archive
/// object is written locally (``LocalWALArchive`` and the library's `LocalRepository`).
package enum LocalArchiveFile {
    /// Writes a file at `path` unless one exists there: a temporary file beside it (mode 0600),
    /// filled by `body`, fsynced, then hard-linked to `path`. `link` fails with EEXIST when the
    /// name exists, so the write only ever creates, and a reader sees the whole object or none.
    /// The directory is fsynced so the name survives a crash. `root` is named in messages.
    package static func createOnly(at path: String, root: String, _ body: (_ put: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> ArchivePutOutcome {
        try createOnlyWriting(at: path, root: root) { file in try body(file.put) }
    }

    /// The temporary file a ``createOnlyWriting(at:root:_:)`` body fills.
    package struct Writer {
        let fd: Int32
        let path: String

        /// Appends `bytes`.
        package func put(_ bytes: UnsafeRawBufferPointer) throws {
            try SystemIO.writeAll(fd, bytes) { ioError("write \(path)", code: $0) }
        }

        /// Writes `bytes` again at `offset` (a header known only once the rest is written).
        package func rewrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
            try SystemIO.writeAll(fd, bytes, at: Int64(offset)) { ioError("write \(path)", code: $0) }
        }
    }

    /// ``createOnly(at:root:_:)`` whose body may also rewrite what it wrote (``Writer``).
    package static func createOnlyWriting(at path: String, root: String, _ body: (Writer) throws -> Void) throws -> ArchivePutOutcome {
        let directory = parent(of: path)
        if access(path, F_OK) == 0 { return .exists }
        if access(directory, F_OK) != 0 { try makeDirectories(directory) }
        let temporary = directory + "/.\(path.dropFirst(directory.count + 1)).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            throw TSBackupError(code == EACCES ? .permission : .failed, "Could not write \(temporary): \(String(cString: strerror(code))). The archiving process must be able to write the repository \(root); check its owner, permissions and free space.")
        }
        defer { unlink(temporary) }
        do {
            defer { close(fd) }
            try body(Writer(fd: fd, path: temporary))
            guard fsync(fd) == 0 else { throw ioError("fsync \(temporary)") }
        }
        if link(temporary, path) != 0 {
            if errno == EEXIST { return .exists }
            throw ioError("link \(temporary) to \(path)")
        }
        try sync(directory)
        return .created
    }

    /// Creates `directory` and its missing parents (mode 0777 less the umask).
    package static func makeDirectories(_ directory: String) throws {
        var missing: [String] = []
        var current = directory
        while !current.isEmpty, current != "/", access(current, F_OK) != 0 {
            missing.append(current)
            current = parent(of: current)
        }
        for path in missing.reversed() where mkdir(path, 0o777) != 0 && errno != EEXIST {
            let reason = String(cString: strerror(errno))
            throw TSBackupError(.permission, "Could not create \(directory) in the repository: \(reason). The archiving process (PostgreSQL's OS user, usually postgres) must be able to write the repository; check its owner and permissions.")
        }
    }

    /// Flushes a file or directory to stable storage.
    package static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("open \(path) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("fsync \(path)") }
    }

    /// `path` without its last component ("/" for a file at the root).
    package static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The last component of `path`.
    package static func lastComponent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// An error for a failed system call (`code`: its errno), as the library's `FileSystem.ioError` words it.
    package static func ioError(_ what: String, code: Int32 = errno) -> TSBackupError {
        if code == ENOSPC {
            return TSBackupError(.failed, "Could not \(what): the disk is full. Free space on that filesystem or use a repository elsewhere, then run the command again.")
        }
        return TSBackupError(.failed, "Could not \(what): \(String(cString: strerror(code))). Check the path, its permissions and free space.")
    }
}

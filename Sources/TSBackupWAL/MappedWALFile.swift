#if canImport(Glibc)
import Glibc
#endif

/// The file wal-push archives, mapped read-only: hashed and compressed where it lies in the page
/// cache, with no `read` copy and no copy into zstd's window (``WALObjectFormat/compress(mapped:level:prepare:release:sink:)``).
/// Pages are brought in a step at a time (`MADV_POPULATE_READ`: one call instead of a fault per
/// page) and dropped from the process once passed (`MADV_DONTNEED`; the page cache keeps them),
/// so the process holds about 2 MiB of the file at a time, as the piece-wise read did.
///
/// A mapped file that shrinks while it is read would end the process with SIGBUS. PostgreSQL
/// never changes a file it hands to archive_command, but the archive must not depend on that:
/// a shrink seen while bringing pages in is an error like any other, and one between that and
/// the read is caught by ``MappedReadGuard`` (a message, the temporary object removed, exit 1).
package final class MappedWALFile {
    /// The file's bytes (empty for an empty file, which is not mapped).
    package let bytes: UnsafeRawBufferPointer
    private let source: WALSourceFile

    /// Maps `source` whole; nil when the system refuses (the caller then reads it in pieces).
    package init?(_ source: WALSourceFile) {
        self.source = source
        guard source.size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let size = Int(exactly: source.size),
              let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, source.descriptor, 0), base != MAP_FAILED else { return nil }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Brings `range` in before it is read. EFAULT means part of it is past the file's end now:
    /// the file shrank. A kernel without `MADV_POPULATE_READ` (before 5.14) answers EINVAL; the
    /// pages then fault in as they are read.
    package func prepare(_ range: Range<Int>) throws {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        if madvise(UnsafeMutableRawPointer(mutating: base + range.lowerBound), range.count, Self.populateRead) != 0, errno == EFAULT {
            throw TSBackupError(.failed, MappedReadGuard.shrankMessage(source))
        }
    }

    /// Drops `range` from the process; the page cache keeps the pages.
    package func release(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + range.lowerBound), range.count, MADV_DONTNEED)
    }

    /// MADV_POPULATE_READ (Linux 5.14; `<bits/mman-linux.h>`).
    static let populateRead: Int32 = 22
}

/// Turns SIGBUS while a mapped file is read (it shrank between ``MappedWALFile/prepare(_:)`` and
/// the read) into wal-push's error: one paragraph on stderr, the temporary object removed, exit 1
/// (PostgreSQL retries), instead of a crash PostgreSQL reports as a signal. A signal handler is
/// the whole process's, and its state here is plain globals a handler may read: for a process
/// that pushes one file (the command line), never for threads that push at once (tests call
/// ``LocalWALArchive/push(path:root:dataDirectory:level:guardsSIGBUS:)`` without it).
package enum MappedReadGuard {
    nonisolated(unsafe) private static var message: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var temporary: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var exitCode: Int32 = 1

    /// From here until ``disarm()``, SIGBUS means `source` shrank.
    package static func arm(_ source: WALSourceFile) {
        message = strdup("tsbackup: error: " + shrankMessage(source) + "\n")
        exitCode = TSBackupError.Kind.failed.exitCode
        signal(SIGBUS) { _ in MappedReadGuard.fault() }
    }

    /// The temporary file to remove should it happen (nil: none yet, or no longer).
    package static func removeOnFault(_ path: String?) {
        let previous = temporary
        temporary = path.map { strdup($0) }
        free(previous)
    }

    package static func disarm() {
        signal(SIGBUS, SIG_DFL)
        removeOnFault(nil)
        free(message)
        message = nil
    }

    /// Async-signal-safe: unlink, write, _exit.
    private static func fault() {
        if let temporary { unlink(temporary) }
        if let message { _ = write(2, message, strlen(message)) }
        _exit(exitCode)
    }

    static func shrankMessage(_ source: WALSourceFile) -> String {
        "\(source.file) shrank while it was read (\(source.size) bytes when it was opened); it was not archived. PostgreSQL never changes a file it hands to archive_command: check what else writes \(source.path). PostgreSQL will retry."
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The file PostgreSQL hands to archive_command, open for reading: its name checked, its size
/// taken once, and its cluster told from its own first page (or pg_control). Both wal-push paths,
/// the slim local one (`LocalWALArchive.push`) and the library's (`WALPush.run`), read the file
/// through this one type, so they refuse and identify files by the same rules and words.
package struct WALSourceFile {
    package let file: WALFileName
    package let path: String
    package let size: Int64
    package let descriptor: Int32

    /// Which cluster the file belongs to; a segment also gives its size and page magic.
    package struct Identity {
        package let systemIdentifier: UInt64
        package let segmentSize: Int64?
        package let magic: UInt16?
    }

    /// Opens `path` (relative to `dataDirectory`, PostgreSQL's working directory when it runs
    /// archive_command). `baseName` is the path's last component as the caller takes it.
    package static func open(path: String, baseName: String, dataDirectory: String) throws -> WALSourceFile {
        guard let file = WALFileName(baseName) else {
            throw TSBackupError(.usage, "\(baseName) is not the name of a file PostgreSQL archives (a WAL segment such as 000000010000000000000001, a .partial segment, a .history or a .backup file). Use wal-push only in archive_command, as `tsbackup wal-push %p --repo ...`.")
        }
        let fullPath = path.hasPrefix("/") ? path : dataDirectory + "/" + path
        let fd = Glibc.open(fullPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw cannotRead(fullPath, String(cString: strerror(errno))) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw cannotRead(fullPath, reason)
        }
        return WALSourceFile(file: file, path: fullPath, size: Int64(status.st_size), descriptor: fd)
    }

    package func close() { _ = Glibc.close(descriptor) }

    /// The file's size now (-1 when fstat fails).
    package func currentSize() -> Int64 {
        var status = stat()
        return fstat(descriptor, &status) == 0 ? Int64(status.st_size) : -1
    }

    /// An unreadable file: the message says how archive_command hands the path over.
    package func cannotRead(_ reason: String) -> TSBackupError { Self.cannotRead(path, reason) }

    static func cannotRead(_ path: String, _ reason: String) -> TSBackupError {
        TSBackupError(.notFound, "Could not read \(path): \(reason). wal-push runs with the data directory as its working directory and %p relative to it, as archive_command gives it.")
    }

    /// Fills `buffer` from the file's current position (short only at its end); the bytes read.
    package func readPiece(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try SystemIO.readFull(descriptor, into: buffer) { cannotRead(String(cString: strerror($0))) }
    }

    /// Whose WAL this is: a segment names its cluster in its first page (`firstBytes`, the start
    /// of the file); other files do not, and pg_control in `dataDirectory` says.
    package func identity(firstBytes: Data, dataDirectory: String) throws -> Identity {
        if file.kind == .segment || file.kind == .partial, let header = ClusterIdentity.segmentHeader(firstBytes) {
            guard WALFileName.isValidSegmentSize(Int64(header.segmentSize)), size == Int64(header.segmentSize) else {
                throw TSBackupError(.failed, "\(file) has \(size) bytes but its page header declares \(header.segmentSize)-byte segments; it is damaged or not a WAL segment, and was not archived.")
            }
            return Identity(systemIdentifier: header.systemIdentifier, segmentSize: Int64(header.segmentSize), magic: header.magic)
        }
        guard let system = ClusterIdentity.controlFileSystemIdentifier(dataDirectory: dataDirectory) else {
            throw TSBackupError(.precondition, "Could not tell which cluster \(file) belongs to: it carries no WAL page header and \(dataDirectory)/global/pg_control is not readable. Run wal-push from archive_command (PostgreSQL runs it in the data directory), or from the data directory by hand.")
        }
        return Identity(systemIdentifier: system, segmentSize: nil, magic: nil)
    }
}

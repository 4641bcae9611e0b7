import Crypto
import Foundation

/// `tsbackup wal-push PATH`: archives one file PostgreSQL hands to archive_command.
///
/// The hot path, run once per 16 MB segment: read the file in pieces, tell its cluster from the
/// segment's own page header (or pg_control), check the archive marker, hash and compress each
/// piece in-process, and store the object with one create-only write. No lock, no scratch directory, no listing: PostgreSQL runs
/// one archive_command at a time per cluster, and the create-only write makes a concurrent or
/// repeated push of the same name safe (the second finds the first and compares).
public enum WALPush {
    public enum Outcome: Sendable, Equatable {
        /// Stored now: the file's size and the object's (compressed) size before encryption.
        case archived(file: WALFileName, plainBytes: Int64, storedBytes: Int64)
        /// The archive holds this name already with identical content (a repeated push).
        case alreadyArchived(file: WALFileName)
    }

    /// Archives `path` (relative to `dataDirectory`, PostgreSQL's working directory when it runs
    /// archive_command) into `repository`.
    public static func run(path: String, repository: any Repository, dataDirectory: String = FileManager.default.currentDirectoryPath,
                           level: Int32 = WALObjectFormat.defaultLevel) async throws -> Outcome {
        let source = try WALSourceFile.open(path: path, baseName: (path as NSString).lastPathComponent, dataDirectory: dataDirectory)
        defer { source.close() }
        let file = source.file, fileSize = source.size
        // The file is read in pieces into one reused buffer, each piece hashed and compressed
        // as it arrives (see WALObjectFormat.Encoder): a 16 MB segment is never held.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WALObjectFormat.pieceSize, alignment: 16)
        defer { buffer.deallocate() }
        func readPiece() throws -> Int { try source.readPiece(buffer) }
        var piece = try readPiece()
        let identity = try source.identity(firstBytes: Data(bytesNoCopy: buffer.baseAddress!, count: piece, deallocator: .none), dataDirectory: dataDirectory)
        let system = identity.systemIdentifier, segmentSize = identity.segmentSize, magic = identity.magic

        let marker = try await WALArchiveMarker.claim(repository, systemIdentifier: system, segmentSize: segmentSize, magic: magic)
        if let recorded = marker.walSegmentSize, let segmentSize, recorded != segmentSize {
            throw TSBackupError(.precondition, "\(file) is a \(ByteCount.format(segmentSize)) segment, but the archive in \(repository.location) holds \(ByteCount.format(recorded)) segments of the same cluster; it was not archived. Archive to a new repository.")
        }

        let object = ArchiveObject.wal(systemIdentifier: system, file: file)
        let encoded: (header: Data, payload: [Data], digest: [UInt8], plainBytes: Int64)
        do {
            let encoder = try WALObjectFormat.Encoder(level: level, pledgedSize: fileSize)
            while piece > 0 {
                try encoder.update(UnsafeRawBufferPointer(start: buffer.baseAddress, count: piece))
                piece = try readPiece()
            }
            encoded = try encoder.finish()
        } catch let error as TSBackupError {
            throw error
        } catch {
            throw TSBackupError(.failed, "Could not compress \(file) with zstd: \(error).")
        }
        // The frame recorded the size fstat gave; a file that changed size while it was read
        // would not decompress, so it is refused here (PostgreSQL retries).
        guard encoded.plainBytes == fileSize else {
            throw TSBackupError(.failed, "\(file) changed size while it was read (\(fileSize) bytes, then \(encoded.plainBytes)); it was not archived. PostgreSQL will retry.")
        }
        let storedBytes = Int64(encoded.header.count) + encoded.payload.reduce(0) { $0 + Int64($1.count) }
        switch try await repository.createArchiveObject(object, pieces: [encoded.header] + encoded.payload) {
        case .created:
            return .archived(file: file, plainBytes: encoded.plainBytes, storedBytes: storedBytes)
        case .exists:
            return try await compareExisting(object, file: file, digest: encoded.digest, size: encoded.plainBytes, repository: repository)
        }
    }

    /// A push of a name the archive holds: fine when the content is the same, refused otherwise.
    static func compareExisting(_ object: ArchiveObject, file: WALFileName, digest: [UInt8], size: Int64, repository: any Repository) async throws -> Outcome {
        let name = ArchiveLayout.name(of: object)
        let stored: Data?
        do {
            stored = try await repository.readArchiveObject(object)
        } catch let error as TSBackupError {
            throw TSBackupError(.failed, "\(file) is already archived in \(repository.location), but the stored object \(name) cannot be read (\(error.message)); the new copy was not stored. Check the object; if it is damaged, remove it so the next attempt archives this file again.")
        }
        guard let stored else {
            throw TSBackupError(.failed, "\(file) seemed archived in \(repository.location), but the object \(name) vanished. PostgreSQL will retry.")
        }
        let header: WALObjectFormat.Header
        do {
            header = try WALObjectFormat.header(of: stored)
        } catch {
            throw TSBackupError(.failed, "\(file) is already archived in \(repository.location), but the stored object \(name) is damaged (\(error.reason)); the new copy was not stored. Remove the damaged object so the next attempt archives this file again.")
        }
        if header.sha256 == digest && header.plainSize == size {
            return .alreadyArchived(file: file)
        }
        throw LocalWALArchive.differentContent(file: file, location: repository.location, objectName: name, stored: header, digest: digest, size: size)
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// wal-push and wal-fetch on a local repository that is not encrypted: the case PostgreSQL runs
/// once per 16 MB segment, done synchronously in one thread, without the library's repository
/// abstraction (and so without its async runtime, NIO, or Foundation).
///
/// The rules are the library's `WALPush`/`WALFetch` rules, and the objects and marker are the
/// same bytes: identical content pushed again succeeds, different content is refused, another
/// cluster's archive is refused, a missing file is an outcome (exit 1, quiet), and nothing counts
/// as archived before it is fsynced. The file to push is read in pieces, each hashed and
/// compressed straight into the repository's temporary file; a fetched object is read in pieces
/// and decompressed into the destination's temporary file; neither holds a segment in memory.
package enum LocalWALArchive {
    package enum PushOutcome: Sendable, Equatable {
        case archived(file: WALFileName, plainBytes: Int64, storedBytes: Int64)
        case alreadyArchived(file: WALFileName)
    }

    package enum FetchOutcome: Sendable, Equatable {
        case restored(file: WALFileName, bytes: Int64)
        case missing
    }

    /// The repository's marker file (the library's `LocalRepository.markerFile`).
    package static let repositoryMarkerFile = "tsbackup-repository.json"

    /// The part of `tsbackup-repository.json` this path needs: whether the repository is encrypted.
    private struct RepositoryMarkerProbe: Decodable {
        struct Present: Decodable {}
        var kind: String
        var formatVersion: Int
        var encryption: Present?

        enum CodingKeys: String, CodingKey {
            case kind
            case formatVersion = "format_version"
            case encryption
        }
    }

    /// The absolute, standardized root of `repo` when it is a local, existing, unencrypted
    /// repository; nil for anything else (an S3 or file: URL, no repository yet, an encrypted or
    /// unreadable one), which the library's full path handles with its own messages.
    package static func plainRoot(_ repo: String) -> String? {
        guard !repo.isEmpty, !repo.contains("://"), repo.first?.isWhitespace == false, repo.last?.isWhitespace == false else { return nil }
        let root = URL(fileURLWithPath: repo).standardizedFileURL.path
        let fd = open(root + "/" + repositoryMarkerFile, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64 << 10)
        guard let filled = try? bytes.withUnsafeMutableBytes({ try SystemIO.readFull(fd, into: $0) { SystemIO.Errno(code: $0) } }),
              filled < bytes.count,
              let marker = try? JSONDecoder().decode(RepositoryMarkerProbe.self, from: Data(bytes[0..<filled])),
              marker.kind == "tsbackup-repository", marker.formatVersion == 1, marker.encryption == nil else { return nil }
        return root
    }

    // MARK: wal-push

    /// Archives `path` (relative to `dataDirectory`, PostgreSQL's working directory when it runs
    /// archive_command) into the repository at `root`. `guardsSIGBUS`: turn a SIGBUS while the
    /// mapped file is read into this command's error and exit (``MappedReadGuard``); it sets a
    /// process-wide signal handler, so only a process that pushes one file at a time, the command
    /// line, asks for it.
    package static func push(path: String, root: String, dataDirectory: String, level: Int32 = WALObjectFormat.defaultLevel, guardsSIGBUS: Bool = false) throws -> PushOutcome {
        let source = try WALSourceFile.open(path: path, baseName: LocalArchiveFile.lastComponent(of: path), dataDirectory: dataDirectory)
        defer { source.close() }
        let file = source.file, fileSize = source.size, fd = source.descriptor
        let readPiece = source.readPiece
        let cannotRead = source.cannotRead
        var first = [UInt8](repeating: 0, count: 64)
        let firstCount = first.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard firstCount >= 0 else { throw cannotRead(String(cString: strerror(errno))) }
        let identity = try source.identity(firstBytes: Data(first[0..<firstCount]), dataDirectory: dataDirectory)
        let system = identity.systemIdentifier, segmentSize = identity.segmentSize, magic = identity.magic

        let marker = try claimMarker(root: root, systemIdentifier: system, segmentSize: segmentSize, magic: magic)
        if let recorded = marker.walSegmentSize, let segmentSize, recorded != segmentSize {
            throw TSBackupError(.precondition, "\(file) is a \(megabytes(segmentSize)) segment, but the archive in \(root) holds \(megabytes(recorded)) segments of the same cluster; it was not archived. Archive to a new repository.")
        }

        // One pass: each step of the file is hashed and compressed straight into the object's
        // temporary file, after room for the header, which is written in place at the end (it
        // carries the SHA-256 of the whole file). Neither the file nor its payload is held: the
        // file is mapped and read in place a step at a time (``MappedWALFile``), or, where it
        // cannot be mapped, read in pieces.
        let object = ArchiveObject.wal(systemIdentifier: system, file: file)
        let objectPath = root + "/" + ArchiveLayout.name(of: object)
        let mapped = MappedWALFile(source)
        let guarded = mapped != nil && guardsSIGBUS
        if guarded { MappedReadGuard.arm(source) }
        defer { if guarded { MappedReadGuard.disarm() } }
        var storedBytes = Int64(WALObjectFormat.headerSize)
        var digest: [UInt8] = []
        let outcome = try LocalArchiveFile.createOnlyWriting(at: objectPath, root: root) { output in
            if guarded { MappedReadGuard.removeOnFault(output.path) }
            try [UInt8](repeating: 0, count: WALObjectFormat.headerSize).withUnsafeBytes { try output.put($0) }
            let sink = { (piece: UnsafeRawBufferPointer) in
                try output.put(piece)
                storedBytes += Int64(piece.count)
            }
            let encoded: (digest: [UInt8], plainBytes: Int64)
            do {
                if let mapped {
                    encoded = (try WALObjectFormat.compress(mapped: mapped.bytes, level: level, prepare: mapped.prepare, release: mapped.release, sink: sink), fileSize)
                } else {
                    encoded = try WALObjectFormat.compress(pledgedSize: fileSize, level: level, read: readPiece, sink: sink)
                }
            } catch let error as Zstd.Failure {
                // The frame records the size fstat gave: a file that changed size while it was
                // read fails here (PostgreSQL retries).
                throw TSBackupError(.failed, "Could not compress \(file) with zstd: \(error). If the file changed size while it was read (\(fileSize) bytes at the start), it was not archived; PostgreSQL will retry.")
            }
            // A mapped file is read to the size it had when it was opened: one that grew since
            // is refused as the piece-wise read refuses it.
            let now = mapped == nil ? encoded.plainBytes : source.currentSize()
            guard encoded.plainBytes == fileSize, now == fileSize else {
                throw TSBackupError(.failed, "\(file) changed size while it was read (\(fileSize) bytes, then \(encoded.plainBytes == fileSize ? now : encoded.plainBytes)); it was not archived. PostgreSQL will retry.")
            }
            digest = encoded.digest
            let header = WALObjectFormat.headerBytes(compression: WALObjectFormat.compressionZstd, plainSize: fileSize, sha256: encoded.digest)
            try header.withUnsafeBytes { try output.rewrite($0, at: 0) }
        }
        switch outcome {
        case .created:
            return .archived(file: file, plainBytes: fileSize, storedBytes: storedBytes)
        case .exists:
            // The name is taken (before or while this ran): compare with this file's digest,
            // read once more when the write was skipped.
            if digest.isEmpty, let mapped {
                try mapped.prepare(0..<mapped.bytes.count)
                digest = WALDigest.sha256(mapped.bytes)
            } else if digest.isEmpty {
                guard lseek(fd, 0, SEEK_SET) == 0 else { throw cannotRead(String(cString: strerror(errno))) }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WALObjectFormat.streamPieceSize, alignment: 16)
                defer { buffer.deallocate() }
                var hasher = WALDigest.Hasher()
                var total: Int64 = 0
                while true {
                    let n = try readPiece(buffer)
                    if n == 0 { break }
                    hasher.update(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n))
                    total += Int64(n)
                }
                guard total == fileSize else {
                    throw TSBackupError(.failed, "\(file) changed size while it was read (\(fileSize) bytes, then \(total)); it was not compared. PostgreSQL will retry.")
                }
                digest = hasher.finalize()
            }
            return try compareExisting(objectPath, object: object, file: file, digest: digest, size: fileSize, root: root)
        }
    }

    /// A push of a name the archive holds: fine when the content is the same, refused otherwise.
    /// Only the stored header is read: it records the size and SHA-256 of what was archived.
    static func compareExisting(_ path: String, object: ArchiveObject, file: WALFileName, digest: [UInt8], size: Int64, root: String) throws -> PushOutcome {
        let name = ArchiveLayout.name(of: object)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT {
                throw TSBackupError(.failed, "\(file) seemed archived in \(root), but the object \(name) vanished. PostgreSQL will retry.")
            }
            throw TSBackupError(.failed, "\(file) is already archived in \(root), but the stored object \(name) cannot be read (\(String(cString: strerror(code)))); the new copy was not stored. Check the object; if it is damaged, remove it so the next attempt archives this file again.")
        }
        defer { close(fd) }
        var stored = [UInt8](repeating: 0, count: WALObjectFormat.headerSize)
        let n = stored.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        let header: WALObjectFormat.Header
        do {
            header = try WALObjectFormat.header(of: Data(stored[0..<max(n, 0)]))
        } catch {
            throw TSBackupError(.failed, "\(file) is already archived in \(root), but the stored object \(name) is damaged (\(error.reason)); the new copy was not stored. Remove the damaged object so the next attempt archives this file again.")
        }
        if header.sha256 == digest && header.plainSize == size {
            return .alreadyArchived(file: file)
        }
        throw differentContent(file: file, location: root, objectName: name, stored: header, digest: digest, size: size)
    }

    /// The refusal of a push whose name the archive holds with other content, shared with the
    /// library's path (`WALPush`). It gives both SHA-256 digests whole and both sizes: a prefix
    /// would do to tell them apart, but the operator's next step is to find which copy is right
    /// (`sha256sum` of the candidates, `pg_waldump`), and a whole digest is what identifies a
    /// file there without doubt; 64 digits still fit the one paragraph.
    package static func differentContent(file: WALFileName, location: String, objectName: String, stored: WALObjectFormat.Header, digest: [UInt8], size: Int64) -> TSBackupError {
        TSBackupError(.failed, "\(file) is already archived in \(location) with different content (the stored object \(objectName): \(stored.plainSize) bytes, SHA-256 \(stored.sha256Hex); this file: \(size) bytes, SHA-256 \(WALDigest.hex(digest))); the archived copy was kept and this one refused. Two servers may be archiving as the same cluster (a restored copy still running with archiving on?): stop the one that should not archive, and check which copy is right (sha256sum shows the same digests) before removing anything.")
    }

    /// The archive's marker, created for this cluster when there is none; refuses another cluster's.
    static func claimMarker(root: String, systemIdentifier: UInt64, segmentSize: Int64?, magic: UInt16?) throws -> WALArchiveMarker {
        var marker = try readMarker(root: root)
        if marker == nil {
            let fresh = WALArchiveMarker(systemIdentifier: systemIdentifier, walSegmentSize: segmentSize, walPageMagic: magic)
            let encoded = try fresh.encoded()
            switch try LocalArchiveFile.createOnly(at: root + "/" + ArchiveLayout.markerName, root: root, { put in try encoded.withUnsafeBytes { try put($0) } }) {
            case .created: return fresh
            case .exists: marker = try readMarker(root: root)  // created meanwhile: check against it
            }
        }
        guard let marker else {
            throw TSBackupError(.failed, "The WAL archive marker of \(root) vanished while it was being read. Try again.")
        }
        try marker.check(systemIdentifier: systemIdentifier, location: root)
        return marker
    }

    /// The marker, or nil when nothing was archived in the repository yet.
    static func readMarker(root: String) throws -> WALArchiveMarker? {
        let path = root + "/" + ArchiveLayout.markerName
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw TSBackupError(.permission, "Could not read \(path): \(String(cString: strerror(errno))). Run tsbackup as a user that can read the repository.")
        }
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try SystemIO.readSome(fd, into: $0) { LocalArchiveFile.ioError("read \(path)", code: $0) } }
            if n == 0 { break }
            data.append(contentsOf: buffer[0..<n])
            // The marker is a few hundred bytes; anything large is not one (decode refuses it).
            if data.count > 1 << 20 { break }
        }
        return try WALArchiveMarker.decode(data, location: root)
    }

    static func megabytes(_ bytes: Int64) -> String { "\(bytes >> 20) MB" }

    // MARK: wal-fetch

    /// Restores the archived file `name` to `destination` (relative to `workingDirectory`):
    /// written to a temporary file and renamed into place only once its size matches the one
    /// recorded at archiving and its content checked: by zstd's frame checksum, or by the SHA-256
    /// for objects pushed before the frame checksum (``WALObjectFormat/Decoder``).
    package static func fetch(name: String, destination: String, root: String, workingDirectory: String) throws -> FetchOutcome {
        guard let file = WALFileName(name) else {
            throw TSBackupError(.usage, "\(name) is not the name of a file PostgreSQL archives (a WAL segment, .partial, .history or .backup file). Use wal-fetch in restore_command as `tsbackup wal-fetch %f %p --repo ...`.")
        }
        guard let marker = try readMarker(root: root), let system = marker.system else { return .missing }
        let object = ArchiveObject.wal(systemIdentifier: system, file: file)
        let path = root + "/" + ArchiveLayout.name(of: object)
        let advice = "Recovery cannot replay past this point from this archive; use another copy of the archive, or recover to a point before it."
        let corrupt = { (reason: String) in
            TSBackupError(.failed, "The archived \(file) (object \(ArchiveLayout.name(of: object)) in \(root)) is corrupt: \(reason). It was not restored. \(advice)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { return .missing }
            if code == EACCES {
                throw TSBackupError(.permission, "Could not read \(path): permission denied. Run tsbackup as a user that can read the repository.")
            }
            throw TSBackupError(.failed, "The archived \(file) in \(root) cannot be used: Could not read \(path): \(String(cString: strerror(code))). \(advice)")
        }
        defer { close(fd) }

        let target = destination.hasPrefix("/") ? destination : workingDirectory + "/" + destination
        let temporary = target + ".tsbackup-tmp"
        let output = TemporaryOutput(path: temporary)
        defer { output.discard() }
        // The object is read in pieces of one reused buffer and decompressed into another.
        let decoder = WALObjectFormat.Decoder(outputSize: WALObjectFormat.streamPieceSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WALObjectFormat.streamPieceSize, alignment: 16)
        defer { buffer.deallocate() }
        let header: WALObjectFormat.Header
        do {
            while true {
                let n = try SystemIO.readSome(fd, into: buffer) {
                    TSBackupError(.failed, "The archived \(file) in \(root) cannot be used: Could not read \(path): \(String(cString: strerror($0))). \(advice)")
                }
                if n == 0 { break }
                try decoder.update(Data(bytesNoCopy: buffer.baseAddress!, count: n, deallocator: .none)) { plain in
                    try output.write(plain)
                }
            }
            header = try decoder.finish()
        } catch let error as WALObjectError {
            throw corrupt(error.reason)
        }
        try output.close()
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            throw TSBackupError(.failed, "Could not rename \(temporary) to \(target): \(reason).")
        }
        output.renamed()
        return .restored(file: file, bytes: header.plainSize)
    }

    /// The temporary file wal-fetch writes: created on the first write, removed unless renamed.
    final class TemporaryOutput {
        let path: String
        private var fd: Int32 = -1
        private var done = false

        init(path: String) { self.path = path }

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            if fd < 0 {
                // Mode 0666 less the umask, as the library's wal-fetch writes it.
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
                guard fd >= 0 else { throw failure(code: errno) }
            }
            try SystemIO.writeAll(fd, bytes) { failure(code: $0) }
        }

        /// Closes the file (creating it empty if nothing was written: an empty archived file).
        func close() throws {
            if fd < 0 { try write(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let result = Glibc.close(fd)
            fd = -1
            guard result == 0 else { throw failure(code: errno) }
        }

        func renamed() { done = true }

        func discard() {
            if fd >= 0 { Glibc.close(fd); fd = -1 }
            if !done { unlink(path) }
        }

        private func failure(code: Int32) -> TSBackupError {
            TSBackupError(.failed, "Could not write \(path): \(String(cString: strerror(code))). Check that the directory exists and PostgreSQL's OS user can write it.")
        }
    }
}

import Foundation

/// The WAL archive's objects in a local repository: files under `wal/` (see ``ArchiveLayout``).
extension LocalRepository {
    func archivePath(_ object: ArchiveObject) -> String { root + "/" + ArchiveLayout.name(of: object) }

    /// Writes the object create-only and durably (``LocalArchiveFile/createOnly(at:root:_:)``:
    /// a temporary file, fsynced, hard-linked to the name, the directory fsynced).
    public func createArchiveObject(_ object: ArchiveObject, data: Data) async throws -> ArchivePutOutcome {
        try await createArchiveObject(object, pieces: [data])
    }

    /// As ``createArchiveObject(_:data:)``, writing (and in an encrypted repository sealing) the
    /// pieces one by one, so the object is never joined in memory.
    public func createArchiveObject(_ object: ArchiveObject, pieces: [Data]) async throws -> ArchivePutOutcome {
        let name = ArchiveLayout.name(of: object)
        return try LocalArchiveFile.createOnly(at: archivePath(object), root: root) { write in
            func put(_ bytes: Data) throws { try bytes.withUnsafeBytes { try write($0) } }
            if var sealer = codec.archiveObjectSealer(name: name) {
                try translatingEncryptionErrors {
                    for piece in pieces { try put(try sealer.update(piece)) }
                    try put(try sealer.finish())
                }
            } else {
                for piece in pieces { try put(piece) }
            }
        }
    }

    public func readArchiveObject(_ object: ArchiveObject) async throws -> Data? {
        let path = archivePath(object)
        guard let stored = FileManager.default.contents(atPath: path) else {
            if access(path, F_OK) == 0 {
                throw TSBackupError(.permission, "Could not read \(path): permission denied. Run tsbackup as a user that can read the repository.")
            }
            return nil
        }
        return try codec.openArchiveObject(stored, name: ArchiveLayout.name(of: object))
    }

    /// Reads the file in pieces into one reused buffer (decrypting each in an encrypted
    /// repository), so a 16 MB object is never held whole.
    public func readArchiveObject(_ object: ArchiveObject, pieces consume: (Data) throws -> Void) async throws -> Bool {
        let path = archivePath(object)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return false }
            if errno == EACCES {
                throw TSBackupError(.permission, "Could not read \(path): permission denied. Run tsbackup as a user that can read the repository.")
            }
            throw FileSystem.ioError("open \(path)")
        }
        defer { Glibc.close(fd) }
        var opener = codec.archiveObjectOpener(name: ArchiveLayout.name(of: object))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WALObjectFormat.pieceSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try FileSystem.readSome(fd, into: buffer, path: path)
            if n == 0 { break }
            // The piece lives in the reused buffer; consumers copy what they keep.
            let piece = Data(bytesNoCopy: buffer.baseAddress!, count: n, deallocator: .none)
            let plain = try opener.update(piece)
            if !plain.isEmpty { try consume(plain) }
        }
        let tail = try opener.finish()
        if !tail.isEmpty { try consume(tail) }
        return true
    }

    public func archiveObjectExists(_ object: ArchiveObject) async throws -> Bool {
        access(archivePath(object), F_OK) == 0
    }

    public func listArchiveObjects(_ scope: ArchiveScope) async throws -> [ArchiveObjectInfo] {
        let prefix = ArchiveLayout.prefix(of: scope)
        let base = root + "/" + prefix
        guard access(base, F_OK) == 0 else { return [] }
        var infos: [ArchiveObjectInfo] = []
        for file in try FileSystem.regularFiles(under: base) {
            guard let object = ArchiveLayout.object(named: prefix + file) else { continue }
            infos.append(ArchiveObjectInfo(object: object, storedBytes: FileSystem.size(of: base + file)))
        }
        return infos.sorted { ArchiveLayout.name(of: $0.object) < ArchiveLayout.name(of: $1.object) }
    }

    public func deleteArchiveObjects(_ objects: [ArchiveObject]) async throws {
        for object in objects {
            let path = archivePath(object)
            if unlink(path) != 0 && errno != ENOENT {
                throw FileSystem.ioError("remove \(path)")
            }
        }
    }
}

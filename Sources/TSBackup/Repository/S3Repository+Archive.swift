import Foundation

/// The WAL archive's objects in an S3 repository: keys under `PREFIX/wal/` (see ``ArchiveLayout``).
extension S3Repository {
    func archiveKey(_ object: ArchiveObject) -> String { s3Location.key(ArchiveLayout.name(of: object)) }

    /// One PutObject with `If-None-Match: *`: the store creates the object or answers 412.
    ///
    /// A retried PUT whose first attempt did succeed also sees 412; callers compare the stored
    /// content with theirs (wal-push does), so that case reads as "exists with identical content".
    public func createArchiveObject(_ object: ArchiveObject, data: Data) async throws -> ArchivePutOutcome {
        let stored = try codec.seal(data, name: ArchiveLayout.name(of: object))
        do {
            try await client.putObject(archiveKey(object), data: stored, ifNoneMatch: true)
            return .created
        } catch let error as S3Error where error.code == .preconditionFailed {
            return .exists
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
    }

    public func readArchiveObject(_ object: ArchiveObject) async throws -> Data? {
        let stored: Data
        do {
            stored = try await client.getObject(archiveKey(object))
        } catch let error as S3Error where error.code == .noSuchKey {
            return nil
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
        return try codec.openArchiveObject(stored, name: ArchiveLayout.name(of: object))
    }

    /// One GetObject (a compressed segment is a few MB); decrypted and handed over in pieces, so
    /// no second whole copy is made.
    public func readArchiveObject(_ object: ArchiveObject, pieces consume: (Data) throws -> Void) async throws -> Bool {
        let stored: Data
        do {
            stored = try await client.getObject(archiveKey(object))
        } catch let error as S3Error where error.code == .noSuchKey {
            return false
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
        var opener = codec.archiveObjectOpener(name: ArchiveLayout.name(of: object))
        var offset = stored.startIndex
        while offset < stored.endIndex {
            let end = min(offset + WALObjectFormat.pieceSize, stored.endIndex)
            let plain = try opener.update(stored[offset..<end])
            if !plain.isEmpty { try consume(plain) }
            offset = end
        }
        let tail = try opener.finish()
        if !tail.isEmpty { try consume(tail) }
        return true
    }

    public func archiveObjectExists(_ object: ArchiveObject) async throws -> Bool {
        try await s3 { try await client.headObject(archiveKey(object)) } != nil
    }

    public func listArchiveObjects(_ scope: ArchiveScope) async throws -> [ArchiveObjectInfo] {
        let base = s3Location.listPrefix
        let listed = try await s3 { try await client.listObjects(prefix: s3Location.key(ArchiveLayout.prefix(of: scope))) }
        return listed.compactMap { info in
            guard info.key.hasPrefix(base), let object = ArchiveLayout.object(named: String(info.key.dropFirst(base.count))) else { return nil }
            return ArchiveObjectInfo(object: object, storedBytes: info.size)
        }
    }

    public func deleteArchiveObjects(_ objects: [ArchiveObject]) async throws {
        guard !objects.isEmpty else { return }
        try await s3 { try await client.deleteObjects(objects.map(archiveKey)) }
    }
}

import Foundation

/// The archive marker (``WALArchiveMarker``) on any repository, local or S3.
extension WALArchiveMarker {
    /// The marker of `repository`'s archive, or nil when nothing was archived there yet.
    public static func read(_ repository: any Repository) async throws -> WALArchiveMarker? {
        guard let data = try await repository.readArchiveObject(.walMarker) else { return nil }
        return try decode(data, location: repository.location)
    }

    /// The marker, created for this cluster when the repository has none; refuses a repository
    /// holding another cluster's archive.
    static func claim(_ repository: any Repository, systemIdentifier: UInt64, segmentSize: Int64?, magic: UInt16?) async throws -> WALArchiveMarker {
        var marker = try await read(repository)
        if marker == nil {
            let fresh = WALArchiveMarker(systemIdentifier: systemIdentifier, walSegmentSize: segmentSize, walPageMagic: magic)
            switch try await repository.createArchiveObject(.walMarker, data: try fresh.encoded()) {
            case .created: return fresh
            case .exists: marker = try await read(repository)  // created meanwhile: check against it
            }
        }
        guard let marker else {
            throw TSBackupError(.failed, "The WAL archive marker of \(repository.location) vanished while it was being read. Try again.")
        }
        try marker.check(systemIdentifier: systemIdentifier, location: repository.location)
        return marker
    }

}

import Foundation
import PostgresNIO

/// The `expire` use case: deletes old base backups and only the WAL that no remaining base
/// backup needs, under the repository's lock. The newest base backup and its WAL are never
/// deleted, whatever the options say.
public enum Expire {
    public struct Request: Sendable {
        public var repository: RepositoryAccess
        /// Keep at least this many of the newest complete base backups.
        public var keepBase: Int
        /// Delete only base backups that ended longer ago than this.
        public var olderThan: TimeInterval?
        public var dryRun = false
        public var now = Date()

        public init(repository: RepositoryAccess, keepBase: Int) {
            self.repository = repository
            self.keepBase = keepBase
        }
    }

    public struct Report: Codable, Sendable {
        public var dryRun: Bool
        public var deletedBaseBackups: [String]
        public var keptBaseBackups: [String]
        /// WAL segments before this one (on every timeline) are no longer needed.
        public var walKeptFrom: String?
        public var walSegmentsDeleted: Int

        enum CodingKeys: String, CodingKey {
            case dryRun = "dry_run"
            case deletedBaseBackups = "deleted_base_backups"
            case keptBaseBackups = "kept_base_backups"
            case walKeptFrom = "wal_kept_from"
            case walSegmentsDeleted = "wal_segments_deleted"
        }
    }

    /// Which complete base backups go: beyond the newest `keep` (at least 1) and, with
    /// `olderThan`, only those that ended before `now - olderThan`.
    public static func plan(_ bases: [BaseBackupManifest], keep: Int, olderThan: TimeInterval?, now: Date) -> (delete: [BaseBackupManifest], keep: [BaseBackupManifest]) {
        let newestFirst = bases.sorted { $0.stopTime > $1.stopTime }
        let protected = max(1, keep)
        var delete: [BaseBackupManifest] = []
        var kept: [BaseBackupManifest] = []
        for (index, base) in newestFirst.enumerated() {
            let oldEnough = olderThan.map { base.stopTime < now.addingTimeInterval(-$0) } ?? true
            if index >= protected && oldEnough { delete.append(base) } else { kept.append(base) }
        }
        return (delete.reversed(), kept.reversed())
    }

    public static func run(_ request: Request) async throws -> Report {
        try await request.repository.with(create: false) { repository in
            try await repository.withLock(command: "expire") { _ in
                let entries = try await repository.entries()
                let bases = entries.compactMap { $0.state == .complete ? $0.base : nil }
                let (delete, keep) = plan(bases, keep: request.keepBase, olderThan: request.olderThan, now: request.now)
                // The oldest base backup kept needs WAL from its start on; older WAL goes.
                let oldest = keep.min { $0.stopTime < $1.stopTime }
                var report = Report(dryRun: request.dryRun, deletedBaseBackups: delete.map(\.id), keptBaseBackups: keep.map(\.id),
                                    walKeptFrom: oldest?.startSegment, walSegmentsDeleted: 0)
                guard !request.dryRun else {
                    report.walSegmentsDeleted = try await WALExpiry.count(repository, before: oldest)
                    return report
                }
                for base in delete {
                    if let entry = entries.first(where: { $0.id == base.id }) { try await repository.deleteEntry(entry) }
                }
                report.walSegmentsDeleted = try await WALExpiry.delete(repository, before: oldest)
                return report
            }
        }
    }
}

/// WAL the oldest remaining base backup does not need: segments (and `.backup` files) of every
/// timeline before its start segment; history files stay.
enum WALExpiry {
    static func count(_ repository: any Repository, before base: BaseBackupManifest?) async throws -> Int {
        guard let base, let file = WALFileName(base.startSegment), let archive = try await WALArchive.load(repository),
              String(archive.systemIdentifier) == base.systemIdentifier else { return 0 }
        return archive.objectsBefore(file).count
    }

    static func delete(_ repository: any Repository, before base: BaseBackupManifest?) async throws -> Int {
        guard let base, let file = WALFileName(base.startSegment), let archive = try await WALArchive.load(repository),
              String(archive.systemIdentifier) == base.systemIdentifier else { return 0 }
        return try await archive.deleteSegments(before: file, in: repository).count
    }
}

import Foundation

/// What every kind of repository entry's manifest has: the commit-record fields.
public protocol EntryManifest: Codable, Sendable {
    var id: String { get }
    var status: BackupManifest.Status { get set }
    var error: String? { get set }
    var startedAt: Date { get }
    var finishedAt: Date { get set }
    var durationSeconds: Double { get set }
    /// What the run wants its reader to know; repositories may add their own.
    var warnings: [String] { get set }
    /// Every file of the entry but the manifest.
    var files: [BackupManifest.FileEntry] { get }
}

extension EntryManifest {
    /// What the entry's files hold, in bytes, as the manifest records them.
    public var totalFileBytes: Int64 { files.saturatingSum(\.bytes) }

    /// Closes the run: its outcome and when it ended.
    public mutating func markFinished(_ status: BackupManifest.Status, error: String? = nil) {
        self.status = status
        self.error = error
        finishedAt = Date()
        durationSeconds = finishedAt.timeIntervalSince(startedAt)
    }
}

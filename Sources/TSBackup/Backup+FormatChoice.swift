import Foundation

extension Backup {
    /// The format for `request` on a database whose dumped tables have these heap sizes.
    static func chooseFormat(_ request: Request, tableBytes: [String: Int64], excluded: Set<String>) -> BackupManifest.FormatChoice {
        var tables = 0
        var bytes: Int64 = 0
        for (name, size) in tableBytes where !excluded.contains(name) {
            tables += 1
            bytes += size
        }
        if let format = request.format { return .user(format, tables: tables, tableBytes: bytes) }
        if request.zstdAsked, request.zstdLevel != nil { return .zstdAsked(tables: tables, tableBytes: bytes) }
        return .automatic(tables: tables, tableBytes: bytes, jobs: request.jobs)
    }
}

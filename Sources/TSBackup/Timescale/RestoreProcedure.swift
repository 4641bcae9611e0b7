import Foundation

/// The phased pg_restore that TimescaleDB survives (reference: timescaledb.md section 7).
///
/// Plain `pg_restore -j` loads the catalog tables in parallel, their foreign keys reject rows
/// whose parents are not loaded yet, and every hypertable comes back empty while post_restore
/// still succeeds. So: pre-data serially, then the `_timescaledb_catalog`/`_timescaledb_config`
/// data and sequences serially in archive order, then everything else in parallel. Never
/// `--single-transaction` (thousands of chunks exhaust the lock table).
final class RestoreProcedure: @unchecked Sendable {
    let archive: String
    let pgRestore: PostgresTool
    let settings: ConnectionSettings
    let jobs: Int
    let listDirectory: String
    private(set) var warnings: [String] = []

    var catalogList: String { listDirectory + "/catalog.list" }
    var restList: String { listDirectory + "/rest.list" }

    init(archive: String, pgRestore: PostgresTool, settings: ConnectionSettings, jobs: Int) throws {
        self.archive = archive
        self.pgRestore = pgRestore
        self.settings = settings
        self.jobs = max(1, jobs)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-restore-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        self.listDirectory = directory
    }

    func removeLists() {
        try? FileManager.default.removeItem(atPath: listDirectory)
    }

    static func isCatalogData(_ item: ArchiveContents.Item) -> Bool {
        (item.type == "TABLE DATA" || item.type == "SEQUENCE SET")
            && (item.schema == "_timescaledb_catalog" || item.schema == "_timescaledb_config")
    }

    func splitLists(_ contents: ArchiveContents) throws {
        let catalog = contents.items.filter(Self.isCatalogData).map(\.line)
        let rest = contents.items.filter { !Self.isCatalogData($0) }.map(\.line)
        try (catalog.joined(separator: "\n") + "\n").write(toFile: catalogList, atomically: true, encoding: .utf8)
        try (rest.joined(separator: "\n") + "\n").write(toFile: restList, atomically: true, encoding: .utf8)
    }

    func restorePreData() async throws {
        try await pgRestore(["--section=pre-data"], phase: "pre-data")
    }

    func restoreCatalogData() async throws {
        try await pgRestore(["--use-list=\(catalogList)"], phase: "TimescaleDB catalog data")
    }

    func restoreRest() async throws {
        try await pgRestore(["--section=data", "--section=post-data", "--use-list=\(restList)", "--jobs=\(jobs)"], phase: "data and post-data")
    }

    /// One pg_restore of this archive with `options`; also used by ChunkBatchRestore.
    func pgRestore(_ options: [String], phase: String) async throws {
        // The target is a throwaway database until verified; losing its last commits on a crash
        // costs a rerun, not data. The CHECKPOINT before success makes it durable.
        let environment = settings.childProcessEnvironment(options: "-c synchronous_commit=off")
        let arguments = options + ["--dbname=\(settings.database)", "--exit-on-error", "--no-password", archive]
        let result = try await ProcessRunner.run(pgRestore.path, arguments, environment: environment)
        let lines = result.standardError.split(separator: "\n").map(String.init)
        let errors = lines.filter { $0.contains("error:") || $0.contains("errors ignored on restore") || $0.hasPrefix("ERROR") }
        guard result.succeeded, errors.isEmpty else {
            let detail = (errors.isEmpty ? lines : errors).joined(separator: " ").singleLine(limit: 700)
            throw TSBackupError(.failed, "pg_restore (\(phase)) failed (\(result.statusDescription)): \(detail.isEmpty ? "no message" : detail)")
        }
        warnings += lines.filter { $0.contains("warning:") }.map { "pg_restore (\(phase)): \($0)" }
    }
}

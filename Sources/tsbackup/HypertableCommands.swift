import Foundation
import ArgumentParser
import TSBackup

struct ExportHypertableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-hypertable",
        abstract: "Export one hypertable (or a time window of it) into the repository.",
        discussion: """
            Stores the table's definition (pg_dump --schema-only of the root table, without \
            TimescaleDB's insert blocker), its dimensions, compression settings and jobs, and its \
            rows as compressed COPY text, in files of consecutive chunks, copied by parallel psql processes on \
            one exported snapshot. Compressed chunks are read through TimescaleDB's decompression and \
            exported decompressed; the manifest records which were compressed. Row count and content \
            hash are read through the hypertable root on the same snapshot, chunk range by chunk \
            range; a chunk whose copy differs fails the export, naming it. Needs only SELECT \
            on the table. --since/--until bound the primary (time) dimension: [since, until); \
            timestamps without an offset are UTC.
            """
    )

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var repository: RepositoryOptions

    @Option(help: ArgumentHelp("The hypertable, SCHEMA.NAME.", valueName: "schema.name"))
    var table: String

    @Option(help: "Only rows whose time column is at or after this value.")
    var since: String?

    @Option(help: "Only rows whose time column is before this value.")
    var until: String?

    @Option(help: "Data files written at once (default 2).")
    var jobs: Int = 2

    @Option(help: "At most this many chunks per data file (1: a file per chunk). By default chunks are grouped into files of about table size / (2 x jobs), 8 to 256 MB.")
    var chunksPerFile: Int?

    @Flag(help: "Print the entry's summary as JSON.")
    var json = false

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
        if let chunksPerFile, chunksPerFile < 1 { throw ValidationError("--chunks-per-file must be at least 1.") }
    }

    func run() async throws {
        try await reportingErrors {
            var request = HypertableExport.Request(settings: try database.settings(), repository: try repository.resolved(), table: table)
            request.since = since
            request.until = until
            request.jobs = jobs
            request.chunksPerFile = chunksPerFile
            let manifest = try await HypertableExport.run(request)
            if json {
                print(try JSONOutput.encode(manifest.summary))
            } else {
                print(manifest.completionLine)
                for warning in manifest.warnings { printWarning(warning) }
            }
        }
    }
}

struct ImportHypertableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-hypertable",
        abstract: "Create an exported hypertable in an existing database and load its rows.",
        discussion: """
            The target database must have the timescaledb extension (same or newer version) and \
            must not have the table yet. Creates the table and its constraints, makes it a \
            hypertable with the exported dimensions, loads the data files in parallel, then adds \
            indexes, foreign keys, triggers, comments and grants; foreign keys to missing tables \
            and triggers calling missing functions are skipped with a warning. Compression settings \
            are restored and chunks compressed at the source compressed again where the target can \
            compress; elsewhere (the Apache-only build) the rows arrive uncompressed, with a warning. \
            Row count and content hash are compared with the export's figures from the source's \
            hypertable root; on any failure the new table is dropped. \
            Works as the database owner; the table belongs to the importing role.
            """
    )

    @Argument(help: "The export's id (see list).") var id: String
    @OptionGroup var repository: RepositoryOptions

    @Option(name: .customLong("target"), help: ArgumentHelp("Connection URL of the database to import into.", valueName: "url"))
    var target: String?

    @Option(name: .customLong("as"), help: ArgumentHelp("Create the table under this name instead.", valueName: "schema.name"))
    var targetTable: String?

    @Option(help: "Data files loaded at once (default 2).")
    var jobs: Int = 2

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
    }

    func run() async throws {
        try await reportingErrors {
            var request = HypertableImport.Request(repository: try repository.resolved(), id: id,
                                                   target: try ConnectionSettings.resolve(target))
            request.targetTable = targetTable
            request.jobs = jobs
            request.cleanupPatience = try WaitSetting.seconds(WaitSetting.cleanup)
            let report = try await HypertableImport.run(request)
            if json {
                print(try JSONOutput.encode(report))
            } else {
                print(report.completionLine)
                for skipped in report.skipped where !report.warnings.contains(where: { $0.contains(skipped) }) {
                    print("  not created: \(skipped)")
                }
                for warning in report.warnings { printWarning(warning) }
            }
            // Out (not in a pipe's buffer) before the table stops counting as an interrupted
            // run's: a kill after this leaves a table the report named.
            fflush(nil)
            await TestSeams.pauseIfAsked(atStep: "import: report printed")
            do {
                try await HypertableImport.acknowledge(report, request: request)
            } catch {
                let message = (error as? TSBackupError)?.message ?? "\(error)"
                throw TSBackupError(.failed, "The import of \(report.id) into \(report.table) verified (report above), but its in-progress marker could not be removed (\(message)); until it is, the next import into that database drops \(report.table) as an interrupted run's. Remove it: COMMENT ON TABLE \(report.quotedTable) IS NULL.")
            }
        }
    }
}

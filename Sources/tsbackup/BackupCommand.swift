import ArgumentParser
import TSBackup

extension BackupManifest.Format: ExpressibleByArgument {}
extension Backup.CompressionChoice: ExpressibleByArgument {}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take a consistent, self-describing logical backup of a database.",
        discussion: """
            Checks first (pg_dump version, read access to every table and chunk, pg_dump's lock \
            budget, free space), then runs pg_dump on an exported REPEATABLE READ snapshot while \
            the same snapshot is surveyed for the manifest (row and chunk counts, dimensions, \
            jobs; content hashes with --checksums). Roles are saved beside the dump. The archive's \
            table of contents is checked, every file is fsynced and hashed, and the manifest is \
            written last: a failed or interrupted run never looks complete.
            """
    )

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var repository: RepositoryOptions

    @Option(help: "pg_dump jobs for the directory format (default: one per core, 2 to 8).")
    var jobs: Int?

    @Option(help: "Archive format: directory (one file per table, dumped in parallel) or custom (one file). Default: chosen per database, custom for many small tables (thousands of chunks), directory otherwise; the manifest's format_choice says which and why.")
    var format: BackupManifest.Format?

    @Option(help: ArgumentHelp(
        "zstd[:LEVEL] or a pg_dump gzip level 0-9 (default: zstd:1).",
        discussion: "zstd:1-19: pg_dump writes the directory archive uncompressed and tsbackup compresses each data file with zstd (restores decompress them into scratch space first). 0-9 (or gzip:0-9, none = 0): pg_dump compresses with gzip at that level, as pg_dump does by itself (6 is its default: smaller and several times slower than zstd). Custom-format archives and chunk batches are always compressed by pg_dump (gzip level 2 unless a level 0-9 is given).",
        valueName: "method"))
    var compress: Backup.CompressionChoice?

    @Option(help: "A label stored in the manifest.")
    var label: String?

    @Flag(help: "Also store an order-independent content hash per table (one more scan of each table).")
    var checksums = false

    @Option(name: .customLong("table"), help: "Refused: tsbackup backs up whole databases (see export-hypertable).")
    var tables: [String] = []

    @Option(name: .customLong("exclude-table"), help: "Leave out plain tables matching this pattern (never hypertables or chunks).")
    var excludeTables: [String] = []

    @Option(name: .customLong("exclude-schema"), help: "Leave out schemas holding only plain tables.")
    var excludeSchemas: [String] = []

    @Flag(help: "Print the manifest summary as JSON.")
    var json = false

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
        if format == .custom, case .zstd = compress {
            throw ValidationError("--compress zstd applies to the directory format; pg_dump compresses custom archives itself. Give a gzip level 0-9 with --format custom, or leave --format out.")
        }
        if format == .custom, let jobs, jobs > 1 {
            throw ValidationError("--jobs applies to the directory format only; pg_dump writes custom archives with one job.")
        }
    }

    func run() async throws {
        try await reportingErrors {
            var request = Backup.Request(settings: try database.settings(), repository: try repository.resolved())
            request.format = format
            // Automatic: the jobs serve the directory format if chosen, and chunk batches either way.
            request.jobs = format == .custom ? 1 : (jobs ?? Backup.defaultJobs)
            request.label = label
            if let compress { request.apply(compress) }
            request.checksums = checksums
            request.tables = tables
            request.excludeTables = excludeTables
            request.excludeSchemas = excludeSchemas
            let showProgress = ProgressLine.enabled && !json
            let onProgress: (@Sendable (Backup.Progress) -> Void)? = showProgress ? Self.render : nil
            let manifest = try await Backup.run(request, onProgress: onProgress)
            if showProgress { ProgressLine.clear() }
            if json {
                print(try JSONOutput.encode(manifest.summary))
            } else {
                print(manifest.completionLine)
                for warning in manifest.warnings { printWarning(warning) }
            }
        }
    }

    @Sendable static func render(_ p: Backup.Progress) {
        var text = "backup: \(p.phase)"
        if p.tablesTotal > 0 {
            let eta = p.fractionDone > 0.02 ? ProgressLine.duration(p.elapsed * (1 - p.fractionDone) / p.fractionDone) : "--:--"
            text += "  tables \(p.tablesDone)/\(p.tablesTotal)  \(ByteCount.format(p.bytesWritten))  elapsed \(ProgressLine.duration(p.elapsed))  ETA \(eta)"
        } else {
            text += "  \(ByteCount.format(p.bytesWritten))  elapsed \(ProgressLine.duration(p.elapsed))"
        }
        ProgressLine.show(text)
    }
}

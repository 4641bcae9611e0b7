import ArgumentParser
import Foundation
import TSBackup

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the backups in a repository, oldest first.")

    @OptionGroup var repository: RepositoryOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await reportingErrors {
            try await repository.resolved().with(create: false) { repo in
                let entries = try await repo.entries()
                if json {
                    let rows = entries.map { entry in
                        ListedEntry(id: entry.id, state: entry.state.rawValue, manifest: entry.manifest?.summary ?? entry.hypertable?.summary ?? entry.base?.summary,
                                    problem: entry.problem)
                    }
                    print(try JSONOutput.encode(rows))
                    return
                }
                guard !entries.isEmpty else {
                    print("No backups in \(repo.location).")
                    return
                }
                let iso = ISO8601DateFormatter()
                var table = TextTable(header: ["ID", "TAKEN (UTC)", "DATABASE", "SIZE", "POSTGRESQL", "TIMESCALEDB", "STATUS", "LABEL"], indent: "")
                for entry in entries {
                    if let h = entry.hypertable {
                        table.add([entry.id, iso.string(from: h.startedAt), "\(h.source.database) (hypertable \(h.table.qualifiedName))", ByteCount.format(h.totalFileBytes),
                                   String(h.server.versionNumber / 10000) + "." + String(h.server.versionNumber % 10000),
                                   h.timescaledb?.version ?? "-", entry.state.rawValue, h.window == nil ? "" : h.windowDescription])
                        continue
                    }
                    if let b = entry.base {
                        table.add([entry.id, iso.string(from: b.startedAt), "cluster (base backup, timeline \(b.timeline), WAL \(b.startLSN)-\(b.stopLSN))", ByteCount.format(b.totalFileBytes),
                                   String(b.server.versionNumber / 10000) + "." + String(b.server.versionNumber % 10000),
                                   b.timescaleVersions, entry.state.rawValue, b.label ?? ""])
                        continue
                    }
                    guard let m = entry.manifest else {
                        let stored = await repo.storedBytes(of: entry)
                        table.add([entry.id, "-", "-", ByteCount.format(stored), "-", "-", entry.problem == nil ? "interrupted" : "corrupt", "-"])
                        continue
                    }
                    table.add([entry.id, iso.string(from: m.startedAt), m.source.database, ByteCount.format(m.totalFileBytes),
                               String(m.server.versionNumber / 10000) + "." + String(m.server.versionNumber % 10000),
                               m.timescaledb?.version ?? "-", entry.state.rawValue, m.label ?? ""])
                }
                print(table.render())
                for line in try await ArchiveListing.lines(repo, entries: entries) { print(line) }
            }
        }
    }

    struct ListedEntry: Codable {
        var id: String
        var state: String
        var manifest: BackupManifest.Summary?
        /// Why the entry is corrupt (its manifest failed its checksum or authentication).
        var problem: String?
    }
}

struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a backup's manifest.")

    @Argument(help: "The backup id (see list).") var id: String
    @OptionGroup var repository: RepositoryOptions
    @Flag(help: "Print the manifest as stored (JSON).") var json = false

    func run() async throws {
        try await reportingErrors {
            try await repository.resolved().with(create: false) { repo in
                let entry = try await repo.entry(id)
                if let export = entry.hypertable {
                    print(json ? try JSONOutput.encode(export) : export.renderReport(), terminator: json ? "\n" : "")
                    return
                }
                if let base = entry.base {
                    print(json ? try JSONOutput.encode(base) : base.renderReport(), terminator: json ? "\n" : "")
                    return
                }
                if let problem = entry.problem { throw TSBackupError(.failed, problem) }
                guard let manifest = entry.manifest else {
                    throw TSBackupError(.failed, "Backup \(id) has no manifest: the run that wrote it was interrupted, so it holds no usable backup. Delete it with `tsbackup delete \(id) --repo \(repo.location) --yes`.")
                }
                print(json ? try JSONOutput.encode(manifest) : manifest.renderReport(), terminator: json ? "\n" : "")
            }
        }
    }
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Re-hash a backup's files and check its archive is complete; with --wal, check every object of the WAL archive.",
        discussion: """
            Exits non-zero and names each missing or corrupt file when anything is wrong. \
            --wal reads every archived WAL segment, .partial, .history and .backup file back \
            (decrypting and authenticating it in an encrypted repository), decompresses it and \
            checks zstd's frame checksum, the size and the SHA-256 recorded in its header, that a \
            segment's first page names this archive's cluster, segment size and the position its \
            name stands for, and that no segment is missing between a timeline's first and last \
            or from a complete base backup's start to its stop. It reads the whole archive (on S3, \
            downloads it), so it is an option, not part of checking one backup.
            """)

    @Argument(help: "The backup id (see list); may be left out with --wal.") var id: String?
    @OptionGroup var repository: RepositoryOptions
    @Flag(help: "Check every object of the repository's WAL archive.") var wal = false
    @Flag(help: "Print JSON (with an id and --wal: {\"backup\": ..., \"wal\": ...}).") var json = false

    func validate() throws {
        if id == nil && !wal { throw ValidationError("Give a backup id to verify, or --wal to verify the WAL archive (or both).") }
    }

    struct Both: Encodable {
        var backup: Verify.Report
        var wal: WALVerify.Report
    }

    func run() async throws {
        try await reportingErrors {
            let (report, isExport, walReport) = try await repository.resolved().with(create: false) { repo in
                var entry: (Verify.Report, Bool)?
                if let id {
                    let report = try await Verify.run(repository: repo, id: id)
                    entry = (report, (try? await repo.entry(id))?.hypertable != nil)
                }
                let walReport = wal ? try await WALVerify.run(repository: repo) : nil
                return (entry?.0, entry?.1 ?? false, walReport)
            }
            if json {
                if let report, let walReport {
                    print(try JSONOutput.encode(Both(backup: report, wal: walReport)))
                } else if let report {
                    print(try JSONOutput.encode(report))
                } else if let walReport {
                    print(try JSONOutput.encode(walReport))
                }
            } else {
                if let report, let id {
                    for warning in report.warnings { print("warning: \(warning)") }
                    if report.ok {
                        print("\(isExport ? "Hypertable export" : "Backup") \(id) verified: \(report.filesChecked) files, \(ByteCount.format(report.bytesChecked)), checksums and \(isExport ? "row counts" : "table of contents") match the manifest.")
                    } else {
                        print("Backup \(id) FAILED verification:")
                        for problem in report.problems { print("  - \(problem)") }
                    }
                }
                if let walReport { print(Self.render(walReport)) }
            }
            var failures: [String] = []
            if let report, let id, !report.ok {
                failures.append("Backup \(id) is damaged or incomplete (\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")); do not restore it. Take a new backup.")
            }
            if let walReport, !walReport.ok {
                let count = walReport.problems.count
                failures.append("The WAL archive in \(walReport.repository) has \(count) damaged or missing object\(count == 1 ? "" : "s") (\(walReport.problems.prefix(3).map(\.file).joined(separator: ", "))\(count > 3 ? ", ..." : "")); a recovery that needs them fails there. Take a new base backup after the damage (recovery to points after it does not need the older WAL), and keep a copy of the archive elsewhere.")
            }
            if !failures.isEmpty { throw TSBackupError(.failed, failures.joined(separator: " ")) }
        }
    }

    static func render(_ report: WALVerify.Report) -> String {
        let summary = "\(report.objectsChecked) objects (\(report.segmentsChecked) segments), \(ByteCount.format(report.storedBytes)) stored, \(ByteCount.format(report.plainBytes)) after decompression"
        if report.ok {
            return "WAL archive of cluster \(report.systemIdentifier) verified: \(summary); checksums, sizes and each segment's cluster and position match, no segment missing."
        }
        var lines = ["WAL archive of cluster \(report.systemIdentifier) FAILED verification (\(summary)):"]
        for problem in report.problems { lines.append("  - \(problem.description)") }
        return lines.joined(separator: "\n")
    }
}

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a backup from a repository.")

    @Argument(help: "The backup id (see list).") var id: String
    @OptionGroup var repository: RepositoryOptions
    @Flag(help: "Do not ask for confirmation.") var yes = false

    func run() async throws {
        try await reportingErrors {
            try await repository.resolved().with(create: false) { repo in
                try await repo.withLock(command: "delete \(id)") { _ in
                    let entry = try await repo.entry(id)
                    if !yes {
                        guard isatty(0) == 1 else {
                            throw TSBackupError(.usage, "Deleting backup \(id) needs confirmation; no terminal is attached to ask. Add --yes to delete without asking.")
                        }
                        let stored = await repo.storedBytes(of: entry)
                        print("Delete backup \(id) (\(entry.manifest?.source.database ?? entry.base.map { _ in "physical base backup of the cluster" } ?? entry.hypertable.map { "\($0.source.database), hypertable \($0.table.qualifiedName)" } ?? "incomplete"), \(ByteCount.format(stored)))? Type yes: ", terminator: "")
                        guard readLine()?.lowercased() == "yes" else {
                            print("Nothing deleted.")
                            return
                        }
                    }
                    try await repo.deleteEntry(entry)
                    print("Deleted backup \(id).")
                }
            }
        }
    }
}

struct RepoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repo", abstract: "Repository maintenance.", subcommands: [RepoGCCommand.self])
}

struct RepoGCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove what interrupted runs left behind (entries without a manifest).",
        discussion: "Takes the repository's lock first, so it never touches the entry of a run in progress; a stale lock (its holder died or its lease expired) is reported and taken over.")

    @OptionGroup var repository: RepositoryOptions

    func run() async throws {
        try await reportingErrors {
            try await repository.resolved().with(create: false) { repo in
                try await repo.withLock(command: "repo gc") { staleWarning in
                    if let staleWarning { printWarning(staleWarning) }
                    let removed = try await repo.removeInterruptedEntries()
                    print(removed.isEmpty ? "Nothing to remove in \(repo.location)." : "Removed the leftovers of \(removed.count) interrupted run\(removed.count == 1 ? "" : "s"): \(removed.joined(separator: ", ")).")
                }
            }
        }
    }
}

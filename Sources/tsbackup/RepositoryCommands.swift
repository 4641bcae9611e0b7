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
        abstract: "Re-hash a backup's files and check its archive is complete.",
        discussion: "Exits non-zero and names each missing or corrupt file when anything is wrong.")

    @Argument(help: "The backup id (see list).") var id: String
    @OptionGroup var repository: RepositoryOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await reportingErrors {
            let (report, isExport) = try await repository.resolved().with(create: false) { repo in
                let report = try await Verify.run(repository: repo, id: id)
                return (report, (try? await repo.entry(id))?.hypertable != nil)
            }
            if json {
                print(try JSONOutput.encode(report))
            } else if report.ok {
                for warning in report.warnings { print("warning: \(warning)") }
                print("\(isExport ? "Hypertable export" : "Backup") \(id) verified: \(report.filesChecked) files, \(ByteCount.format(report.bytesChecked)), checksums and \(isExport ? "row counts" : "table of contents") match the manifest.")
            } else {
                for warning in report.warnings { print("warning: \(warning)") }
                print("Backup \(id) FAILED verification:")
                for problem in report.problems { print("  - \(problem)") }
            }
            if !report.ok {
                throw TSBackupError(.failed, "Backup \(id) is damaged or incomplete (\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")); do not restore it. Take a new backup.")
            }
        }
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

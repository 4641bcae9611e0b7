import Foundation
import TSBackup
import TSBackupSandbox

/// `tsbackup-bench --corruption`: the corruption campaign of issue 14. One throwaway cluster with
/// the small sample data set and one moto server; a backup in each of a local and an S3
/// repository, unencrypted and encrypted; then every change of ``CorruptionCampaign`` on each,
/// checked by the real `tsbackup verify`. Prints the table; exits 1 on any miss.
struct CorruptionRun {
    var tsbackup: String
    var flips: Int
    var truncations: Int
    var seed: UInt64
    var log: @Sendable (String) -> Void

    struct Row: Sendable {
        var repository: String
        var encrypted: Bool
        var kind: CorruptionCampaign.ChangeKind
        var tally: CorruptionCampaign.Tally
        var perClass: [String: CorruptionCampaign.Tally]
    }

    /// Returns whether every change was detected and named.
    func run() async throws -> Bool {
        let started = Date()
        log("corruption campaign: \(flips) flips and \(truncations) truncations per repository kind and encryption, seed \(seed), \(tsbackup)")
        let rows = try await SandboxCluster.with { cluster in
            try await cluster.createDatabase("corruption")
            try await cluster.withSuperuser(database: "corruption") { try await SampleData(.small).load(into: $0) }
            return try await MotoServer.with { moto in
                let work = try makeWorkDirectory()
                defer { try? FileManager.default.removeItem(atPath: work) }
                let bucket = "tsbackup-corruption"
                let admin = try await moto.client(bucket: bucket, create: true)
                defer { Task { try? await admin.shutdown() } }
                let keyFile = work + "/key"
                // A raw 256-bit key (64 hex digits): the same authenticated encryption as a
                // passphrase without scrypt's deliberate cost on each of the ~500 verify runs.
                let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
                try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: keyFile))
                chmod(keyFile, 0o600)
                // The four campaigns touch four repositories: run them side by side.
                let env0 = moto.environment()
                let password = cluster.superuserPassword
                let url = cluster.url(database: "corruption")
                let tsbackup = tsbackup, flips = flips, truncations = truncations, seed = seed, log = log
                let rows = try await withThrowingTaskGroup(of: [Row].self) { group in
                    for (kind, encrypted) in [("local", false), ("local", true), ("s3", false), ("s3", true)] {
                        group.addTask {
                            var env = env0
                            env["PGPASSWORD"] = password
                            env["TSBACKUP_SCRATCH_DIR"] = work
                            if encrypted { env["TSBACKUP_ENCRYPTION_KEY_FILE"] = keyFile }
                            let name = "\(kind)-\(encrypted ? "encrypted" : "plain")"
                            let repository = kind == "local" ? work + "/repo-" + name : "s3://\(bucket)/\(name)"
                            let backup = try await ProcessRunner.run(tsbackup, ["backup", "--db", url, "--repo", repository, "--json"],
                                                                     environment: env.mapValues { Optional($0) })
                            guard backup.exitCode == 0 else { throw SandboxError("backup to \(repository) failed: \(backup.standardError)") }
                            let summary = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(backup.standardOutput.utf8))
                            let store: CorruptionCampaign.Store = kind == "local"
                                ? .local(directory: repository + "/backups/" + summary.id)
                                : .s3(client: admin, prefix: "\(name)/backups/\(summary.id)/")
                            let campaign = CorruptionCampaign(tsbackup: tsbackup, repository: repository, environment: env, id: summary.id, store: store)
                            let changes = try await campaign.plan(flips: flips, truncations: truncations, seed: seed, manifestShare: 0.1)
                            let files = Set(changes.map(\.file)).count
                            log("\(name): backup \(summary.id), \(files) files; \(changes.count) changes")
                            let total = changes.count
                            let results = try await campaign.run(changes) { n, result in
                                if !result.detected || !result.named { log("  MISS \(name) \(result.change): \(result.output)") }
                                if (n + 1) % 50 == 0 { log("  \(name): \(n + 1)/\(total)") }
                            }
                            var rows: [Row] = []
                            for changeKind in [CorruptionCampaign.ChangeKind.flip, .truncation] {
                                let subset = results.filter { $0.change.kind == changeKind }
                                var perClass: [String: CorruptionCampaign.Tally] = [:]
                                for fileClass in Set(subset.map { CorruptionCampaign.fileClass($0.change.file) }) {
                                    perClass[fileClass] = CorruptionCampaign.Tally(subset.filter { CorruptionCampaign.fileClass($0.change.file) == fileClass })
                                }
                                rows.append(Row(repository: kind, encrypted: encrypted, kind: changeKind, tally: CorruptionCampaign.Tally(subset), perClass: perClass))
                            }
                            return rows
                        }
                    }
                    var all: [Row] = []
                    for try await rows in group { all += rows }
                    let order = ["local-false", "local-true", "s3-false", "s3-true"]
                    return all.sorted { (order.firstIndex(of: "\($0.repository)-\($0.encrypted)")!, $0.kind.rawValue) < (order.firstIndex(of: "\($1.repository)-\($1.encrypted)")!, $1.kind.rawValue) }
                }
                return rows
            }
        }
        var table = TextTable(header: ["REPOSITORY", "ENCRYPTED", "CHANGE", "CHANGES", "DETECTED", "NAMED", "MISSED", "manifest.json", "toc.dat", "roles.sql", "data files"])
        var misses: [String] = []
        var changes = 0, detected = 0, named = 0
        for row in rows {
            func cell(_ fileClass: String) -> String {
                guard let tally = row.perClass[fileClass] else { return "-" }
                return "\(tally.named)/\(tally.changes)"
            }
            table.add([row.repository, row.encrypted ? "yes" : "no", row.kind == .flip ? "flips" : "truncations", String(row.tally.changes),
                       String(row.tally.detected), String(row.tally.named), String(row.tally.changes - row.tally.named),
                       cell("manifest.json"), cell("toc.dat"), cell("roles.sql"), cell("data files")])
            misses += row.tally.missed.map { "\(row.repository) \(row.encrypted ? "encrypted" : "plain"): \($0)" }
            changes += row.tally.changes
            detected += row.tally.detected
            named += row.tally.named
        }
        log("\n== Corruption campaign (each change alone; detected = verify exit != 0; named = verify names the file; per file kind: named/changes)")
        log(table.render())
        let rate = { (n: Int) in changes == 0 ? "-" : String(format: "%.2f%%", Double(n) * 100 / Double(changes)) }
        log("\nTotal: \(changes) changes, \(detected) detected (\(rate(detected))), \(named) detected and named (\(rate(named))), \(changes - named) missed; \(Int(Date().timeIntervalSince(started))) s")
        if !misses.isEmpty {
            log("\nMisses:")
            for miss in misses { log("  \(miss)") }
        }
        return misses.isEmpty
    }

    func makeWorkDirectory() throws -> String {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let directory = base + "/tsbackup-corruption-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }
}

import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Scratch databases of rehearsals left on a server (there must be none after a rehearsal).
func rehearsalLeftovers(_ cluster: SandboxCluster) async throws -> [String] {
    try await cluster.withSuperuser {
        try await $0.values("SELECT datname::text FROM pg_database WHERE datname LIKE \(Rehearsal.scratchPrefix + "%") ORDER BY 1", as: String.self)
    }
}

@Suite("restore rehearsals: the newest backup restored, verified and dropped")
struct RehearsalTests {
    @Test("a rehearsal of a good backup passes with every check and leaves no scratch database")
    func passes() async throws {
        let backup = try await BackedUpDatabase.make("rhok")
        defer { backup.scratch.remove() }
        let source = backup.database
        var request = Rehearsal.Request(database: "metrics", repository: RepositoryAccess(path: backup.repository),
                                        server: backup.cluster.settings(), belongs: { $0.source.database == source })
        request.jobs = 2
        let result = await Rehearsal.run(request)
        #expect(result.ok, "\(result.error ?? "")")
        #expect(result.backupID == backup.id)
        #expect(result.error == nil)
        #expect(result.scratchDropped)
        let scratch = try #require(result.scratchDatabase)
        #expect(scratch.hasPrefix(Rehearsal.scratchPrefix + "metrics_"))
        let report = try #require(result.report)
        #expect(report.database == scratch)
        #expect(!report.checks.isEmpty)
        #expect(report.checks.allSatisfy { $0.ok })
        // The verification covered the hypertables' rows, not just the restore's exit status.
        #expect(report.checks.contains { $0.subject.contains("conditions") })
        #expect(try await databaseExists(backup.cluster, scratch) == false)
        #expect(try await rehearsalLeftovers(backup.cluster).contains(scratch) == false)
        // The result is what the service stores: it survives a JSON round trip.
        let decoded = try JSONOutput.decode(Rehearsal.Result.self, from: Data(JSONOutput.encode(result).utf8))
        #expect(decoded.ok && decoded.report?.checks.count == report.checks.count)
    }

    @Test("a rehearsal server without TimescaleDB loaded fails the preflight, and no scratch database remains")
    func failsWithoutTimescaleDB() async throws {
        let backup = try await BackedUpDatabase.make("rhbad")
        defer { backup.scratch.remove() }
        let source = backup.database
        try await SandboxCluster.with(.init(preloadTimescaleDB: false)) { bare in
            let request = Rehearsal.Request(database: "metrics", repository: RepositoryAccess(path: backup.repository),
                                            server: bare.settings(), belongs: { $0.source.database == source })
            let result = await Rehearsal.run(request)
            #expect(!result.ok)
            #expect(result.backupID == backup.id)
            #expect(result.error != nil)
            #expect(result.scratchDropped)
            // It stopped in the preflight, before creating anything.
            let steps = try #require(result.report?.steps)
            #expect(steps.last?.name == "preflight")
            #expect(steps.last?.ok == false)
            #expect(result.report?.checks.isEmpty == true)
            #expect(try await rehearsalLeftovers(bare).isEmpty)
        }
    }

    @Test("a database with no complete backup is a failed rehearsal that names the cause")
    func nothingToRehearse() async throws {
        let scratch = try ScratchDirectory("rhnone")
        defer { scratch.remove() }
        let cluster = try await SharedCluster.shared.cluster()
        // An empty repository: created by a backup of another database, then filtered out.
        let (_, other) = try await makeSampleDatabase("rhother")
        _ = try await runBackup(cluster, other, repository: scratch.path + "/repo")
        let request = Rehearsal.Request(database: "nothing", repository: RepositoryAccess(path: scratch.path + "/repo"),
                                        server: cluster.settings(), belongs: { $0.source.database == "no_such_database" })
        let result = await Rehearsal.run(request)
        #expect(!result.ok)
        #expect(result.backupID == nil)
        #expect(result.scratchDatabase == nil)
        #expect(result.error != nil)
        #expect(result.nothingToRehearse == true)
    }
}

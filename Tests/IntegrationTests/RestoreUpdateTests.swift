import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// `restore --update-extension`. Only one TimescaleDB version is built here, so the real update
/// statement is exercised with the same version (forced past the no-op through a test-only
/// variable) and with a version that has no update path (the failure path).
@Suite("restore with --update-extension")
struct RestoreUpdateTests {
    static let force = ["TSBACKUP_TEST_FORCE_EXTENSION_UPDATE": "1"]

    func extensionVersions(_ cluster: SandboxCluster, _ database: String) async throws -> (String, String) {
        try await cluster.withSuperuser(database: database) {
            try await $0.row(
                """
                SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                       (SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version')
                """, as: (String, String).self)
        }
    }

    @Test("an update to the version the backup already has is reported as not needed; versions are in the report")
    func sameVersionIsANoOp() async throws {
        let backup = try await BackedUpDatabase.make("upnoop", backupOptions: [])
        defer { backup.scratch.remove() }
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        let into = uniqueDatabaseName("noop")
        let result = try await backup.restore(["--into", into, "--update-extension", "--json"])
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.ok)
        let update = try #require(report.extensionUpdate)
        #expect(update.status == .notNeeded)
        #expect(update.fromVersion == installed && update.toVersion == installed)
        #expect(!report.steps.contains { $0.name.hasPrefix("update TimescaleDB") })
        let versions = try #require(report.versions)
        #expect(versions.backupTimescaleDB == installed)
        #expect(versions.targetDefault == installed)
        #expect(versions.targetInstallable.contains(installed))
        #expect(versions.updatePathExists == nil)
        // Named explicitly: the same.
        let named = try await backup.restore(["--into", uniqueDatabaseName("noop2"), "--update-extension=\(installed)", "--json"])
        #expect(named.exitCode == 0)
        #expect(try JSONOutput.decode(Restore.Report.self, from: Data(named.standardOutput.utf8)).extensionUpdate?.status == .notNeeded)
        // A version string that could smuggle SQL is a usage error.
        let bad = try await backup.restore(["--into", uniqueDatabaseName("bad"), "--update-extension=2.19.3';DROP"])
        #expect(bad.exitCode == 64)
    }

    @Test("the real ALTER EXTENSION UPDATE, as a fresh session's first statement, then a second full verification")
    func forcedUpdateVerifiesTwice() async throws {
        let backup = try await BackedUpDatabase.make("upforce", backupOptions: ["--checksums"])
        defer { backup.scratch.remove() }
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        let into = uniqueDatabaseName("forced")
        let result = try await backup.restore(["--into", into, "--update-extension", "--jobs", "2", "--json"], environment: Self.force)
        #expect(result.exitCode == 0, "\(result.standardOutput) \(result.standardError)")
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(report.ok)
        let update = try #require(report.extensionUpdate)
        // Had anything loaded TimescaleDB's library before the ALTER in that session, TimescaleDB
        // would have refused it ("cannot be updated after the old version has already been loaded").
        #expect(update.status == .updated, "\(update.error ?? "")")
        #expect(update.installedVersion == installed && update.catalogVersion == installed && update.defaultVersion == installed)
        // Both verifications, each complete.
        #expect(report.checks.contains { $0.check == "content hash" && $0.ok })
        #expect(update.checks.contains { $0.check == "TimescaleDB installed version" && $0.ok })
        #expect(update.checks.contains { $0.check == "content hash" && $0.ok })
        #expect(update.checks.contains { $0.check == "TimescaleDB scheduler" && $0.ok })
        #expect(update.checks.contains { $0.check == "background jobs" })
        #expect(update.checks.allSatisfy { $0.ok })
        let names = report.steps.map(\.name)
        let updateStep = try #require(names.firstIndex { $0.hasPrefix("update TimescaleDB") })
        let firstVerify = try #require(names.firstIndex { $0.hasPrefix("verify against the manifest") })
        let secondVerify = try #require(names.firstIndex { $0.hasPrefix("verify again at") })
        let checkpoint = try #require(names.lastIndex(of: "make durable (flush WAL)"))
        #expect(firstVerify < updateStep && updateStep < secondVerify && secondVerify < checkpoint)
        #expect(try await contentDigests(backup.cluster, into) == contentDigests(backup.cluster, backup.database))
    }

    @Test("a failing update rolls back: the database stays verified at the backup's version, nothing is promoted")
    func failedUpdateKeepsTheVerifiedDatabase() async throws {
        let backup = try await BackedUpDatabase.make("upfail", backupOptions: [])
        defer { backup.scratch.remove() }
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        let live = uniqueDatabaseName("live")
        try await backup.cluster.createDatabase(live, timescaleDB: false)
        try await backup.cluster.withSuperuser(database: live) { try await $0.execute("CREATE TABLE still_here (x int)") }

        // Without the test hook, preflight refuses: 9.9.9-test is not installable; nothing is created.
        let refusedInto = uniqueDatabaseName("refused")
        let refused = try await backup.restore(["--into", refusedInto, "--update-extension=9.9.9-test", "--promote-to", live, "--yes"])
        #expect(refused.exitCode == 5)
        #expect(refused.standardError.contains("9.9.9-test") && refused.standardError.contains("not installable"))
        #expect(try await databaseExists(backup.cluster, refusedInto) == false)

        // With it, the real ALTER EXTENSION runs and fails on TimescaleDB's side.
        let into = uniqueDatabaseName("failed")
        let result = try await backup.restore(["--into", into, "--update-extension=9.9.9-test", "--promote-to", live, "--yes", "--json"],
                                              environment: Self.force)
        #expect(result.exitCode == 1, "\(result.standardError)")
        #expect(result.standardError.contains("update TimescaleDB \(installed) to 9.9.9-test"))
        #expect(result.standardError.contains("no update path from version"))  // TimescaleDB's (PostgreSQL's) own words
        #expect(result.standardError.contains("is kept") && result.standardError.contains("nothing was promoted"))
        let report = try JSONOutput.decode(Restore.Report.self, from: Data(result.standardOutput.utf8))
        #expect(!report.ok)
        #expect(report.promotedTo == nil)
        #expect(!report.checks.isEmpty && report.checks.allSatisfy { $0.ok })
        let update = try #require(report.extensionUpdate)
        #expect(update.status == .failed)
        #expect(update.installedVersion == installed && update.catalogVersion == installed)
        #expect(update.error?.contains("no update path") == true)

        // The restored database: there, at the backup's version, with the source's rows, out of restore mode.
        #expect(try await databaseExists(backup.cluster, into))
        let (version, catalog) = try await extensionVersions(backup.cluster, into)
        #expect(version == installed && catalog == installed)
        #expect(try await contentDigests(backup.cluster, into) == contentDigests(backup.cluster, backup.database))
        // The live database was not touched.
        let marker = try await backup.cluster.withSuperuser(database: live) {
            try await $0.value("SELECT to_regclass('public.still_here') IS NOT NULL", as: Bool.self)
        }
        #expect(marker)
        let movedAside = try await backup.cluster.withSuperuser {
            try await $0.value("SELECT count(*) FROM pg_database WHERE datname LIKE \(live + "_before_%")", as: Int64.self)
        }
        #expect(movedAside == 0)
    }

    @Test("update paths come from pg_extension_update_paths on the real server")
    func updatePathsFromTheServer() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
        let rows = try await cluster.withSuperuser { session in
            try await session.rows(
                "SELECT source, target, path FROM pg_extension_update_paths('timescaledb') WHERE source = '2.18.2'",
                as: (String, String, String?).self
            ).map { ExtensionUpdate.PathRow(source: $0.0, target: $0.1, path: $0.2) }
        }
        // TimescaleDB packages ship update scripts from every earlier release to theirs.
        let path = try #require(ExtensionUpdate.path(from: "2.18.2", to: installed, in: rows))
        #expect(path.steps.first == "2.18.2" && path.steps.last == installed)
        #expect(ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .defaultVersion, installable: [installed],
                                       defaultVersion: installed, paths: rows) == .update(from: "2.18.2", to: installed, path: path.path))
        // Nothing leads from the installed version to a made-up one.
        let fromInstalled = try await cluster.withSuperuser { session in
            try await session.rows(
                "SELECT source, target, path FROM pg_extension_update_paths('timescaledb') WHERE source = \(installed)",
                as: (String, String, String?).self
            ).map { ExtensionUpdate.PathRow(source: $0.0, target: $0.1, path: $0.2) }
        }
        #expect(ExtensionUpdate.path(from: installed, to: "9.9.9-test", in: fromInstalled) == nil)
    }

    @Test("inspect names databases whose TimescaleDB is behind the server's default")
    func inspectWarnsAboutOldVersions() async throws {
        try await SandboxCluster.with { cluster in
            let installed = try #require(PostgresInstallation.installedTimescaleDBVersion())
            try await cluster.createDatabase("current")
            try await cluster.createDatabase("older")
            // Only one version is built here: make one database claim an older one, as after a
            // server upgrade without ALTER EXTENSION UPDATE (its library is then missing, which the
            // probe must survive).
            try await cluster.withSuperuser(database: "older") {
                try await $0.execute("UPDATE pg_extension SET extversion = '2.18.2' WHERE extname = 'timescaledb'")
            }
            let result = try await CLI.run(["inspect", "--db", cluster.url(database: "current"), "--json"],
                                           environment: ["PGPASSWORD": cluster.superuserPassword])
            #expect(result.exitCode == 0, "\(result.standardError)")
            let report = try JSONOutput.decode(ServerInspection.self, from: Data(result.standardOutput.utf8))
            #expect(!report.timescaledb.behindDefault)
            #expect(report.timescaledb.databases.contains { $0.database == "current" && $0.version == installed && !$0.behindDefault })
            #expect(report.timescaledb.databases.contains { $0.database == "older" && $0.version == "2.18.2" && $0.behindDefault })
            #expect(report.warnings.contains { $0.contains("\"older\"") && $0.contains("2.18.2") && $0.contains("ALTER EXTENSION timescaledb UPDATE") })
            #expect(!report.warnings.contains { $0.contains("\"current\"") })
        }
    }
}

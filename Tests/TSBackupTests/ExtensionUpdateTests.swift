import Foundation
import Testing
@testable import TSBackup

@Suite("TimescaleDB update decisions, on rows as pg_extension_update_paths returns them")
struct ExtensionUpdateTests {
    /// Rows as the server returns them for source 2.18.2 (real shape: every known version is a
    /// target; `path` is NULL where no chain of scripts leads there).
    let rows: [ExtensionUpdate.PathRow] = [
        .init(source: "2.18.2", target: "2.19.3", path: "2.18.2--2.19.3"),
        .init(source: "2.18.2", target: "2.19.0", path: "2.18.2--2.19.0"),
        .init(source: "2.18.2", target: "2.20.0", path: "2.18.2--2.19.3--2.20.0"),
        .init(source: "2.18.2", target: "2.17.0", path: nil),
    ]

    @Test func pathSteps() {
        #expect(rows[2].steps == ["2.18.2", "2.19.3", "2.20.0"])
        #expect(rows[0].steps == ["2.18.2", "2.19.3"])
        #expect(rows[3].steps.isEmpty)
        #expect(ExtensionUpdate.PathRow(source: "a", target: "b", path: "").steps.isEmpty)
    }

    @Test func noUpdateAskedFor() {
        #expect(ExtensionUpdate.decide(backupVersion: "2.18.2", requested: nil, installable: ["2.18.2", "2.19.3"],
                                       defaultVersion: "2.19.3", paths: rows) == .none)
    }

    @Test func updateToTheDefault() {
        #expect(ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .defaultVersion, installable: ["2.18.2", "2.19.3"],
                                       defaultVersion: "2.19.3", paths: rows) == .update(from: "2.18.2", to: "2.19.3", path: "2.18.2--2.19.3"))
    }

    @Test func updateToANamedVersionAlongAChain() {
        #expect(ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .version("2.20.0"), installable: ["2.18.2", "2.19.3", "2.20.0"],
                                       defaultVersion: "2.20.0", paths: rows) == .update(from: "2.18.2", to: "2.20.0", path: "2.18.2--2.19.3--2.20.0"))
    }

    @Test func sameVersionIsANoOp() {
        #expect(ExtensionUpdate.decide(backupVersion: "2.19.3", requested: .defaultVersion, installable: ["2.19.3"],
                                       defaultVersion: "2.19.3", paths: []) == .noOp(version: "2.19.3"))
        #expect(ExtensionUpdate.decide(backupVersion: "2.19.3", requested: .version("2.19.3"), installable: ["2.19.3"],
                                       defaultVersion: "2.19.3", paths: []) == .noOp(version: "2.19.3"))
    }

    @Test func refusals() {
        func reason(_ decision: ExtensionUpdate.Decision) -> String? {
            if case .refused(let reason) = decision { return reason }
            return nil
        }
        // No path: the NULL row does not count.
        let noPath = ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .version("2.17.5"), installable: ["2.17.5", "2.18.2"],
                                            defaultVersion: "2.18.2", paths: rows)
        #expect(reason(noPath)?.contains("older") == true)
        let missing = ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .version("2.21.0"), installable: ["2.18.2", "2.21.0"],
                                             defaultVersion: "2.21.0", paths: rows)
        #expect(reason(missing)?.contains("no update path from TimescaleDB 2.18.2 to 2.21.0") == true)
        let notInstallable = ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .version("2.20.0"), installable: ["2.18.2", "2.19.3"],
                                                    defaultVersion: "2.19.3", paths: rows)
        #expect(reason(notInstallable)?.contains("not installable") == true)
        let noDefault = ExtensionUpdate.decide(backupVersion: "2.18.2", requested: .defaultVersion, installable: ["2.18.2"],
                                               defaultVersion: nil, paths: rows)
        #expect(reason(noDefault)?.contains("no default") == true)
        // A path whose row has a NULL path is no path.
        #expect(ExtensionUpdate.path(from: "2.18.2", to: "2.17.0", in: rows) == nil)
    }

    @Test func forcedForTests() {
        #expect(ExtensionUpdate.decide(backupVersion: "2.19.3", requested: .version("9.9.9-test"), installable: ["2.19.3"],
                                       defaultVersion: "2.19.3", paths: [], forced: true) == .update(from: "2.19.3", to: "9.9.9-test", path: nil))
        #expect(ExtensionUpdate.decide(backupVersion: "2.19.3", requested: .defaultVersion, installable: ["2.19.3"],
                                       defaultVersion: "2.19.3", paths: [], forced: true) == .update(from: "2.19.3", to: "2.19.3", path: nil))
    }

    @Test func closestInstallable() {
        #expect(ExtensionUpdate.closest(to: "2.18.2", among: ["2.19.3", "2.9.0", "2.17.1", "2.20.0"]) == ["2.17.1", "2.19.3"])
        #expect(ExtensionUpdate.closest(to: "2.18.0", among: ["2.19.3"]) == ["2.19.3"])
        #expect(ExtensionUpdate.closest(to: "2.30.0", among: ["2.19.3", "2.10.0"]) == ["2.19.3"])
        #expect(ExtensionUpdate.closest(to: "2.18.0", among: []).isEmpty)
    }

    @Test func versionStrings() {
        #expect(ExtensionUpdate.isPlausibleVersion("2.19.3"))
        #expect(ExtensionUpdate.isPlausibleVersion("9.9.9-test"))
        #expect(ExtensionUpdate.isPlausibleVersion("2.0.0-rc4"))
        #expect(!ExtensionUpdate.isPlausibleVersion(""))
        #expect(!ExtensionUpdate.isPlausibleVersion("2.19.3'; DROP DATABASE x; --"))
        #expect(!ExtensionUpdate.isPlausibleVersion("2.18.2--2.19.3"))
        #expect(!ExtensionUpdate.isPlausibleVersion("-2.19"))
        #expect(!ExtensionUpdate.isPlausibleVersion("2.19 3"))
    }

    @Test func updateSQLIsOneStringWithTheAlterFirst() {
        let sql = ExtensionUpdate.updateSQL(to: "2.19.3")
        #expect(sql.hasPrefix("ALTER EXTENSION timescaledb UPDATE TO '2.19.3';"))
        #expect(sql.contains("RAISE EXCEPTION"))
        #expect(!sql.contains("BEGIN;") && !sql.contains("COMMIT"))
    }

    @Test func psqlErrorsKeepTheServersWords() {
        let stderr = """
            NOTICE:  something harmless
            psql:<stdin>:1: ERROR:  extension "timescaledb" has no update path from version "2.19.3" to version "9.9.9-test"
            """
        #expect(ExtensionUpdate.serverMessage(fromPsqlError: stderr)
                == #"ERROR: extension "timescaledb" has no update path from version "2.19.3" to version "9.9.9-test""#)
        let withHint = """
            ERROR:  extension "timescaledb" cannot be updated after the old version has already been loaded
            HINT:  Start a new session and execute ALTER EXTENSION as the first command.
            """
        let message = ExtensionUpdate.serverMessage(fromPsqlError: withHint)
        #expect(message.hasPrefix("ERROR: extension") && message.contains("HINT: Start a new session"))
    }
}

@Suite("the restore report with an extension update")
struct RestoreReportShapeTests {
    func report(status: Restore.Report.ExtensionUpdateReport.Status) -> Restore.Report {
        let check = Restore.Report.Check(subject: "public.conditions", check: "rows", expected: "2016", actual: "2016", ok: true)
        var report = Restore.Report(id: "20261127-0600-abcd", database: "app_restore", ok: status == .updated, steps: [],
                                    checks: [check], warnings: [], promotedTo: nil, previousDatabase: nil, rollback: nil,
                                    keptFailedDatabase: false)
        report.versions = .init(backupPostgresMajor: 15, targetPostgres: "15.20", backupTimescaleDB: "2.18.2",
                                targetInstallable: ["2.18.2", "2.19.3"], targetDefault: "2.19.3", updateTarget: "2.19.3",
                                updatePath: "2.18.2--2.19.3", updatePathExists: true)
        report.extensionUpdate = .init(fromVersion: "2.18.2", toVersion: "2.19.3", path: "2.18.2--2.19.3", status: status,
                                       installedVersion: status == .updated ? "2.19.3" : "2.18.2", defaultVersion: "2.19.3",
                                       catalogVersion: status == .updated ? "2.19.3" : "2.18.2",
                                       error: status == .failed ? "ALTER EXTENSION failed: ERROR: boom" : nil,
                                       checks: status == .updated ? [check, .init(subject: "database", check: "TimescaleDB installed version", expected: "2.19.3", actual: "2.19.3", ok: true)] : [])
        return report
    }

    @Test func readableShowsBothVerificationsAndBothVersions() {
        let text = report(status: .updated).renderReport()
        #expect(text.contains("Verification at TimescaleDB 2.18.2 (the backup's version)"))
        #expect(text.contains("Extension update 2.18.2 -> 2.19.3: updated"))
        #expect(text.contains("Verification after the update, at TimescaleDB 2.19.3"))
        #expect(text.contains("2.18.2 -> 2.19.3: exists (2.18.2--2.19.3)"))
        #expect(text.contains("TimescaleDB installed version"))

        let failed = report(status: .failed).renderReport()
        #expect(failed.contains("Extension update 2.18.2 -> 2.19.3: failed"))
        #expect(failed.contains("ERROR: boom"))
        #expect(!failed.contains("Verification after the update"))
    }

    @Test func jsonKeysAndRoundTrip() throws {
        let original = report(status: .updated)
        let json = try JSONOutput.encode(original)
        for key in ["\"extension_update\"", "\"versions\"", "\"from_version\"", "\"to_version\"", "\"installed_version\"",
                    "\"catalog_version\"", "\"default_version\"", "\"backup_timescaledb\"", "\"target_installable\"",
                    "\"update_path_exists\"", "\"updated\""] {
            #expect(json.contains(key), "\(key)")
        }
        let decoded = try JSONOutput.decode(Restore.Report.self, from: Data(json.utf8))
        #expect(decoded.extensionUpdate == original.extensionUpdate)
        #expect(decoded.versions == original.versions)
        // Reports written before these fields existed still decode.
        let old = #"{"id":"x","database":"d","ok":true,"steps":[],"checks":[],"warnings":[],"kept_failed_database":false}"#
        let decodedOld = try JSONOutput.decode(Restore.Report.self, from: Data(old.utf8))
        #expect(decodedOld.extensionUpdate == nil && decodedOld.versions == nil)
    }
}

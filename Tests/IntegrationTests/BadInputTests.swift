import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Every kind of bad input ends in one clear message on stderr, a specific non-zero exit code, and
/// no secret in any output.
@Suite("inspect with bad input")
struct BadInputTests {
    func expectFailure(_ result: ProcessResult, exitCode: Int32, mentioning words: [String], secrets: [String] = [],
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.exitCode == exitCode, "stderr: \(result.standardError)", sourceLocation: sourceLocation)
        #expect(result.standardOutput.isEmpty, sourceLocation: sourceLocation)
        let message = result.standardError
        #expect(message.hasPrefix("tsbackup: error: "), sourceLocation: sourceLocation)
        // One paragraph: a single line of text.
        #expect(message.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1, "\(message)", sourceLocation: sourceLocation)
        for word in words {
            #expect(message.contains(word), "expected \"\(word)\" in: \(message)", sourceLocation: sourceLocation)
        }
        for secret in secrets {
            #expect(!message.contains(secret) && !result.standardOutput.contains(secret), sourceLocation: sourceLocation)
        }
    }

    @Test("malformed URLs are usage errors", arguments: [
        "postgres://user:secret@[::1:5432/db",
        "postgres://user:secret@host:port/db",
        "mysql://user:secret@host/db",
        "postgres://user:secret@host/db?sslmode=sometimes",
        "postgres://user:secret@host/db?frobnicate=1",
        "just some words",
    ])
    func malformedURL(url: String) async throws {
        let result = try await CLI.run(["inspect", "--db", url])
        expectFailure(result, exitCode: 64, mentioning: ["--db"], secrets: ["secret"])
    }

    // Nothing is reached: the variables are read before any connection or repository access.
    @Test("a wait set to something other than whole seconds is a usage error naming its variable", arguments: [
        (["base-backup", "--db", "postgres://postgres@127.0.0.1:1/postgres", "--repo", "/nonexistent/repo"], "TSBACKUP_ARCHIVE_WAIT_SECONDS"),
        (["restore", "20260101T000000Z", "--repo", "/nonexistent/repo", "--target", "postgres://postgres@127.0.0.1:1/postgres"], "TSBACKUP_CLEANUP_WAIT_SECONDS"),
        (["import-hypertable", "20260101T000000Z", "--repo", "/nonexistent/repo", "--target", "postgres://postgres@127.0.0.1:1/postgres"], "TSBACKUP_CLEANUP_WAIT_SECONDS"),
        (["recover", "--to-latest", "--repo", "/nonexistent/repo", "--pgdata", "/nonexistent/pgdata"], "TSBACKUP_SCHEDULER_WAIT_SECONDS"),
    ])
    func badWaitSetting(arguments: [String], variable: String) async throws {
        let result = try await CLI.run(arguments, environment: [variable: "soon"])
        expectFailure(result, exitCode: 64, mentioning: [variable, "whole number of seconds"])
    }

    /// The service resolves its connections as --db is resolved: its environment's
    /// PGCONNECT_TIMEOUT is read (and a bad one stops the start, naming the config's line), as
    /// are each connection's connect_timeout and TSBACKUP_CLEANUP_WAIT_SECONDS.
    @Test("tsbackup serve refuses a PGCONNECT_TIMEOUT, connect_timeout or TSBACKUP_CLEANUP_WAIT_SECONDS that is not whole seconds")
    func serveReadsConnectionSettingsFromItsEnvironment() async throws {
        let work = NSTemporaryDirectory() + "tsbackup-badserve-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let port = try SandboxCluster.freeLoopbackPort()
        func config(_ extra: String) throws -> String {
            let path = work + "/serve.yaml"
            try """
                listen: {host: 127.0.0.1, port: \(port)}
                repository: {url: \(work)/repo}
                state_file: \(work)/state.sqlite
                databases:
                  metrics:
                    host: 127.0.0.1
                    port: 1
                    dbname: metrics\(extra)

                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let badVariable = try await CLI.run(["serve", "--config", try config("")], environment: ["PGCONNECT_TIMEOUT": "soon"])
        expectFailure(badVariable, exitCode: 64, mentioning: ["serve.yaml:", "PGCONNECT_TIMEOUT", "\"soon\""])
        let badKey = try await CLI.run(["serve", "--config", try config("\n    connect_timeout: later")])
        expectFailure(badKey, exitCode: 64, mentioning: ["serve.yaml:9", "connect_timeout"])
        let badWait = try await CLI.run(["serve", "--config", try config("")], environment: ["TSBACKUP_CLEANUP_WAIT_SECONDS": "soon"])
        expectFailure(badWait, exitCode: 64, mentioning: ["TSBACKUP_CLEANUP_WAIT_SECONDS"])
    }

    @Test("a refused connection says to check the server and port")
    func connectionRefused() async throws {
        let port = try SandboxCluster.freeLoopbackPort()
        let result = try await CLI.run(["inspect", "--db", "postgres://postgres:hunter2@127.0.0.1:\(port)/postgres"])
        expectFailure(result, exitCode: 2, mentioning: ["127.0.0.1:\(port)", "connection refused", "running"], secrets: ["hunter2"])
    }

    @Test("a wrong password is an authentication failure that never shows the password")
    func wrongPassword() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let wrong = "not-the-password-\(UUID().uuidString.prefix(6))"
        let viaURL = try await CLI.run(["inspect", "--db", "postgres://postgres:\(wrong)@127.0.0.1:\(cluster.port)/postgres"])
        expectFailure(viaURL, exitCode: 3, mentioning: ["Authentication failed", "\"postgres\"", "PGPASSWORD"], secrets: [wrong, cluster.superuserPassword])

        let viaEnvironment = try await CLI.run(["inspect", "--db", cluster.url(database: "postgres")], environment: ["PGPASSWORD": wrong])
        expectFailure(viaEnvironment, exitCode: 3, mentioning: ["Authentication failed", "PGPASSWORD"], secrets: [wrong])

        let none = try await CLI.run(["inspect", "--db", cluster.url(database: "postgres")])
        expectFailure(none, exitCode: 3, mentioning: ["password", "~/.pgpass"])
    }

    @Test("an unknown role is refused with advice on the user name")
    func unknownRole() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let result = try await CLI.run(["inspect", "--db", cluster.url(database: "postgres", user: "nobody_here")],
                                       environment: ["PGPASSWORD": "whatever-secret"])
        #expect(result.exitCode == 3, "\(result.standardError)")
        #expect(!result.standardError.contains("whatever-secret"))
    }

    @Test("an unknown database is named, with how to list the real ones")
    func unknownDatabase() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let result = try await CLI.run(["inspect", "--db", cluster.url(database: "no_such_db")],
                                       environment: ["PGPASSWORD": cluster.superuserPassword])
        expectFailure(result, exitCode: 4, mentioning: ["\"no_such_db\" does not exist", "psql -l"], secrets: [cluster.superuserPassword])
    }

    @Test("the password file is used, and ignored with a warning when others can read it")
    func passwordFile() async throws {
        let cluster = try await SharedCluster.shared.cluster()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("pgpass").path
        try "127.0.0.1:\(cluster.port):*:postgres:\(cluster.superuserPassword)\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let ok = try await CLI.run(["inspect", "--json", "--db", cluster.url(database: "postgres")], environment: ["PGPASSFILE": file])
        #expect(ok.exitCode == 0, "\(ok.standardError)")

        chmod(file, 0o644)
        let ignored = try await CLI.run(["inspect", "--db", cluster.url(database: "postgres")], environment: ["PGPASSFILE": file])
        #expect(ignored.exitCode == 3)
        #expect(!ignored.standardError.contains(cluster.superuserPassword))
    }

    @Test("a server without TimescaleDB loaded is a precondition failure")
    func serverWithoutTimescaleDB() async throws {
        try await SandboxCluster.with(.init(preloadTimescaleDB: false)) { cluster in
            let result = try await CLI.run(["inspect", "--db", cluster.url(database: "postgres")],
                                           environment: ["PGPASSWORD": cluster.superuserPassword])
            #expect(result.exitCode == 5)
            #expect(result.standardError.contains("shared_preload_libraries"))
            #expect(result.standardError.contains("restart"))
            // The report is still printed, so the user sees what the server has.
            #expect(result.standardOutput.contains("not installed in this database"))
        }
    }

    @Test("a lock table too small for pg_dump is reported with the setting to raise")
    func lockBudgetTooSmall() async throws {
        try await SandboxCluster.with(.init(settings: ["max_locks_per_transaction": "10", "max_connections": "8"])) { cluster in
            try await cluster.createDatabase("many")
            try await cluster.withSuperuser(database: "many") { try await SampleData(.small).load(into: $0) }
            let result = try await CLI.run(["inspect", "--json", "--db", cluster.url(database: "many")],
                                           environment: ["PGPASSWORD": cluster.superuserPassword])
            #expect(result.exitCode == 0, "\(result.standardError)")
            let report = try JSONOutput.decode(ServerInspection.self, from: Data(result.standardOutput.utf8))
            let budget = report.lockBudget
            #expect(budget.budget == 80)
            #expect(budget.relationsToLock > 67)
            #expect(budget.sufficient == false)
            let slots = budget.maxConnections + budget.maxPreparedTransactions
            #expect(budget.recommendedMaxLocksPerTransaction * slots * 10 >= budget.relationsToLock * 12)
            #expect(report.warnings.contains { $0.contains("max_locks_per_transaction = \(budget.recommendedMaxLocksPerTransaction)") })
        }
    }
}

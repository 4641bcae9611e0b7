import Foundation
import Testing
@testable import TSBackup

@Suite("connection strings, environment and password file")
struct ConnectionSettingsTests {
    let noEnvironment: [String: String] = [:]

    func resolve(_ text: String?, _ environment: [String: String] = [:], home: String = "/nonexistent") throws(TSBackupError) -> ConnectionSettings {
        try ConnectionSettings.resolve(text, environment: environment, homeDirectory: home, osUserName: "osuser")
    }

    @Test func fullURL() throws {
        let s = try resolve("postgres://alice:s%40cret@db.example.com:6543/metrics?sslmode=require&application_name=nightly")
        #expect(s.host == "db.example.com")
        #expect(s.port == 6543)
        #expect(s.user == "alice")
        #expect(s.password == "s@cret")
        #expect(s.passwordSource == .connectionString)
        #expect(s.database == "metrics")
        #expect(s.sslMode == .require)
        #expect(s.applicationName == "nightly")
    }

    @Test func postgresqlSchemeAndIPv6() throws {
        let s = try resolve("postgresql://bob@[::1]:5433/db")
        #expect(s.host == "::1")
        #expect(s.port == 5433)
        #expect(s.displayName == "bob@[::1]:5433/db")
    }

    @Test func missingPartsComeFromEnvironmentThenDefaults() throws {
        let s = try resolve("postgres:///warehouse", ["PGHOST": "10.1.2.3", "PGPORT": "7000", "PGUSER": "envuser", "PGPASSWORD": "envpw"])
        #expect(s.host == "10.1.2.3")
        #expect(s.port == 7000)
        #expect(s.user == "envuser")
        #expect(s.database == "warehouse")
        #expect(s.password == "envpw")
        #expect(s.passwordSource == .environment)

        let defaults = try resolve(nil, ["PGHOST": "h"])
        #expect(defaults.port == 5432)
        #expect(defaults.user == "osuser")
        #expect(defaults.database == "osuser")
        #expect(defaults.sslMode == .prefer)
        #expect(defaults.password == nil)
    }

    @Test func urlWinsOverEnvironment() throws {
        let s = try resolve("postgres://u:urlpw@h:1/d", ["PGHOST": "other", "PGPASSWORD": "envpw", "PGDATABASE": "x"])
        #expect(s.host == "h")
        #expect(s.database == "d")
        #expect(s.password == "urlpw")
    }

    @Test func hostQueryParameterNamesASocketDirectory() throws {
        let s = try resolve("postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql&port=5433")
        #expect(s.host == "/var/run/postgresql")
        #expect(s.usesUnixSocket)
        #expect(s.port == 5433)
    }

    @Test func keywordValueForm() throws {
        let s = try resolve("host=localhost port=5433 dbname='my db' user=carol password='it\\'s'")
        #expect(s.host == "localhost")
        #expect(s.database == "my db")
        #expect(s.user == "carol")
        #expect(s.password == "it's")
    }

    @Test("malformed strings are usage errors that never echo the password", arguments: [
        "postgres://u:topsecret@h:notaport/d",
        "postgres://u:topsecret@[::1/d",
        "http://u:topsecret@h/d",
        "postgres://u:topsecret@h/d?sslmode=maybe",
        "postgres://u:topsecret@h/d?bogus=1",
        "postgres://u:topsecret@h1,h2/d",
        "host='unterminated password=topsecret",
        "postgres://u:topsecret@h:99999/d",
    ])
    func malformed(text: String) {
        do {
            _ = try resolve(text)
            Issue.record("expected an error for \(text)")
        } catch {
            #expect(error.kind == .usage)
            #expect(!error.message.contains("topsecret"))
            #expect(error.message.contains("--db") || error.message.contains("PGPORT"))
        }
    }

    @Test func passwordNeverInDescriptions() throws {
        let s = try resolve("postgres://u:topsecret@h/d")
        #expect(!"\(s)".contains("topsecret"))
        #expect(!String(reflecting: s).contains("topsecret"))
        #expect(s.displayName == "u@h:5432/d")
        #expect(s.libpqEnvironment["PGPASSWORD"] == "topsecret")
    }

    @Test func passwordFileMatching() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent(".pgpass").path
        try """
            # comment
            other:5432:*:u:wrong
            h:5432:d:u:pa\\:ss
            *:*:*:u:fallback
            localhost:5432:*:sock:socketpw

            """.write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)

        let exact = try resolve("postgres://u@h/d", home: directory.path)
        #expect(exact.password == "pa:ss")
        #expect(exact.passwordSource == .passwordFile)
        #expect(try resolve("postgres://u@elsewhere/x", home: directory.path).password == "fallback")
        #expect(try resolve("postgresql://sock@%2Ftmp/db", home: directory.path).password == "socketpw")
        #expect(try resolve("postgres://nobody@h/d", home: directory.path).password == nil)
        #expect(try resolve("postgres://u@h/d", ["PGPASSFILE": file]).password == "pa:ss")

        chmod(file, 0o644)
        let unsafe = try resolve("postgres://u@h/d", home: directory.path)
        #expect(unsafe.password == nil)
        #expect(unsafe.warnings.contains { $0.contains("chmod 0600") })
    }

    /// The service resolves its config's connections through the same function as --db.
    @Test func parametersResolveLikeAConnectionString() throws {
        let environment = ["PGCONNECT_TIMEOUT": "45", "PGPASSWORD": "from-env", "PGSSLROOTCERT": "/etc/ca.pem"]
        let fromParameters = try ConnectionSettings.resolve(parameters: ["host": "db", "port": "5433", "user": "u", "dbname": "d"],
                                                            environment: environment, homeDirectory: "/nonexistent", osUserName: "osuser")
        #expect(fromParameters == (try resolve("postgres://u@db:5433/d", environment)))
        #expect(fromParameters.connectTimeoutSeconds == 45)
        #expect(fromParameters.sslRootCertificate == "/etc/ca.pem")
        // Given parameters win over the environment.
        let given = try ConnectionSettings.resolve(parameters: ["host": "db", "connect_timeout": "7"], environment: environment, homeDirectory: "/nonexistent")
        #expect(given.connectTimeoutSeconds == 7)
        // A caller that brings its own password: neither PGPASSWORD nor a password file is read.
        let own = try ConnectionSettings.resolve(parameters: ["host": "db"], environment: environment, homeDirectory: "/nonexistent", lookUpPassword: false)
        #expect(own.password == nil && own.passwordSource == .none)
        #expect(throws: TSBackupError.self) {
            try ConnectionSettings.resolve(parameters: ["host": "db"], environment: ["PGCONNECT_TIMEOUT": "soon"], lookUpPassword: false)
        }
    }
}

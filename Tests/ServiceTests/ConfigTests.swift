import Foundation
import Testing
import TSBackup
@testable import TSBackupService

@Suite struct ConfigTests {
    let hash = TokenHash.hex(of: "secret-token")

    @Test func readsAFullConfig() throws {
        let yaml = """
            listen:
              host: 127.0.0.1
              port: 9090
            repository:
              url: /tmp/repo
            state_file: /tmp/state.sqlite
            jobs:
              max_concurrent: 3
            rehearsal_targets:
              scratch:
                host: 127.0.0.1
                port: 5433
                user: postgres
            databases:
              metrics:
                host: 127.0.0.1
                port: 5432
                user: backup
                dbname: metrics
                password_env: METRICS_PW
                schedule:
                  cron: "0 3 * * *"
                  time_zone: Europe/Berlin
                retention:
                  keep_last: 7
                  keep_daily: 7
                rehearsal:
                  target: scratch
                  schedule: "0 5 * * 0"
            webhooks:
              - url: http://127.0.0.1:9999/hook
                events: [failure, recovery]
            tokens:
              - name: alice
                sha256: \(hash)
                role: owner
                databases: [metrics]
            """
        let config = try ServiceConfig.parse(yaml, environment: ["METRICS_PW": "pw"])
        #expect(config.listen == .init(host: "127.0.0.1", port: 9090))
        #expect(config.maxConcurrentJobs == 3)
        let db = try #require(config.databases["metrics"])
        #expect(db.connection.passwordEnv == "METRICS_PW")
        #expect(db.schedule == .init(cron: "0 3 * * *", timeZone: "Europe/Berlin"))
        #expect(db.retention?.keepLast == 7)
        #expect(db.rehearsal?.target == "scratch")
        #expect(db.rehearsal?.schedule?.cron == "0 5 * * 0")
        #expect(config.tokens.first?.role == .owner)
        #expect(config.tokens.first?.sha256 == TokenHash.digest(of: "secret-token"))
        #expect(try db.connection.settings(environment: ["METRICS_PW": "pw"]).password == "pw")
    }

    @Test func refusesAnInlinePasswordNamingItsLine() {
        let yaml = """
            repository:
              url: /tmp/repo
            state_file: /tmp/state.sqlite
            databases:
              metrics:
                dbname: metrics
                password: hunter2
            """
        #expect {
            _ = try ServiceConfig.parse(yaml, path: "c.yaml")
        } throws: { error in
            let e = error as? ConfigError
            return e?.line == 7 && e?.message.contains("inline password") == true && !e!.description.contains("hunter2")
        }
    }

    @Test func metricsAuthDefaultsToATokenAndNoneOnlyOnLoopback() throws {
        let base = "repository:\n  url: /tmp/repo\nstate_file: /tmp/state.sqlite\n"
        #expect(try ServiceConfig.parse(base).metricsAuth == .token)
        #expect(try ServiceConfig.parse(base + "metrics:\n  auth: none\n").metricsAuth == .none)
        #expect(try ServiceConfig.parse(base + "listen: {host: \"::1\"}\nmetrics: {auth: none}\n").metricsAuth == .none)
        #expect {
            _ = try ServiceConfig.parse(base + "listen:\n  host: 0.0.0.0\nmetrics:\n  auth: none\n", path: "c.yaml")
        } throws: { error in
            let e = error as? ConfigError
            return e?.line == 7 && e?.message.contains("only allowed when the service listens on loopback") == true
        }
        #expect {
            _ = try ServiceConfig.parse(base + "metrics:\n  auth: basic\n", path: "c.yaml")
        } throws: { error in
            (error as? ConfigError)?.line == 5
        }
    }

    @Test func pointsToTheLineOfASyntaxError() {
        let yaml = "repository:\n  url: /tmp/repo\nstate_file: [unclosed\n"
        #expect {
            _ = try ServiceConfig.parse(yaml, path: "c.yaml")
        } throws: { error in
            (error as? ConfigError)?.line != nil
        }
    }

    @Test func hashesAndComparesTokens() {
        #expect(TokenHash.hex(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(TokenHash.constantTimeEqual(TokenHash.digest(of: "a"), TokenHash.digest(of: "a")))
        #expect(!TokenHash.constantTimeEqual(TokenHash.digest(of: "a"), TokenHash.digest(of: "b")))
    }

    // MARK: connection settings and webhook timeouts, resolved as the CLI resolves them

    static let connectionBase = """
        repository:
          url: /tmp/repo
        state_file: /tmp/state.sqlite
        databases:
          metrics:
            host: 127.0.0.1
            user: backup
            dbname: metrics

        """

    @Test func connectionsHonourPGConnectTimeoutAsTheCLIDoes() throws {
        let environment = ["PGCONNECT_TIMEOUT": "37"]
        let config = try ServiceConfig.parse(Self.connectionBase, environment: environment)
        let settings = try #require(config.databases["metrics"]).connection.settings(environment: environment)
        #expect(settings.connectTimeoutSeconds == 37)
        let restore = try #require(config.databases["metrics"]).restoreConnection.settings(environment: environment)
        #expect(restore.connectTimeoutSeconds == 37)
        // The CLI's --db for the same server resolves to the same settings.
        let cli = try ConnectionSettings.resolve("postgres://backup@127.0.0.1:5432/metrics?sslmode=prefer", environment: environment, homeDirectory: "/nonexistent",
                                                 applicationName: "tsbackup-serve")
        #expect(settings == cli)
        // Without the variable: libpq's and the CLI's default.
        #expect(try config.databases["metrics"]!.connection.settings(environment: [:]).connectTimeoutSeconds == 10)
    }

    @Test func aConnectionsOwnConnectTimeoutWinsOverTheEnvironment() throws {
        let yaml = Self.connectionBase + "    connect_timeout: 90\n"
        let config = try ServiceConfig.parse(yaml, environment: ["PGCONNECT_TIMEOUT": "5"])
        #expect(config.databases["metrics"]?.connection.connectTimeout == 90)
        #expect(try config.databases["metrics"]!.connection.settings(environment: ["PGCONNECT_TIMEOUT": "5"]).connectTimeoutSeconds == 90)
    }

    @Test func aBadConnectTimeoutStopsTheStartNamingTheLine() {
        #expect {
            _ = try ServiceConfig.parse(Self.connectionBase, path: "c.yaml", environment: ["PGCONNECT_TIMEOUT": "soon"])
        } throws: { error in
            let e = error as? ConfigError
            return e?.line == 6 && e?.message.contains("PGCONNECT_TIMEOUT") == true
        }
        #expect {
            _ = try ServiceConfig.parse(Self.connectionBase + "    connect_timeout: 0\n", path: "c.yaml", environment: [:])
        } throws: { error in
            (error as? ConfigError)?.line == 9
        }
    }

    @Test func aWebhooksTimeoutIsConfigurableAndDefaultsToTenSeconds() throws {
        let yaml = Self.connectionBase + """
            webhooks:
              - url: http://127.0.0.1:9999/a
              - url: http://127.0.0.1:9999/b
                events: [recovery]
                timeout_seconds: 3

            """
        let config = try ServiceConfig.parse(yaml, environment: [:])
        #expect(config.webhooks.map(\.target.timeout) == [10, 3])
        #expect(config.webhooks[1].target.events == [.recovery])
        #expect {
            _ = try ServiceConfig.parse(Self.connectionBase + "webhooks:\n  - url: http://127.0.0.1:9999/a\n    timeout_seconds: 0\n",
                                        path: "c.yaml", environment: [:])
        } throws: { error in
            let e = error as? ConfigError
            return e?.line == 11 && e?.message.contains("timeout_seconds") == true
        }
    }
}

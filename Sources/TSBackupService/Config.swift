import Foundation
import TSBackup
import Yams

/// What `tsbackup serve --config FILE` reads: where to listen, the repository, the state file, the
/// databases with their schedules and retention, rehearsal targets, webhooks and API tokens.
///
/// Read from YAML by ``ServiceConfig/load(path:environment:)``. Every problem names the line it is
/// on. Secrets are never in the file: database passwords come from an environment variable or a
/// file the config names, and API tokens are stored as SHA-256 hashes.
public struct ServiceConfig: Sendable {
    public struct Listen: Sendable, Equatable {
        public var host: String = "127.0.0.1"
        public var port: Int = 8080
        public init(host: String = "127.0.0.1", port: Int = 8080) {
            self.host = host
            self.port = port
        }
    }

    /// A PEM certificate chain and private key: when set, the service speaks HTTPS only.
    public struct TLS: Sendable, Equatable {
        public var certificateFile: String
        public var keyFile: String
    }

    /// How to reach a PostgreSQL server; the password only through `passwordEnv` or `passwordFile`.
    public struct Connection: Sendable, Equatable {
        public var host: String = "127.0.0.1"
        public var port: Int = 5432
        public var user: String = "postgres"
        public var database: String = "postgres"
        public var sslMode: ConnectionSettings.SSLMode = .prefer
        /// The name of an environment variable of the service holding the password.
        public var passwordEnv: String?
        /// A file holding the password (its first line).
        public var passwordFile: String?
        /// Seconds a connection attempt may take (`connect_timeout`); when nil, PGCONNECT_TIMEOUT
        /// in the service's environment, else 10, as for the CLI.
        public var connectTimeout: Int?

        public init() {}

        /// The settings the library connects with; the password is read now (env var or file), so a
        /// rotated password is picked up by the next job.
        public func settings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ConnectionSettings {
            var password: String?
            var source = ConnectionSettings.PasswordSource.none
            if let passwordEnv {
                guard let value = environment[passwordEnv], !value.isEmpty else {
                    throw TSBackupError(.precondition, "The environment variable \(passwordEnv), which the config names for the password of \(user)@\(host):\(port)/\(database), is not set in the service's environment. Set it (e.g. in the systemd unit's EnvironmentFile) and restart the service.")
                }
                password = value
                source = .environment
            } else if let passwordFile {
                guard let data = FileManager.default.contents(atPath: passwordFile) else {
                    throw TSBackupError(.precondition, "The password file \(passwordFile) for \(user)@\(host):\(port)/\(database) cannot be read. Check that it exists and that the service's user may read it.")
                }
                password = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                source = .passwordFile
            }
            // The same resolution as the CLI's --db (one place decides connect_timeout, the
            // PG* variables the config does not fix, and the defaults); only the password is ours.
            var parameters = ["host": host, "port": String(port), "user": user, "dbname": database, "sslmode": sslMode.rawValue]
            if let connectTimeout { parameters["connect_timeout"] = String(connectTimeout) }
            var settings = try ConnectionSettings.resolve(parameters: parameters, environment: environment,
                                                          applicationName: "tsbackup-serve", lookUpPassword: false)
            settings.password = password
            settings.passwordSource = password == nil ? .none : source
            return settings
        }
    }

    /// A 5-field cron expression and the time zone it is read in (serve-ops' scheduler runs it).
    public struct Schedule: Sendable, Equatable {
        public var cron: String
        public var timeZone: String = "UTC"
    }

    /// Keep the newest `last` backups, plus the newest of each of the last `daily` days, `weekly`
    /// weeks and `monthly` months (serve-ops' retention planner applies it).
    public struct Retention: Sendable, Equatable {
        public var keepLast: Int?
        public var keepDaily: Int?
        public var keepWeekly: Int?
        public var keepMonthly: Int?
    }

    /// A restore rehearsal: restore the newest backup on `target` (a name from `rehearsalTargets`),
    /// verify it, drop it; on `schedule`.
    public struct Rehearsal: Sendable, Equatable {
        public var target: String
        public var schedule: Schedule?
    }

    /// One database the service backs up.
    public struct Database: Sendable, Equatable {
        public var name: String
        public var connection: Connection
        /// Where restores of this database go (a server, connected through any existing database on
        /// it, e.g. postgres); by default the database's own server through `postgres`.
        public var restoreTarget: Connection?
        public var schedule: Schedule?
        public var retention: Retention?
        public var rehearsal: Rehearsal?
        /// pg_dump jobs for on-demand and scheduled backups.
        public var backupJobs: Int = 2

        /// The server a restore of this database connects to.
        public var restoreConnection: Connection {
            if let restoreTarget { return restoreTarget }
            var copy = connection
            copy.database = "postgres"
            return copy
        }
    }

    public struct Webhook: Sendable, Equatable {
        public var url: String
        /// Which events are sent (e.g. failure, recovery); empty means all.
        public var events: [String] = []
        /// Seconds one delivery attempt may take (`timeout_seconds`).
        public var timeoutSeconds: Int = 10

        /// What the notifier sends to.
        public var target: WebhookTarget {
            WebhookTarget(url: url, events: events.isEmpty ? [.failure, .recovery] : Set(events.compactMap(AlertState.Transition.init(rawValue:))),
                          timeout: Double(timeoutSeconds))
        }
    }

    public enum Role: String, Sendable, Codable, CaseIterable {
        case owner, `operator`, viewer
    }

    /// An API token: only its SHA-256 (hex) is stored.
    public struct Token: Sendable, Equatable {
        public var name: String
        public var sha256: [UInt8]
        public var role: Role
        /// For owners: the databases they own. Ignored for operators and viewers (all databases).
        public var databases: [String] = []
    }

    /// Who may read `/metrics`.
    public enum MetricsAuth: String, Sendable {
        /// A bearer token of an operator or viewer (Prometheus: `authorization: {credentials_file: ...}`).
        case token
        /// No token: only accepted when the service listens on a loopback address.
        case none
    }

    public var listen = Listen()
    public var metricsAuth: MetricsAuth = .token
    public var tls: TLS?
    public var repository: String
    public var encryptionKeyFile: String?
    public var stateFile: String
    /// Jobs running at once across all databases (one per database in any case).
    public var maxConcurrentJobs: Int = 2
    public var databases: [String: Database] = [:]
    public var rehearsalTargets: [String: Connection] = [:]
    public var webhooks: [Webhook] = []
    public var tokens: [Token] = []
    /// The file the config was read from (for messages).
    public var path: String = ""

    public init(repository: String, stateFile: String) {
        self.repository = repository
        self.stateFile = stateFile
    }

    /// How the library reaches the repository.
    public func repositoryAccess(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> RepositoryAccess {
        RepositoryAccess(url: try RepositoryURL.parse(repository), encryptionKeyFile: encryptionKeyFile, environment: environment)
    }
}

/// A config problem, with the file and line it is on.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var line: Int?
    public var message: String
    public var description: String {
        "\(path)\(line.map { ":\($0)" } ?? ""): \(message)"
    }
}

extension ServiceConfig {
    /// Reads and checks the config file; a problem is a ``TSBackupError`` of kind usage whose
    /// message starts with `FILE:LINE:`.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServiceConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TSBackupError(.notFound, "The config file \(path) cannot be read. Check the path given to --config; docs/serve.md has an example.")
        }
        do {
            return try parse(String(decoding: data, as: UTF8.self), path: path, environment: environment)
        } catch let error as ConfigError {
            throw TSBackupError(.usage, "\(error.description). Fix the config (docs/serve.md describes every key) and start the service again.")
        }
    }

    /// Parses YAML text; throws ``ConfigError`` naming the line.
    public static func parse(_ text: String, path: String = "config", environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServiceConfig {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                throw ConfigError(path: path, line: mark.line, message: "not valid YAML: \(problem)")
            default:
                throw ConfigError(path: path, line: nil, message: "not valid YAML: \(error)")
            }
        }
        guard let root else { throw ConfigError(path: path, line: nil, message: "the file is empty") }
        let reader = ConfigReader(path: path, environment: environment)
        var config = try reader.read(root)
        config.path = path
        return config
    }
}

/// Walks the YAML nodes, keeping each node's line for messages.
private struct ConfigReader {
    var path: String
    var environment: [String: String]

    func fail(_ node: Node?, _ message: String) -> ConfigError {
        ConfigError(path: path, line: node?.mark?.line, message: message)
    }

    /// A mapping's pairs by key, refusing keys not in `allowed`.
    func mapping(_ node: Node, _ what: String, allowed: Set<String>) throws -> [String: (key: Node, value: Node)] {
        guard let mapping = node.mapping else { throw fail(node, "\(what) must be a mapping (key: value lines)") }
        var result: [String: (key: Node, value: Node)] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw fail(key, "\(what) has a key that is not a string") }
            if !allowed.contains(name) {
                if name == "password" {
                    throw fail(key, "\(what) has an inline password, which is refused: name an environment variable with password_env or a file with password_file instead, so the secret is not in the config")
                }
                throw fail(key, "\(what) has an unknown key \"\(name)\"; known keys: \(allowed.sorted().joined(separator: ", "))")
            }
            if result[name] != nil { throw fail(key, "\(what) has the key \"\(name)\" twice") }
            result[name] = (key, value)
        }
        return result
    }

    func string(_ node: Node, _ what: String) throws -> String {
        guard case .scalar(let scalar) = node else { throw fail(node, "\(what) must be a single value") }
        return scalar.string
    }

    func int(_ node: Node, _ what: String, range: ClosedRange<Int>) throws -> Int {
        guard case .scalar = node, let value = node.int else { throw fail(node, "\(what) must be a whole number") }
        guard range.contains(value) else { throw fail(node, "\(what) must be between \(range.lowerBound) and \(range.upperBound), not \(value)") }
        return value
    }

    func stringList(_ node: Node, _ what: String) throws -> [String] {
        guard let sequence = node.sequence else { throw fail(node, "\(what) must be a list") }
        return try sequence.map { try string($0, "an item of \(what)") }
    }

    /// Whether `host` is an address only this machine can reach.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    func read(_ root: Node) throws -> ServiceConfig {
        let keys = try mapping(root, "the config", allowed: ["listen", "tls", "repository", "state_file", "jobs", "databases",
                                                              "rehearsal_targets", "webhooks", "tokens", "metrics"])
        guard let repositoryNode = keys["repository"] else { throw fail(root, "the config has no repository: add `repository: {url: /path/or/s3://bucket/prefix}`") }
        let repo = try mapping(repositoryNode.value, "repository", allowed: ["url", "encryption_key_file"])
        guard let url = repo["url"] else { throw fail(repositoryNode.value, "repository has no url") }
        let repositoryURL = try string(url.value, "repository.url")
        do {
            _ = try RepositoryURL.parse(repositoryURL)
        } catch let error as TSBackupError {
            throw fail(url.value, "repository.url is not usable: \(error.message)")
        }
        guard let stateNode = keys["state_file"] else { throw fail(root, "the config has no state_file: add `state_file: /var/lib/tsbackup/state.sqlite`") }
        var config = ServiceConfig(repository: repositoryURL, stateFile: try string(stateNode.value, "state_file"))
        if let key = repo["encryption_key_file"] { config.encryptionKeyFile = try string(key.value, "repository.encryption_key_file") }

        if let listen = keys["listen"] {
            let l = try mapping(listen.value, "listen", allowed: ["host", "port"])
            if let host = l["host"] { config.listen.host = try string(host.value, "listen.host") }
            if let port = l["port"] { config.listen.port = try int(port.value, "listen.port", range: 0...65535) }
        }
        if let metrics = keys["metrics"] {
            let m = try mapping(metrics.value, "metrics", allowed: ["auth"])
            if let auth = m["auth"] {
                let text = try string(auth.value, "metrics.auth")
                guard let value = ServiceConfig.MetricsAuth(rawValue: text) else {
                    throw fail(auth.value, "metrics.auth must be token (an operator's or viewer's bearer token, the default) or none, not \"\(text)\"")
                }
                guard value == .token || Self.isLoopback(config.listen.host) else {
                    throw fail(auth.value, "metrics.auth: none is only allowed when the service listens on loopback (listen.host 127.0.0.1, ::1 or localhost), not on \(config.listen.host): give Prometheus a viewer token instead (authorization: {credentials_file: ...} in its scrape config)")
                }
                config.metricsAuth = value
            }
        }
        if let tls = keys["tls"] {
            let t = try mapping(tls.value, "tls", allowed: ["certificate", "key"])
            guard let cert = t["certificate"], let key = t["key"] else { throw fail(tls.value, "tls needs both certificate and key (PEM files)") }
            config.tls = .init(certificateFile: try string(cert.value, "tls.certificate"), keyFile: try string(key.value, "tls.key"))
        }
        if let jobs = keys["jobs"] {
            let j = try mapping(jobs.value, "jobs", allowed: ["max_concurrent"])
            if let max = j["max_concurrent"] { config.maxConcurrentJobs = try int(max.value, "jobs.max_concurrent", range: 1...64) }
        }
        if let targets = keys["rehearsal_targets"] {
            let t = try anyMapping(targets.value, "rehearsal_targets")
            for (name, node) in t {
                config.rehearsalTargets[name.name] = try connection(node, "rehearsal target \(name.name)", defaultDatabase: "postgres")
            }
        }
        if let databases = keys["databases"] {
            for (name, node) in try anyMapping(databases.value, "databases") {
                guard Self.isPlainName(name.name) else {
                    throw fail(name.node, "the database name \"\(name.name)\" may hold only letters, digits, '_', '-' and '.' (it appears in URLs)")
                }
                config.databases[name.name] = try database(name.name, node, rehearsalTargets: config.rehearsalTargets)
            }
        }
        if let webhooks = keys["webhooks"] {
            guard let list = webhooks.value.sequence else { throw fail(webhooks.value, "webhooks must be a list") }
            for item in list {
                let w = try mapping(item, "a webhook", allowed: ["url", "events", "timeout_seconds"])
                guard let url = w["url"] else { throw fail(item, "a webhook has no url") }
                let text = try string(url.value, "webhook url")
                guard let parsed = URL(string: text), ["http", "https"].contains(parsed.scheme ?? "") else {
                    throw fail(url.value, "webhook url must be an http:// or https:// URL")
                }
                var hook = ServiceConfig.Webhook(url: text)
                if let events = w["events"] { hook.events = try stringList(events.value, "webhook events") }
                if let timeout = w["timeout_seconds"] { hook.timeoutSeconds = try int(timeout.value, "webhook timeout_seconds", range: 1...600) }
                config.webhooks.append(hook)
            }
        }
        if let tokens = keys["tokens"] {
            guard let list = tokens.value.sequence else { throw fail(tokens.value, "tokens must be a list") }
            var names = Set<String>()
            for item in list {
                let t = try mapping(item, "a token", allowed: ["name", "sha256", "role", "databases", "token"])
                if let inline = t["token"] {
                    throw fail(inline.key, "a token is given in plain text, which is refused: store its SHA-256 instead (`tsbackup serve hash-token` prints it) under sha256")
                }
                guard let name = t["name"] else { throw fail(item, "a token has no name (it is what the audit log shows)") }
                let tokenName = try string(name.value, "token name")
                guard names.insert(tokenName).inserted else { throw fail(name.value, "two tokens are named \"\(tokenName)\"") }
                guard let hash = t["sha256"] else { throw fail(item, "token \(tokenName) has no sha256 (`tsbackup serve hash-token` prints it)") }
                let hex = try string(hash.value, "token sha256").lowercased()
                guard let digest = Self.hexBytes(hex), digest.count == 32 else {
                    throw fail(hash.value, "token \(tokenName): sha256 must be 64 hex digits (the SHA-256 of the token, as `tsbackup serve hash-token` prints it)")
                }
                guard let roleNode = t["role"] else { throw fail(item, "token \(tokenName) has no role (owner, operator or viewer)") }
                let roleText = try string(roleNode.value, "token role")
                guard let role = ServiceConfig.Role(rawValue: roleText) else {
                    throw fail(roleNode.value, "token \(tokenName): role \"\(roleText)\" is not one of owner, operator, viewer")
                }
                var token = ServiceConfig.Token(name: tokenName, sha256: digest, role: role)
                if let dbs = t["databases"] {
                    token.databases = try stringList(dbs.value, "token databases")
                    for db in token.databases where config.databases[db] == nil {
                        throw fail(dbs.value, "token \(tokenName) names the database \"\(db)\", which is not under databases")
                    }
                }
                if role == .owner && token.databases.isEmpty {
                    throw fail(item, "token \(tokenName) is an owner of no database: list its databases")
                }
                config.tokens.append(token)
            }
        }
        return config
    }

    /// A mapping whose keys are names chosen by the user.
    func anyMapping(_ node: Node, _ what: String) throws -> [(name: (name: String, node: Node), value: Node)] {
        guard let mapping = node.mapping else { throw fail(node, "\(what) must be a mapping of names") }
        var seen = Set<String>()
        return try mapping.map { key, value in
            guard let name = key.string, !name.isEmpty else { throw fail(key, "\(what) has an empty or non-string name") }
            guard seen.insert(name).inserted else { throw fail(key, "\(what) has \"\(name)\" twice") }
            return ((name, key), value)
        }
    }

    func connection(_ node: Node, _ what: String, defaultDatabase: String? = nil, extraKeys: Set<String> = []) throws -> ServiceConfig.Connection {
        let keys = Self.connectionKeys
        let c = try mapping(node, what, allowed: keys.union(extraKeys))
        var conn = ServiceConfig.Connection()
        if let host = c["host"] { conn.host = try string(host.value, "\(what) host") }
        if let port = c["port"] { conn.port = try int(port.value, "\(what) port", range: 1...65535) }
        if let user = c["user"] { conn.user = try string(user.value, "\(what) user") }
        if let db = c["dbname"] { conn.database = try string(db.value, "\(what) dbname") } else if let defaultDatabase { conn.database = defaultDatabase } else {
            throw fail(node, "\(what) has no dbname")
        }
        if let mode = c["sslmode"] {
            let text = try string(mode.value, "\(what) sslmode")
            guard let parsed = ConnectionSettings.SSLMode(rawValue: text) else {
                throw fail(mode.value, "\(what): sslmode \"\(text)\" is not one of \(ConnectionSettings.SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            conn.sslMode = parsed
        }
        if c["password_env"] != nil && c["password_file"] != nil {
            throw fail(node, "\(what) names both password_env and password_file; keep one")
        }
        if let env = c["password_env"] {
            let name = try string(env.value, "\(what) password_env")
            guard environment[name] != nil else {
                throw fail(env.value, "\(what): the environment variable \(name) (password_env) is not set in the service's environment")
            }
            conn.passwordEnv = name
        }
        if let file = c["password_file"] {
            let name = try string(file.value, "\(what) password_file")
            guard FileManager.default.isReadableFile(atPath: name) else {
                throw fail(file.value, "\(what): the password file \(name) cannot be read")
            }
            conn.passwordFile = name
        }
        if let timeout = c["connect_timeout"] {
            conn.connectTimeout = try int(timeout.value, "\(what) connect_timeout", range: 1...3600)
        }
        // What the jobs will connect with, resolved now so a bad PGCONNECT_TIMEOUT (or the like)
        // stops the service at start, not each job.
        do {
            _ = try conn.settings(environment: environment)
        } catch let error as TSBackupError {
            throw fail(node, "\(what): \(error.message)")
        }
        return conn
    }

    static let connectionKeys: Set<String> = ["host", "port", "user", "dbname", "sslmode", "password_env", "password_file", "connect_timeout"]

    func schedule(_ node: Node, _ what: String) throws -> ServiceConfig.Schedule {
        if case .scalar = node {
            let text = try string(node, what)
            do { _ = try CronSchedule.parse(text) } catch { throw fail(node, "\(what): \(error.message)") }
            return .init(cron: text)
        }
        let s = try mapping(node, what, allowed: ["cron", "time_zone"])
        guard let cron = s["cron"] else { throw fail(node, "\(what) has no cron expression") }
        var schedule = ServiceConfig.Schedule(cron: try string(cron.value, "\(what) cron"))
        do {
            _ = try CronSchedule.parse(schedule.cron)
        } catch {
            throw fail(cron.value, "\(what): \(error.message)")
        }
        if let tz = s["time_zone"] {
            schedule.timeZone = try string(tz.value, "\(what) time_zone")
            guard TimeZone(identifier: schedule.timeZone) != nil else {
                throw fail(tz.value, "\(what): time_zone \"\(schedule.timeZone)\" is not a known time zone (e.g. Europe/Berlin, UTC)")
            }
        }
        return schedule
    }

    func database(_ name: String, _ node: Node, rehearsalTargets: [String: ServiceConfig.Connection]) throws -> ServiceConfig.Database {
        let extra: Set<String> = ["restore_target", "schedule", "retention", "rehearsal", "backup_jobs"]
        let conn = try connection(node, "database \(name)", extraKeys: extra)
        var db = ServiceConfig.Database(name: name, connection: conn)
        let m = try mapping(node, "database \(name)", allowed: Self.connectionKeys.union(extra))
        if let target = m["restore_target"] { db.restoreTarget = try connection(target.value, "database \(name) restore_target", defaultDatabase: "postgres") }
        if let s = m["schedule"] { db.schedule = try schedule(s.value, "database \(name) schedule") }
        if let jobs = m["backup_jobs"] { db.backupJobs = try int(jobs.value, "database \(name) backup_jobs", range: 1...64) }
        if let r = m["retention"] {
            let k = try mapping(r.value, "database \(name) retention", allowed: ["keep_last", "keep_daily", "keep_weekly", "keep_monthly"])
            var retention = ServiceConfig.Retention()
            if let v = k["keep_last"] { retention.keepLast = try int(v.value, "keep_last", range: 1...100_000) }
            if let v = k["keep_daily"] { retention.keepDaily = try int(v.value, "keep_daily", range: 0...100_000) }
            if let v = k["keep_weekly"] { retention.keepWeekly = try int(v.value, "keep_weekly", range: 0...100_000) }
            if let v = k["keep_monthly"] { retention.keepMonthly = try int(v.value, "keep_monthly", range: 0...100_000) }
            db.retention = retention
        }
        if let r = m["rehearsal"] {
            let k = try mapping(r.value, "database \(name) rehearsal", allowed: ["target", "schedule"])
            guard let target = k["target"] else { throw fail(r.value, "database \(name) rehearsal has no target (a name under rehearsal_targets)") }
            let targetName = try string(target.value, "rehearsal target")
            guard rehearsalTargets[targetName] != nil else {
                throw fail(target.value, "database \(name): rehearsal target \"\(targetName)\" is not under rehearsal_targets")
            }
            var rehearsal = ServiceConfig.Rehearsal(target: targetName)
            if let s = k["schedule"] { rehearsal.schedule = try schedule(s.value, "database \(name) rehearsal schedule") }
            db.rehearsal = rehearsal
        }
        return db
    }

    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "_-.".unicodeScalars.contains($0) }
    }

    static func hexBytes(_ hex: String) -> [UInt8]? {
        guard hex.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}

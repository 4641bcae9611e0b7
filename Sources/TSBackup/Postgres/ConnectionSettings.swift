import Foundation

/// Where and how to connect to PostgreSQL, resolved the way libpq resolves it: the connection
/// string first, then the `PG*` environment variables, then the password file, then defaults.
///
/// The password is kept out of every textual representation of this type; use ``displayName`` in
/// messages.
public struct ConnectionSettings: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable, Codable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    /// A host name, an IP address, or an absolute directory holding the server's Unix socket.
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?
    public var connectTimeoutSeconds: Int
    public var applicationName: String
    /// Where the password came from, for diagnostics that must not show the password itself.
    public var passwordSource: PasswordSource
    /// Problems found while resolving that do not stop the connection (e.g. an unsafe password file).
    public var warnings: [String]
    /// Server settings sent in the startup packet (like PGOPTIONS' `-c name=value`), in force from
    /// the session's first statement without being one: TimescaleDB's ALTER EXTENSION UPDATE must
    /// be the first statement, and a SET before it would load the old library.
    public var startupSettings: [String: String] = [:]

    public enum PasswordSource: String, Sendable, Equatable {
        case none, connectionString = "connection string", environment = "PGPASSWORD", passwordFile = "password file"
    }

    public init(host: String, port: Int, user: String, password: String?, database: String,
                sslMode: SSLMode = .prefer, sslRootCertificate: String? = nil, connectTimeoutSeconds: Int = 10,
                applicationName: String = "tsbackup", passwordSource: PasswordSource = .none, warnings: [String] = []) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCertificate = sslRootCertificate
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.applicationName = applicationName
        self.passwordSource = password == nil ? .none : passwordSource
        self.warnings = warnings
    }

    public var usesUnixSocket: Bool { host.hasPrefix("/") }

    /// `user@host:port/database`, safe to print.
    public var displayName: String {
        let hostPart = host.contains(":") && !usesUnixSocket ? "[\(host)]" : host
        return "\(user)@\(hostPart):\(port)/\(database)"
    }

    /// The same server with another database, as when a restore creates and then connects to one.
    public func with(database: String) -> ConnectionSettings {
        var copy = self
        copy.database = database
        return copy
    }

    /// The same connection with one more server setting in the startup packet.
    public func with(setting name: String, _ value: String) -> ConnectionSettings {
        var copy = self
        copy.startupSettings[name] = value
        return copy
    }

    /// Environment variables that let libpq-based tools (pg_dump, pg_restore, psql) reach the same
    /// server as this connection without any secret on their command line.
    public var libpqEnvironment: [String: String] {
        var env = [
            "PGHOST": host,
            "PGPORT": String(port),
            "PGUSER": user,
            "PGDATABASE": database,
            "PGSSLMODE": sslMode.rawValue,
            "PGCONNECT_TIMEOUT": String(connectTimeoutSeconds),
            "PGAPPNAME": applicationName,
        ]
        if let sslRootCertificate { env["PGSSLROOTCERT"] = sslRootCertificate }
        if let password { env["PGPASSWORD"] = password }
        return env
    }

    /// The environment for a child pg_dump/pg_restore/psql: ``libpqEnvironment`` plus exactly the
    /// session `options` given (PGOPTIONS), so one inherited from the caller never leaks in.
    /// The message locale (`LC_MESSAGES=C`) is not set here but where every child is started,
    /// in ``ChildEnvironment``, so no call site can forget it.
    public func childProcessEnvironment(options: String? = nil) -> [String: String?] {
        var environment: [String: String?] = libpqEnvironment.mapValues { $0 }
        environment["PGOPTIONS"] = .some(options)
        return environment
    }
}

extension ConnectionSettings: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { displayName }
    public var debugDescription: String { "ConnectionSettings(\(displayName), password: \(password == nil ? "none" : "<redacted>"))" }
}

extension ConnectionSettings {
    /// Resolves a connection string (a `postgres://` / `postgresql://` URI or a libpq
    /// `key=value` list; nil or empty means "environment and defaults only").
    ///
    /// - Parameters:
    ///   - environment: the process environment (injected so tests control it).
    ///   - homeDirectory: where `~/.pgpass` is looked for.
    public static func resolve(
        _ connectionString: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        homeDirectory: String? = nil,
        osUserName: String? = nil,
        applicationName: String = "tsbackup"
    ) throws(TSBackupError) -> ConnectionSettings {
        let trimmed = connectionString?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        var given: [String: String]
        if trimmed.isEmpty {
            given = [:]
        } else if trimmed.hasPrefix("postgres://") || trimmed.hasPrefix("postgresql://") {
            given = try ConnectionStringParser.parseURI(trimmed)
        } else if trimmed.contains("://") {
            throw TSBackupError(.usage, "The connection URL must start with postgres:// or postgresql://, e.g. postgres://user@host:5432/dbname. Fix the value given to --db.")
        } else if trimmed.contains("=") {
            given = try ConnectionStringParser.parseKeywordValue(trimmed)
        } else {
            throw TSBackupError(.usage, "The connection string is neither a URL (postgres://user@host:port/dbname) nor a list of key=value pairs (host=... dbname=...). Fix the value given to --db.")
        }
        return try resolve(parameters: given, environment: environment, homeDirectory: homeDirectory,
                           osUserName: osUserName, applicationName: applicationName)
    }

    /// Resolves connection parameters already split into libpq keywords (`host`, `port`, `user`,
    /// `dbname`, `sslmode`, `connect_timeout`, ...): what is not given comes from the `PG*`
    /// environment variables, then the defaults. The CLI's `--db` and the service's config both
    /// end here, so both honour e.g. `PGCONNECT_TIMEOUT` the same way.
    ///
    /// - Parameter lookUpPassword: false when the caller supplies the password itself (the
    ///   service reads it from the variable or file its config names): then neither PGPASSWORD
    ///   nor a password file is consulted.
    public static func resolve(
        parameters given: [String: String],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        homeDirectory: String? = nil,
        osUserName: String? = nil,
        applicationName: String = "tsbackup",
        lookUpPassword: Bool = true
    ) throws(TSBackupError) -> ConnectionSettings {
        for key in given.keys where !ConnectionStringParser.knownKeys.contains(key) {
            throw TSBackupError(.usage, "The connection string has an unknown parameter \"\(key)\". tsbackup understands \(ConnectionStringParser.knownKeys.sorted().joined(separator: ", ")). Remove or correct it in --db.")
        }

        func value(_ key: String, env envKey: String) -> String? {
            if let v = given[key], !v.isEmpty { return v }
            if let v = environment[envKey], !v.isEmpty { return v }
            return nil
        }

        let osUser = osUserName ?? currentOSUserName()
        let host = value("host", env: "PGHOST") ?? defaultHost()
        if host.contains(",") {
            throw TSBackupError(.usage, "The connection string names several hosts (\(host)); tsbackup connects to exactly one server. Name the one server you mean (the primary) in --db.")
        }
        let portText = value("port", env: "PGPORT") ?? "5432"
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw TSBackupError(.usage, "The port \"\(portText)\" is not a number between 1 and 65535. Fix the port in --db or PGPORT.")
        }
        let user = value("user", env: "PGUSER") ?? osUser
        let database = value("dbname", env: "PGDATABASE") ?? user
        let sslModeText = value("sslmode", env: "PGSSLMODE") ?? "prefer"
        guard let sslMode = SSLMode(rawValue: sslModeText) else {
            throw TSBackupError(.usage, "The sslmode \"\(sslModeText)\" is not one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")). Fix sslmode in --db or PGSSLMODE.")
        }
        let timeoutText = value("connect_timeout", env: "PGCONNECT_TIMEOUT") ?? "10"
        guard let timeout = Int(timeoutText), timeout >= 0 else {
            throw TSBackupError(.usage, "connect_timeout \"\(timeoutText)\" is not a whole number of seconds. Fix connect_timeout (in --db, or in the service's config) or PGCONNECT_TIMEOUT.")
        }

        var settings = ConnectionSettings(
            host: host, port: port, user: user, password: nil, database: database,
            sslMode: sslMode, sslRootCertificate: value("sslrootcert", env: "PGSSLROOTCERT"),
            connectTimeoutSeconds: timeout == 0 ? 10 : timeout,
            applicationName: given["application_name"] ?? applicationName,
            passwordSource: .none, warnings: []
        )

        if !lookUpPassword {
            return settings
        }
        if let password = given["password"] {
            settings.password = password
            settings.passwordSource = .connectionString
        } else if let password = environment["PGPASSWORD"], !password.isEmpty {
            settings.password = password
            settings.passwordSource = .environment
        } else {
            let home = homeDirectory ?? environment["HOME"] ?? NSHomeDirectory()
            let path = value("passfile", env: "PGPASSFILE") ?? (home as NSString).appendingPathComponent(".pgpass")
            let lookup = PasswordFile.lookup(path: path, host: settings.host, port: settings.port, database: settings.database, user: settings.user)
            settings.warnings += lookup.warnings
            if let password = lookup.password {
                settings.password = password
                settings.passwordSource = .passwordFile
            }
        }
        return settings
    }

    static func defaultHost() -> String {
        // Debian's libpq looks for the socket here first, as psql does.
        FileManager.default.fileExists(atPath: "/var/run/postgresql") ? "/var/run/postgresql" : "localhost"
    }

    static func currentOSUserName() -> String {
        ProcessInfo.processInfo.environment["USER"].flatMap { $0.isEmpty ? nil : $0 } ?? NSUserName()
    }
}

/// The two libpq connection string syntaxes.
enum ConnectionStringParser {
    static let knownKeys: Set<String> = [
        "host", "hostaddr", "port", "user", "password", "dbname", "sslmode", "sslrootcert",
        "connect_timeout", "application_name", "passfile",
    ]

    /// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...]`
    static func parseURI(_ uri: String) throws(TSBackupError) -> [String: String] {
        let malformed = { (why: String) in
            TSBackupError(.usage, "The connection URL is malformed: \(why). The expected form is postgres://user@host:5432/dbname?sslmode=prefer (put the password in PGPASSWORD or ~/.pgpass rather than in the URL). Fix the value given to --db.")
        }
        var rest = Substring(uri)
        rest = rest.drop(while: { $0 != ":" }).dropFirst(3)  // drop "scheme://"

        var result: [String: String] = [:]
        // Query parameters.
        if let q = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: q)...]
            rest = rest[..<q]
            for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
                guard let eq = pair.firstIndex(of: "=") else { throw malformed("the parameter \"\(pair)\" has no value") }
                let key = try decode(pair[..<eq], malformed)
                let value = try decode(pair[pair.index(after: eq)...], malformed)
                result[key] = value
            }
        }
        // Database.
        if let slash = rest.firstIndex(of: "/") {
            let db = try decode(rest[rest.index(after: slash)...], malformed)
            if !db.isEmpty { result["dbname"] = db }
            rest = rest[..<slash]
        }
        // User info: the last "@" separates it, since a percent-encoded password cannot contain a raw "@".
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = try decode(userInfo[..<colon], malformed)
                if !user.isEmpty { result["user"] = user }
                result["password"] = try decode(userInfo[userInfo.index(after: colon)...], malformed)
            } else {
                let user = try decode(userInfo, malformed)
                if !user.isEmpty { result["user"] = user }
            }
        }
        // Host and port; IPv6 literals are bracketed.
        var hostPart = rest
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw malformed("an IPv6 address is missing its closing \"]\"") }
            result["host"] = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            hostPart = hostPart[hostPart.index(after: close)...]
            if !hostPart.isEmpty {
                guard hostPart.hasPrefix(":") else { throw malformed("unexpected text after the IPv6 address") }
                result["port"] = String(hostPart.dropFirst())
            }
        } else {
            if let colon = hostPart.lastIndex(of: ":") {
                let port = String(hostPart[hostPart.index(after: colon)...])
                if !port.isEmpty { result["port"] = port }
                hostPart = hostPart[..<colon]
            }
            let host = try decode(hostPart, malformed)
            if !host.isEmpty { result["host"] = host }
        }
        if let port = result["port"], Int(port) == nil {
            throw malformed("the port \"\(port)\" is not a number")
        }
        if result["host"] == nil, let hostaddr = result["hostaddr"] { result["host"] = hostaddr }
        result["hostaddr"] = nil
        return result
    }

    private static func decode(_ text: Substring, _ malformed: (String) -> TSBackupError) throws(TSBackupError) -> String {
        guard let decoded = String(text).removingPercentEncoding else {
            throw malformed("it contains an invalid percent-encoding")
        }
        return decoded
    }

    /// `host=... port=... dbname='my db'` with libpq's quoting: single quotes, backslash escapes.
    static func parseKeywordValue(_ text: String) throws(TSBackupError) -> [String: String] {
        let malformed = { (why: String) in
            TSBackupError(.usage, "The connection string is malformed: \(why). The expected form is host=HOST port=PORT dbname=NAME user=NAME (values with spaces in single quotes). Fix the value given to --db.")
        }
        var result: [String: String] = [:]
        var chars = Array(text)[...]
        func skipSpaces() { while let c = chars.first, c.isWhitespace { chars = chars.dropFirst() } }
        while true {
            skipSpaces()
            guard !chars.isEmpty else { break }
            var key = ""
            while let c = chars.first, c != "=", !c.isWhitespace { key.append(c); chars = chars.dropFirst() }
            skipSpaces()
            guard chars.first == "=" else { throw malformed("\"\(key)\" is not followed by \"=\"") }
            chars = chars.dropFirst()
            skipSpaces()
            var value = ""
            if chars.first == "'" {
                chars = chars.dropFirst()
                var closed = false
                while let c = chars.first {
                    chars = chars.dropFirst()
                    if c == "\\", let next = chars.first { value.append(next); chars = chars.dropFirst(); continue }
                    if c == "'" { closed = true; break }
                    value.append(c)
                }
                guard closed else { throw malformed("the value of \"\(key)\" is missing its closing quote") }
            } else {
                while let c = chars.first, !c.isWhitespace {
                    chars = chars.dropFirst()
                    if c == "\\", let next = chars.first { value.append(next); chars = chars.dropFirst(); continue }
                    value.append(c)
                }
            }
            result[key] = value
        }
        if result["host"] == nil, let hostaddr = result["hostaddr"] { result["host"] = hostaddr }
        result["hostaddr"] = nil
        return result
    }
}

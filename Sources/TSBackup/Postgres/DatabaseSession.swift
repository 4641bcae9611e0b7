import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// One connection to PostgreSQL, with errors translated into ``TSBackupError``s a user can act on.
///
/// A single connection (not a pool) on purpose: inspection, snapshots and the restore procedure
/// depend on session state (exported snapshots, `SET` commands, "first statement of a fresh
/// session" rules of TimescaleDB).
public final class DatabaseSession: Sendable {
    public let settings: ConnectionSettings
    let connection: PostgresConnection
    let logger: Logger

    private init(settings: ConnectionSettings, connection: PostgresConnection, logger: Logger) {
        self.settings = settings
        self.connection = connection
        self.logger = logger
    }

    public static func connect(_ settings: ConnectionSettings, logger: Logger = .quiet) async throws -> DatabaseSession {
        let configuration: PostgresConnection.Configuration
        do {
            configuration = try makeConfiguration(settings)
        } catch let error as TSBackupError {
            throw error
        } catch {
            throw TSBackupError(.usage, "The TLS settings for \(settings.displayName) could not be used (\(error)). Check sslmode and sslrootcert in --db.")
        }
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
            return DatabaseSession(settings: settings, connection: connection, logger: logger)
        } catch {
            throw PostgresErrorTranslator.translate(error, settings: settings, during: nil)
        }
    }

    /// Connects, runs `body`, and closes the connection whatever happens.
    @discardableResult
    public static func with<T>(_ settings: ConnectionSettings, logger: Logger = .quiet,
                               _ body: (DatabaseSession) async throws -> T) async throws -> T {
        let session = try await connect(settings, logger: logger)
        do {
            let result = try await body(session)
            await session.close()
            return result
        } catch {
            await session.close()
            throw error
        }
    }

    public func close() async {
        try? await connection.close()
    }

    /// Runs one statement and returns all its rows.
    @discardableResult
    public func query(_ query: PostgresQuery, purpose: String? = nil) async throws -> [PostgresRow] {
        // A statement sent on a connection the server already closed (it crashed or restarted)
        // was seen to wait forever with postgres-nio 1.33.2 instead of failing: refuse it here.
        guard !connection.isClosed else {
            throw TSBackupError(.connection, "The connection to \(settings.displayName) was closed by the server before running: \((purpose ?? query.sql).singleLine(limit: 160)). The server may have restarted or crashed; check its log, then try again.")
        }
        do {
            // Collected on the event loop (postgres-nio's future-based `query`), not by iterating
            // the async `PostgresRowSequence`. With the sequence, postgres-nio 1.33.2 stops the
            // process (precondition in RowStreamStateMachine.channelReadComplete, state
            // waitingForDemand) when the server closes the connection after sending rows this task
            // has not taken yet: the sequence asks for more rows only when the task runs again, and
            // NIO reports the EOF with a channelReadComplete that no read preceded. A crash or
            // `pg_ctl stop -m immediate` during a streaming query does exactly that. Collecting asks
            // for more at once, so the EOF finds the stream waiting for rows and the query fails
            // with a connection error. Every caller wants all rows anyway. docs/reliability.md has
            // the analysis.
            let result: EventLoopFuture<PostgresQueryResult> = connection.query(query, logger: logger)
            return try await result.get().rows
        } catch {
            throw PostgresErrorTranslator.translate(error, settings: settings, during: purpose ?? query.sql)
        }
    }

    /// `COPY table FROM STDIN` (text format), the rows handed to the writer `body` is given.
    /// postgres-nio writes `table` between double quotes as it is, one identifier: the caller doubles any double quote in it, and names its schema through `search_path`. An error
    /// `body` throws fails the COPY and is rethrown as it is.
    public func copyIn(table: String, purpose: String, _ body: (PostgresCopyFromWriter) async throws -> Void) async throws {
        guard !connection.isClosed else {
            throw TSBackupError(.connection, "The connection to \(settings.displayName) was closed by the server before \(purpose). The server may have restarted or crashed; check its log, then try again.")
        }
        do {
            try await connection.copyFrom(table: table, logger: logger, writeData: body)
        } catch let error as TSBackupError {
            throw error
        } catch {
            throw PostgresErrorTranslator.translate(error, settings: settings, during: purpose)
        }
    }

    /// Runs one statement given as plain SQL text (identifiers already quoted by the caller).
    @discardableResult
    public func execute(_ sql: String, purpose: String? = nil) async throws -> [PostgresRow] {
        try await query(PostgresQuery(unsafeSQL: sql), purpose: purpose)
    }

    /// Runs one statement and decodes every row into a tuple of the given types.
    public func rows<each Column: PostgresDecodable>(
        _ query: PostgresQuery, as types: (repeat each Column).Type, purpose: String? = nil
    ) async throws -> [(repeat each Column)] {
        let rows = try await self.query(query, purpose: purpose)
        do {
            return try rows.map { try $0.decode((repeat each Column).self) }
        } catch {
            throw TSBackupError(.failed, "tsbackup could not read the result of a query on \(settings.displayName) (\(purpose ?? query.sql)): \(String(reflecting: error)). This is a bug in tsbackup; please report it with the server version.")
        }
    }

    /// Runs one statement expected to return exactly one row.
    public func row<each Column: PostgresDecodable>(
        _ query: PostgresQuery, as types: (repeat each Column).Type, purpose: String? = nil
    ) async throws -> (repeat each Column) {
        let all = try await rows(query, as: (repeat each Column).self, purpose: purpose)
        guard let first = all.first else {
            throw TSBackupError(.failed, "A query on \(settings.displayName) returned no row where one was expected (\(purpose ?? query.sql)).")
        }
        return first
    }

    /// Runs one statement and decodes the single column of every row.
    public func values<Value: PostgresDecodable>(_ query: PostgresQuery, as type: Value.Type, purpose: String? = nil) async throws -> [Value] {
        try await rows(query, as: (Value).self, purpose: purpose)
    }

    /// Runs one statement expected to return exactly one row with one column.
    public func value<Value: PostgresDecodable>(_ query: PostgresQuery, as type: Value.Type, purpose: String? = nil) async throws -> Value {
        try await row(query, as: (Value).self, purpose: purpose)
    }

    static func makeConfiguration(_ settings: ConnectionSettings) throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if settings.usesUnixSocket {
            configuration = .init(
                unixSocketPath: "\(settings.host)/.s.PGSQL.\(settings.port)",
                username: settings.user, password: settings.password, database: settings.database)
        } else {
            configuration = .init(
                host: settings.host, port: settings.port, username: settings.user,
                password: settings.password, database: settings.database, tls: try tls(for: settings))
        }
        configuration.options.connectTimeout = .seconds(Int64(settings.connectTimeoutSeconds))
        configuration.options.additionalStartupParameters = [("application_name", settings.applicationName)]
            + settings.startupSettings.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return configuration
    }

    static func tls(for settings: ConnectionSettings) throws -> PostgresConnection.Configuration.TLS {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let root = settings.sslRootCertificate {
            tls.trustRoots = .file(root)
        }
        switch settings.sslMode {
        case .disable:
            return .disable
        case .allow, .prefer:
            tls.certificateVerification = .none
            return .prefer(try NIOSSLContext(configuration: tls))
        case .require:
            // libpq: with a root certificate, "require" behaves like "verify-ca".
            tls.certificateVerification = settings.sslRootCertificate == nil ? .none : .noHostnameVerification
            return .require(try NIOSSLContext(configuration: tls))
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
            return .require(try NIOSSLContext(configuration: tls))
        case .verifyFull:
            tls.certificateVerification = .fullVerification
            return .require(try NIOSSLContext(configuration: tls))
        }
    }
}

extension Logger {
    /// A logger that drops everything; the default, so library output never mixes with reports.
    public static var quiet: Logger {
        Logger(label: "tsbackup", factory: { _ in SwiftLogNoOpLogHandler() })
    }
}

/// Turns postgres-nio and NIO errors into one-paragraph messages that say what to do.
///
/// `PSQLError.description` is redacted by postgres-nio, so the server's own fields are read
/// explicitly; nothing here ever includes the password.
enum PostgresErrorTranslator {
    static func translate(_ error: any Error, settings: ConnectionSettings, during purpose: String?) -> TSBackupError {
        if let error = error as? TSBackupError { return error }
        let server = "\(settings.host):\(settings.port)"
        let who = "user \"\(settings.user)\""
        guard let psql = error as? PSQLError else {
            return connectionFailure(error, settings: settings)
        }
        switch psql.code {
        case .server:
            let state = psql.serverInfo?[.sqlState] ?? ""
            let message = psql.serverInfo?[.message] ?? "unknown error"
            let hint = psql.serverInfo?[.hint].map { " Hint from the server: \($0)" } ?? ""
            switch state {
            case "28P01":
                let source = settings.passwordSource == .none ? "no password was given" : "the password came from the \(settings.passwordSource.rawValue)"
                return TSBackupError(.permission, "Authentication failed for \(who) on \(server) (\(source)). Check the password: put it in PGPASSWORD or a 0600 ~/.pgpass line rather than on the command line, and make sure the role exists and may log in.")
            case "28000":
                return TSBackupError(.permission, "The server at \(server) refused \(who) for database \"\(settings.database)\": \(message). Check the user name in --db (or PGUSER), that the role exists with LOGIN, and that pg_hba.conf on the server allows this connection.")
            case "3D000":
                return TSBackupError(.notFound, "The database \"\(settings.database)\" does not exist on \(server). Check the database name in --db (or PGDATABASE); `psql -l` lists the databases of that server.")
            case "53300":
                return TSBackupError(.connection, "The server at \(server) has no free connection slot (\(message)). Close idle sessions or raise max_connections, then try again.")
            case "57P03":
                return TSBackupError(.connection, "The server at \(server) is starting up, shutting down or in recovery and does not accept connections yet. Wait until it is up, then try again.")
            case let s where s.hasPrefix("42501"):
                return TSBackupError(.permission, "\(who.capitalizedFirst) lacks a privilege on \(settings.displayName): \(message).\(hint) Run tsbackup as a role that has it, or ask an administrator to grant it.")
            default:
                let context = purpose.map { " while running: \($0.singleLine(limit: 160))" } ?? ""
                return TSBackupError(.failed, "The server at \(settings.displayName) reported an error (SQLSTATE \(state)): \(message)\(context).\(hint)", sqlState: state)
            }
        case .authMechanismRequiresPassword:
            return TSBackupError(.permission, "The server at \(server) asks for a password for \(who), but none was given. Set PGPASSWORD, or add a line \"host:port:database:user:password\" to ~/.pgpass (chmod 0600), and try again.")
        case .unsupportedAuthMechanism:
            return TSBackupError(.permission, "The server at \(server) asks for an authentication method tsbackup does not support (only password, md5 and scram-sha-256 are). Allow one of these for \(who) in pg_hba.conf.")
        case .sslUnsupported:
            return TSBackupError(.connection, "The server at \(server) does not accept TLS, but sslmode=\(settings.sslMode.rawValue) requires it. Enable ssl on the server, or use sslmode=prefer or disable in --db if the network is trusted.")
        case .connectionError, .failedToAddSSLHandler:
            return connectionFailure(psql.underlying ?? error, settings: settings)
        case .serverClosedConnection, .clientClosedConnection, .uncleanShutdown:
            return TSBackupError(.connection, "The connection to \(server) was closed unexpectedly\(purpose.map { " while running: \($0.singleLine(limit: 160))" } ?? ""). The server may have restarted or crashed; check its log, then try again.")
        case .queryCancelled:
            return TSBackupError(.failed, "A query on \(settings.displayName) was cancelled.")
        default:
            return TSBackupError(.failed, "Talking to \(settings.displayName) failed: \(String(reflecting: psql).singleLine(limit: 300)).")
        }
    }

    static func connectionFailure(_ error: any Error, settings: ConnectionSettings) -> TSBackupError {
        let server = settings.usesUnixSocket ? "the Unix socket \(settings.host)/.s.PGSQL.\(settings.port)" : "\(settings.host):\(settings.port)"
        if let nio = error as? NIOConnectionError {
            if nio.connectionErrors.isEmpty, nio.dnsAError != nil || nio.dnsAAAAError != nil {
                return TSBackupError(.connection, "The host name \"\(settings.host)\" could not be resolved. Check the host in --db (or PGHOST).")
            }
            if let first = nio.connectionErrors.first?.error { return connectionFailure(first, settings: settings) }
        }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNREFUSED, ENOENT:
                return TSBackupError(.connection, "Could not connect to PostgreSQL at \(server): connection refused. Check that the server is running and listening there (listen_addresses and port in postgresql.conf), or fix the host and port in --db.")
            case EHOSTUNREACH, ENETUNREACH:
                return TSBackupError(.connection, "The host \(settings.host) is unreachable from here. Check the host in --db and the network path to it.")
            default:
                break
            }
        }
        if case ChannelError.connectTimeout = error {
            return TSBackupError(.connection, "Connecting to \(server) timed out after \(settings.connectTimeoutSeconds) s. Check the host and port in --db and any firewall in between; raise connect_timeout if the server is slow to answer.")
        }
        if error is NIOSSLError || String(reflecting: error).contains("SSL") {
            return TSBackupError(.connection, "The TLS handshake with \(server) failed (\(String(describing: error).singleLine(limit: 200))). Check sslmode and sslrootcert in --db and the server's certificate.")
        }
        return TSBackupError(.connection, "Could not connect to PostgreSQL at \(server): \(String(describing: error).singleLine(limit: 200)). Check the host and port in --db and that the server is running.")
    }
}

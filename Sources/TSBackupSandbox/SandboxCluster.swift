import Foundation
import PostgresNIO
import TSBackup

/// A throwaway PostgreSQL 15 cluster with TimescaleDB preloaded, listening only on 127.0.0.1 at a
/// free port, living in a temporary directory that is deleted when the cluster stops.
///
/// PostgreSQL refuses to run as root, so when this process is root the cluster's programs run as
/// the `postgres` system user through `runuser`. A detached watchdog stops the server and deletes
/// the directory as soon as this process is gone, so a failed, interrupted or killed test run never
/// leaves a server behind.
public final class SandboxCluster: Sendable {
    public struct Options: Sendable {
        /// Put timescaledb into shared_preload_libraries (off to model a server without it).
        public var preloadTimescaleDB = true
        /// fsync on/off. Off makes tests faster and changes nothing they check; benchmarks that
        /// count WAL syncs keep it on.
        public var durable = false
        /// More postgresql.conf settings, e.g. ["max_locks_per_transaction": "128"].
        public var settings: [String: String] = [:]
        /// Continuous archiving through `tsbackup wal-push` (wal_level replica, archive_mode on).
        public var archiving: Archiving?

        public init(preloadTimescaleDB: Bool = true, durable: Bool = false, settings: [String: String] = [:], archiving: Archiving? = nil) {
            self.preloadTimescaleDB = preloadTimescaleDB
            self.durable = durable
            self.settings = settings
            self.archiving = archiving
        }
    }

    /// How the server archives its WAL: `archive_command` runs the built tsbackup binary.
    public struct Archiving: Sendable {
        /// The tsbackup executable (the server's OS user must be able to run it; it is copied
        /// into the cluster's directory when it cannot).
        public var tsbackup: String
        /// `--repo`: a directory the server's OS user can write, or an s3:// URL.
        public var repository: String
        /// `--encryption-key-file`, readable by the server's OS user.
        public var keyFile: String?
        /// Variables the server (and so archive_command) gets: S3 credentials and endpoint. They
        /// reach it through pg_ctl's environment, never through postgresql.conf.
        public var environment: [String: String]

        public init(tsbackup: String, repository: String, keyFile: String? = nil, environment: [String: String] = [:]) {
            self.tsbackup = tsbackup
            self.repository = repository
            self.keyFile = keyFile
            self.environment = environment
        }
    }

    public static let superuser = "postgres"

    public let directory: String
    public let port: Int
    public let binDirectory: String
    /// The bootstrap superuser's password, generated per cluster.
    public let superuserPassword: String

    public var dataDirectory: String { directory + "/data" }
    public var logFile: String { directory + "/server.log" }

    /// The server's extra environment (archive_command's S3 settings), kept for restarts.
    let serverEnvironment: [String: String]

    private init(directory: String, port: Int, binDirectory: String, superuserPassword: String, serverEnvironment: [String: String] = [:]) {
        self.directory = directory
        self.port = port
        self.binDirectory = binDirectory
        self.superuserPassword = superuserPassword
        self.serverEnvironment = serverEnvironment
    }

    // MARK: Lifecycle

    /// Starts a cluster, runs `body`, and stops and deletes the cluster whatever happens.
    public static func with<T>(_ options: Options = Options(), _ body: (SandboxCluster) async throws -> T) async throws -> T {
        let cluster = try await start(options)
        do {
            let result = try await body(cluster)
            await cluster.stop()
            return result
        } catch {
            await cluster.stop()
            throw error
        }
    }

    public static func start(_ options: Options = Options()) async throws -> SandboxCluster {
        let bin = try PostgresInstallation.binDirectory(major: 15)
        let directory = try makeTemporaryDirectory()
        let password = randomPassword()
        let cluster = SandboxCluster(directory: directory, port: 0, binDirectory: bin, superuserPassword: password)
        do {
            try await cluster.initialize(password: password)
            try await cluster.startWatchdog()
            var options = options
            if let archiving = options.archiving {
                options.archiving?.tsbackup = try await cluster.executableForPostgres(archiving.tsbackup)
            }
            // A port found free can be taken before the server binds it; try a few.
            var lastError: (any Error)?
            for _ in 0..<5 {
                let port = try freeLoopbackPort()
                try cluster.writeConfiguration(options, port: port)
                let started = SandboxCluster(directory: directory, port: port, binDirectory: bin, superuserPassword: password,
                                             serverEnvironment: options.archiving?.environment ?? [:])
                do {
                    try await started.startServer()
                    return started
                } catch {
                    lastError = error
                }
            }
            throw lastError ?? SandboxError("the server did not start")
        } catch {
            await cluster.stop()
            throw error
        }
    }

    /// A cluster kept in `directory` across runs, for benchmarks whose data takes long to build
    /// (`tsbackup-bench --scale-chunks N --keep-cluster DIR`): initialized there with `options`
    /// the first time, started again (on a new free port, with `options` written anew) when the
    /// directory already holds one. No watchdog: stop it with ``stopKeepingDirectory()``. The
    /// superuser's password lives in `DIR/superuser-password` (mode 0600) so later runs, and a
    /// person re-measuring by hand, can connect.
    public static func kept(at directory: String, _ options: Options = Options()) async throws -> SandboxCluster {
        let bin = try PostgresInstallation.binDirectory(major: 15)
        let passwordPath = directory + "/superuser-password"
        let password: String
        if FileManager.default.fileExists(atPath: directory + "/data/PG_VERSION") {
            guard let saved = try? String(contentsOfFile: passwordPath, encoding: .utf8) else {
                throw SandboxError("\(directory) holds a cluster but no superuser-password file; delete the directory to start afresh")
            }
            password = saved.trimmingCharacters(in: .whitespacesAndNewlines)
        } else {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try chownToPostgres(directory)
            password = randomPassword()
            let fresh = SandboxCluster(directory: directory, port: 0, binDirectory: bin, superuserPassword: password)
            try await fresh.initialize(password: password)
            guard FileManager.default.createFile(atPath: passwordPath, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                throw SandboxError("could not write \(passwordPath)")
            }
        }
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try freeLoopbackPort()
            let cluster = SandboxCluster(directory: directory, port: port, binDirectory: bin, superuserPassword: password)
            try cluster.writeConfiguration(options, port: port)
            do {
                try await cluster.startServer()
                return cluster
            } catch {
                lastError = error
            }
        }
        throw lastError ?? SandboxError("the server did not start")
    }

    /// Stops a ``kept(at:_:)`` cluster's server (fast shutdown, so the next start needs no
    /// recovery) and leaves its directory.
    public func stopKeepingDirectory() async throws {
        let result = try await runAsPostgres(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "-t", "600", "stop"])
        guard result.succeeded else {
            throw SandboxError("pg_ctl stop failed (\(result.statusDescription)): \(result.standardError)")
        }
    }

    /// Stops the server (fast shutdown) and deletes the directory. Safe to call twice.
    public func stop() async {
        if FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") {
            _ = try? await runAsPostgres(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "-t", "120", "stop"])
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`): every backend is killed
    /// without a checkpoint, and the next start runs crash recovery. The directory stays.
    public func stopImmediately() async throws {
        let result = try await runAsPostgres(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "-t", "600", "stop"])
        guard result.succeeded else {
            throw SandboxError("pg_ctl stop -m immediate failed (\(result.statusDescription)): \(result.standardError)")
        }
    }

    /// Starts the server again after ``stopImmediately()``, on the same port, and waits until it
    /// accepts connections (crash recovery done).
    public func restart() async throws {
        try await startServer()
    }

    /// Runs `executable` as the cluster's owner (the `postgres` system user when this process is
    /// root), e.g. to prepare a directory the server will write.
    public func runAsOwner(_ executable: String, _ arguments: [String]) async throws -> ProcessResult {
        try await runAsPostgres(executable, arguments)
    }

    private func initialize(password: String) async throws {
        let passwordFile = directory + "/pwfile"
        try writePrivateFile(passwordFile, password + "\n")
        defer { try? FileManager.default.removeItem(atPath: passwordFile) }
        let result = try await runAsPostgres(binDirectory + "/initdb", [
            "-D", dataDirectory, "-U", Self.superuser, "--pwfile=\(passwordFile)",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ])
        guard result.succeeded else {
            throw SandboxError("initdb failed (\(result.statusDescription)): \(result.standardError)")
        }
    }

    private func writeConfiguration(_ options: Options, port: Int) throws {
        var settings: [(String, String)] = [
            ("listen_addresses", "'127.0.0.1'"),
            ("port", String(port)),
            ("unix_socket_directories", "'\(directory)'"),
            ("fsync", options.durable ? "on" : "off"),
            ("full_page_writes", options.durable ? "on" : "off"),
            ("max_connections", "200"),
            // Every database with TimescaleDB keeps a scheduler worker for as long as it exists,
            // and the suites leave well over a hundred databases on the shared cluster: at 150
            // workers the last restores of a full run found no scheduler slot and failed their
            // "scheduler running" check (CI, 477 tests).
            ("max_worker_processes", "400"),
            ("timescaledb.telemetry_level", "off"),
            ("timescaledb.max_background_workers", "390"),
            ("log_min_messages", "warning"),
            ("log_line_prefix", "'%m [%p] %d '"),
        ]
        if options.preloadTimescaleDB {
            settings.append(("shared_preload_libraries", "'timescaledb'"))
        }
        if let archiving = options.archiving {
            var command = [archiving.tsbackup, "wal-push", "%p", "--repo", archiving.repository].map(Self.shellQuoted)
            if let key = archiving.keyFile { command += ["--encryption-key-file", Self.shellQuoted(key)] }
            settings += [("wal_level", "replica"), ("archive_mode", "on"),
                         ("archive_command", Self.configQuoted(command.joined(separator: " ")))]
        }
        for (key, value) in options.settings.sorted(by: { $0.key < $1.key }) {
            settings.append((key, value))
        }
        let text = "# written by tsbackup's sandbox harness\n" + settings.map { "\($0.0) = \($0.1)" }.joined(separator: "\n") + "\n"
        let path = dataDirectory + "/postgresql.auto.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try chownToPostgres(path)
    }

    private func startServer() async throws {
        // `-t` is a hang guard: a start after `-m immediate` runs crash recovery, and CI starts
        // clusters for dozens of suites at once on two cores.
        let result = try await runAsPostgres(binDirectory + "/pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "600", "start"],
                                             environment: serverEnvironment)
        guard result.succeeded else {
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            throw SandboxError("the server did not start (\(result.statusDescription)): \(result.standardError) \(log.suffix(2000))")
        }
    }

    /// A detached shell that waits for this process to end, then stops the server and deletes the
    /// directory. It survives SIGKILL of this process, unlike any in-process cleanup.
    private func startWatchdog() async throws {
        let pgctl = binDirectory + "/pg_ctl"
        let asPostgres = getuid() == 0 ? "runuser -u postgres -- " : ""
        let script = """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
            if [ -f '\(dataDirectory)/postmaster.pid' ]; then \(asPostgres)'\(pgctl)' -D '\(dataDirectory)' -m immediate -w -t 30 stop >/dev/null 2>&1; fi
            rm -rf '\(directory)'
            """
        let result = try await ProcessRunner.run("setsid", ["-f", "sh", "-c", script + " </dev/null >/dev/null 2>&1"])
        guard result.succeeded else {
            throw SandboxError("could not start the cleanup watchdog: \(result.standardError)")
        }
    }

    // MARK: Connections and objects

    /// Connection settings for a role of this cluster (the superuser by default), over TCP.
    public func settings(database: String = "postgres", user: String = SandboxCluster.superuser, password: String? = nil) -> ConnectionSettings {
        ConnectionSettings(
            host: "127.0.0.1", port: port, user: user,
            password: password ?? (user == Self.superuser ? superuserPassword : nil),
            database: database, sslMode: .disable, sslRootCertificate: nil, connectTimeoutSeconds: 60,
            applicationName: "tsbackup-sandbox", passwordSource: .connectionString, warnings: [])
    }

    /// `postgres://user@127.0.0.1:port/database`, without the password (give it via PGPASSWORD).
    public func url(database: String, user: String = SandboxCluster.superuser) -> String {
        "postgres://\(user)@127.0.0.1:\(port)/\(database)"
    }

    /// Runs `body` on a superuser session to `database`.
    @discardableResult
    public func withSuperuser<T>(database: String = "postgres", _ body: (DatabaseSession) async throws -> T) async throws -> T {
        try await DatabaseSession.with(settings(database: database), body)
    }

    /// Creates a database, with the TimescaleDB extension unless told otherwise.
    public func createDatabase(_ name: String, owner: String = SandboxCluster.superuser, timescaleDB: Bool = true) async throws {
        try await withSuperuser { session in
            try await session.execute("CREATE DATABASE \(quoteIdentifier(name)) OWNER \(quoteIdentifier(owner))")
        }
        if timescaleDB {
            try await withSuperuser(database: name) { session in
                try await session.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            }
        }
    }

    /// Creates a login role with a password; `superuser` and `createDatabase` as asked.
    public func createRole(_ name: String, password: String, superuser: Bool = false, createDatabase: Bool = false) async throws {
        try await withSuperuser { session in
            try await session.execute("CREATE ROLE \(SQLIdentifier.quote(name)) LOGIN PASSWORD \(SQLLiteral.quote(password)) \(superuser ? "SUPERUSER" : "NOSUPERUSER") \(createDatabase ? "CREATEDB" : "NOCREATEDB")")
        }
    }

    public func serverLog() -> String {
        (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
    }

    // MARK: Helpers

    func runAsPostgres(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> ProcessResult {
        let environment = environment.mapValues { Optional($0) }
        if getuid() == 0 {
            return try await ProcessRunner.run("runuser", ["-u", "postgres", "--", executable] + arguments, environment: environment, workingDirectory: directory)
        }
        return try await ProcessRunner.run(executable, arguments, environment: environment, workingDirectory: directory)
    }

    /// `path` if the server's OS user can run it, else a copy in the cluster's directory (for
    /// `tsbackup-wal`, with the `tsbackup` beside it, to which it hands S3 and encryption).
    func executableForPostgres(_ path: String) async throws -> String {
        guard getuid() == 0 else { return path }
        if try await ProcessRunner.run("runuser", ["-u", "postgres", "--", "test", "-x", path]).succeeded { return path }
        let name = (path as NSString).lastPathComponent
        var copies = [(path, directory + "/" + name)]
        if name == "tsbackup-wal" {
            copies.append(((path as NSString).deletingLastPathComponent + "/tsbackup", directory + "/tsbackup"))
        }
        for (source, copy) in copies {
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: source, toPath: copy)
            chmod(copy, 0o755)
        }
        return copies[0].1
    }

    /// Hands a file or directory (a local repository, a key file) to the server's OS user, so
    /// archive_command can use it.
    public static func handToPostgres(_ path: String) throws { try chownToPostgres(path) }

    /// `text` in single quotes for sh.
    static func shellQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// `text` as a postgresql.conf string value.
    static func configQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    private static func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/tsbackup-sandbox-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw SandboxError("could not create a temporary directory in /tmp: \(String(cString: strerror(errno)))")
        }
        let path = String(cString: made)
        try chownToPostgres(path)
        return path
    }

    private func writePrivateFile(_ path: String, _ contents: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(contents.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw SandboxError("could not write \(path)")
        }
        try Self.chownToPostgres(path)
    }

    private func chownToPostgres(_ path: String) throws { try Self.chownToPostgres(path) }

    private static func chownToPostgres(_ path: String) throws {
        guard getuid() == 0 else { return }
        guard let user = getpwnam("postgres") else {
            throw SandboxError("the system user \"postgres\" does not exist; run scripts/setup.sh first (it installs PostgreSQL 15)")
        }
        guard chown(path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
            throw SandboxError("could not hand \(path) to the postgres user: \(String(cString: strerror(errno)))")
        }
    }

    private static func randomPassword() -> String {
        let alphabet = Array("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        return String((0..<24).map { _ in alphabet.randomElement()! })
    }

    /// Asks the kernel for a free TCP port on 127.0.0.1.
    public static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SandboxError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw SandboxError("bind() on 127.0.0.1 failed") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw SandboxError("getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

public struct SandboxError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = "sandbox cluster: " + description }
}

/// The path of another executable built next to the running one (the demo and the benchmark run
/// the real `tsbackup` binary this way).
public func siblingExecutable(_ name: String) throws -> String {
    let me = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    let path = me.deletingLastPathComponent().appendingPathComponent(name).path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw SandboxError("\(path) is missing; build it first (`swift build --product \(name)`)")
    }
    return path
}

/// Where Debian keeps each PostgreSQL major's programs.
public enum PostgresInstallation {
    public static func binDirectory(major: Int) throws -> String {
        let path = "/usr/lib/postgresql/\(major)/bin"
        guard FileManager.default.isExecutableFile(atPath: path + "/initdb") else {
            throw SandboxError("PostgreSQL \(major) server programs are not installed in \(path); run scripts/setup.sh first")
        }
        return path
    }

    /// The TimescaleDB version installed into that major's extension directory, from its control file.
    public static func installedTimescaleDBVersion(major: Int = 15) -> String? {
        let control = "/usr/share/postgresql/\(major)/extension/timescaledb.control"
        guard let text = try? String(contentsOfFile: control, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("default_version") {
            return line.split(separator: "'").dropFirst().first.map(String.init)
        }
        return nil
    }
}

import Foundation
import TSBackup

/// A server process (moto, the fault proxy) started in its own session, with a detached watchdog
/// that kills it and deletes its directory as soon as this process is gone, so a failed or killed
/// test run never leaves a server behind (the same scheme as ``SandboxCluster``).
public final class BackgroundProcess: Sendable {
    public let pid: Int32
    public let directory: String
    public let logFile: String

    private init(pid: Int32, directory: String, logFile: String) {
        self.pid = pid
        self.directory = directory
        self.logFile = logFile
    }

    /// Starts `command` (already shell-quoted words) in `directory` with extra environment
    /// variables; output goes to `directory/name.log`.
    public static func start(name: String, command: [String], environment: [String: String] = [:],
                             directory: String) async throws -> BackgroundProcess {
        let log = directory + "/\(name).log"
        let pidFile = directory + "/\(name).pid"
        let env = environment.map { "\($0.key)=\(shellQuote($0.value))" }.joined(separator: " ")
        let words = command.map(shellQuote).joined(separator: " ")
        // `setsid` puts the server in a session of its own; `exec` keeps its pid the one we record.
        let script = """
            cd \(shellQuote(directory)) || exit 1
            \(env) setsid sh -c 'exec "$@"' sh \(words) </dev/null >\(shellQuote(log)) 2>&1 &
            echo $! > \(shellQuote(pidFile))
            """
        let result = try await ProcessRunner.run("sh", ["-c", script])
        guard result.succeeded, let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw SandboxError("could not start \(name): \(result.standardError)")
        }
        let watchdog = """
            while kill -0 \(getpid()) 2>/dev/null && kill -0 \(pid) 2>/dev/null; do sleep 1; done
            kill -TERM \(pid) 2>/dev/null; sleep 1; kill -KILL \(pid) 2>/dev/null
            rm -rf \(shellQuote(directory))
            """
        let started = try await ProcessRunner.run("setsid", ["-f", "sh", "-c", watchdog + " </dev/null >/dev/null 2>&1"])
        guard started.succeeded else {
            kill(pid, SIGKILL)
            throw SandboxError("could not start the watchdog of \(name): \(started.standardError)")
        }
        return BackgroundProcess(pid: pid, directory: directory, logFile: log)
    }

    /// Whether the process still runs.
    public var isRunning: Bool { kill(pid, 0) == 0 }

    /// Stops the process (TERM, then KILL after two seconds). Safe to call twice.
    public func stop() async {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        for _ in 0..<20 {
            try? await Task.sleep(for: .milliseconds(100))
            if !isRunning { return }
        }
        kill(pid, SIGKILL)
    }

    public func log() -> String {
        (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`. The timeout is a hang
    /// guard only: moto alone takes over ten seconds to start on an idle machine here, and CI is
    /// several times slower; a process that exits ends the wait at once.
    public func waitForPort(_ port: Int, timeout: Duration = .seconds(600)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if canConnect(port: port) { return }
            guard isRunning else {
                throw SandboxError("the server exited before listening on port \(port); its log:\n\(log().suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw SandboxError("nothing listened on 127.0.0.1:\(port) within \(timeout); log:\n\(log().suffix(2000))")
    }

    static func shellQuote(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

/// Whether a TCP connection to 127.0.0.1:`port` succeeds.
public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return result == 0
}

/// A private temporary directory.
func makeSandboxDirectory(_ prefix: String) throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else {
        throw SandboxError("could not create a temporary directory in /tmp: \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}

extension BackgroundProcess {
    /// Starts a Python script of the sandbox's own (written into a new private directory) that
    /// listens on a free loopback port, waits for the port, then runs `ready`. Up to three
    /// attempts on fresh ports: another process may bind the free port before the script does.
    /// A failed attempt leaves no process and no directory behind.
    static func startScript<Started>(
        _ what: String, name: String, source: String, fileName: String, directoryPrefix: String,
        environment: [String: String] = [:],
        arguments: (_ port: Int, _ directory: String) -> [String],
        ready: (_ process: BackgroundProcess, _ port: Int) async throws -> Started
    ) async throws -> Started {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let directory = try makeSandboxDirectory(directoryPrefix)
            let script = directory + "/" + fileName
            var process: BackgroundProcess?
            do {
                try Data(source.utf8).write(to: URL(fileURLWithPath: script))
                let port = try SandboxCluster.freeLoopbackPort()
                let started = try await BackgroundProcess.start(name: name, command: ["python3", "-u", script] + arguments(port, directory),
                                                                environment: environment, directory: directory)
                process = started
                try await started.waitForPort(port)
                return try await ready(started, port)
            } catch {
                await process?.stop()
                try? FileManager.default.removeItem(atPath: directory)
                lastError = error
            }
        }
        throw lastError ?? SandboxError("\(what) did not start")
    }
}

import Foundation
import TSBackup

/// A child process the chaos campaign can SIGKILL at any moment: spawned directly (no wrapper
/// that would outlive it), its output in files, reaped by polling so no thread blocks.
/// Only the spawned process is killed; its own children (pg_dump, pg_restore, psql,
/// pg_basebackup) are left running as orphans, as they would be after a real SIGKILL.
struct ChaosChild: Sendable {
    let pid: pid_t
    let outputFile: String
    let errorFile: String
    let started: ContinuousClock.Instant

    struct Exit: Sendable {
        var exitCode: Int32?
        var signal: Int32?
        var output: String
        var error: String
        var seconds: Double
        var succeeded: Bool { exitCode == 0 }
        var text: String { output + "\n" + error }
        var status: String { exitCode.map { "exit \($0)" } ?? signal.map { "signal \($0)" } ?? "unknown" }
    }

    /// Starts `executable` with `arguments` in `directory` (the environment replaced by `environment`).
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String], directory: String,
                      outputFile: String, errorFile: String) throws -> ChaosChild {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errorFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // `cd` then `exec`: the pid we kill is the program's own.
        let argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory, executable] + arguments
        let envp = environment.map { "\($0.key)=\($0.value)" }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cEnvp: [UnsafeMutablePointer<CChar>?] = envp.map { strdup($0) } + [nil]
        defer {
            for p in cArgv { free(p) }
            for p in cEnvp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, &cArgv, &cEnvp)
        guard rc == 0 else { throw SandboxLikeError("posix_spawn failed: \(String(cString: strerror(rc)))") }
        return ChaosChild(pid: pid, outputFile: outputFile, errorFile: errorFile, started: .now)
    }

    /// The exit status if the process has ended (and reaps it), else nil.
    func poll() -> (Int32?, Int32?)? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        let low = status & 0x7f
        if low == 0 { return ((status >> 8) & 0xff, nil) }
        return (nil, low)
    }

    /// Waits for the end (a hang guard: SIGKILL after `timeout`, reported as `hung`).
    func wait(timeout: Duration) async -> (exit: Exit, hung: Bool) {
        let deadline = ContinuousClock.now + timeout
        var hung = false
        while true {
            if let (code, signal) = poll() {
                return (collect(code, signal), hung)
            }
            if ContinuousClock.now > deadline && !hung {
                hung = true
                kill(pid, SIGKILL)
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    func collect(_ code: Int32?, _ signal: Int32?) -> Exit {
        let seconds = (ContinuousClock.now - started).seconds
        let output = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
        let error = (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? ""
        return Exit(exitCode: code, signal: signal, output: output, error: error, seconds: seconds)
    }
}

struct SandboxLikeError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension String {
    /// The text on one line, cut to `limit` characters (for the violation list).
    func singleLine(limit: Int) -> String {
        let joined = split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: " | ")
        return joined.count > limit ? String(joined.prefix(limit)) + "..." : joined
    }
}

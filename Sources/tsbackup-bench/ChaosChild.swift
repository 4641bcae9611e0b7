import Foundation
import Synchronization
import TSBackup

/// A child process the chaos campaign can SIGKILL at any moment: run through ProcessRunner (whose
/// swift-subprocess monitor reaps children, so no waitpid of our own), with `sh` writing its pid
/// and then `exec`-ing the program, so the pid we kill is the program's own. Only that process is
/// killed; its own children (pg_dump, pg_restore, psql, pg_basebackup) are left running as
/// orphans, as they would be after a real SIGKILL.
final class ChaosChild: Sendable {
    let pid: pid_t
    let started: ContinuousClock.Instant
    private let result: ResultBox
    private let task: Task<Void, Never>

    /// Where the runner's task leaves the outcome.
    final class ResultBox: Sendable {
        let value = Mutex<Finished?>(nil)
    }

    struct Finished: Sendable {
        var exitCode: Int32?
        var signal: Int32?
        var standardOutput: String
        var standardError: String
    }

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

    private init(pid: pid_t, started: ContinuousClock.Instant, result: ResultBox, task: Task<Void, Never>) {
        self.pid = pid
        self.started = started
        self.result = result
        self.task = task
    }

    /// Starts `executable` with `arguments` in `directory` with `environment` (nil removes a variable).
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String?], directory: String,
                      pidFile: String) async throws -> ChaosChild {
        try? FileManager.default.removeItem(atPath: pidFile)
        let box = ResultBox()
        let started = ContinuousClock.now
        let script = "echo $$ > \"$0\"; cd \"$1\" || exit 1; shift; exec \"$@\""
        let task = Task {
            let outcome: Finished
            do {
                let run = try await ProcessRunner.run("/bin/sh", ["-c", script, pidFile, directory, executable] + arguments, environment: environment)
                outcome = Finished(exitCode: run.exitCode, signal: run.signal, standardOutput: run.standardOutput, standardError: run.standardError)
            } catch {
                outcome = Finished(exitCode: 127, signal: nil, standardOutput: "", standardError: "could not start \(executable): \(error)")
            }
            box.value.withLock { $0 = outcome }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                return ChaosChild(pid: pid, started: started, result: box, task: task)
            }
            if box.value.withLock({ $0 != nil }) || ContinuousClock.now > deadline {
                return ChaosChild(pid: -1, started: started, result: box, task: task)
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Whether the process has ended.
    var ended: Bool { result.value.withLock { $0 != nil } }

    /// Waits for the end (a hang guard: SIGKILL after `timeout`, reported as `hung`).
    func wait(timeout: Duration) async -> (exit: Exit, hung: Bool) {
        let deadline = ContinuousClock.now + timeout
        var hung = false
        while !ended {
            if ContinuousClock.now > deadline && !hung {
                hung = true
                if pid > 0 { kill(pid, SIGKILL) }
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let outcome = result.value.withLock { $0 }!
        return (Exit(exitCode: outcome.exitCode, signal: outcome.signal, output: outcome.standardOutput, error: outcome.standardError,
                     seconds: (ContinuousClock.now - started).seconds), hung)
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

import Foundation

/// Clean-up after a failure must reach a server that may itself be the cause: one that crashed
/// or was restarted (`pg_ctl stop -m immediate`) under the run is unreachable, then in crash
/// recovery ("the database system is starting up", 57P03), and only then accepts connections.
enum ServerRecovery {
    /// Runs `body` until it succeeds, retrying while the server cannot be reached or is starting
    /// up or shutting down, for at most `patience`. Returns the last error's message, or nil.
    static func retryingWhileUnreachable(patience: Duration, _ body: @Sendable () async throws -> Void) async -> String? {
        let deadline = ContinuousClock.now + patience
        while true {
            do {
                try await body()
                return nil
            } catch {
                let failure = error as? TSBackupError
                // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now.
                let transient = failure?.kind == .connection || ["57P01", "57P02", "57P03"].contains(failure?.sqlState ?? "")
                guard transient, ContinuousClock.now < deadline else { return failure?.message ?? "\(error)" }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

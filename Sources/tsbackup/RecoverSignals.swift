import Dispatch
import Foundation
import TSBackup

/// SIGTERM and SIGINT for `recover`: instead of dying at once (which left the server it started
/// running, docs/reliability.md), the run stops that server (``RecoverServerGuard/interrupt(signal:)``),
/// says so and exits 1. The signals are ignored by the default action and delivered through
/// dispatch sources, so the handler may run async code; children get default dispositions back
/// (swift-subprocess resets every signal before exec).
final class RecoverSignals {
    /// Kept for the run's lifetime: a released source stops delivering.
    private let sources: [any DispatchSourceSignal]

    init(_ serverGuard: RecoverServerGuard) {
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                Task {
                    guard let message = await serverGuard.interrupt(signal: number) else { return }
                    fflush(nil)
                    printError(TSBackupError(.failed, message))
                    exit(TSBackupError.Kind.failed.exitCode)
                }
            }
            source.resume()
            return source
        }
    }

    /// Once a signal came, the run's own ending waits here for the handler, which ends the process.
    static func waitForHandler() async -> Never {
        while true { try? await Task.sleep(for: .seconds(3600)) }
    }
}

import Foundation
import Synchronization

/// Turns step changes and pg_restore's per-item lines into `Restore.Progress` updates, at most a
/// few per second (a 5,000-chunk restore prints tens of thousands of lines).
final class RestoreProgressReporter: Sendable {
    private let onProgress: (@Sendable (Restore.Progress) -> Void)?
    private let started: Date
    private let interval: TimeInterval
    private struct State {
        var phase = ""
        var lastSent = Date.distantPast
        var counter: RestoreProgressCounter?
    }
    private let state = Mutex(State())

    init(started: Date, interval: TimeInterval = 0.5, onProgress: (@Sendable (Restore.Progress) -> Void)?) {
        self.onProgress = onProgress
        self.started = started
        self.interval = interval
    }

    /// Counts from here on; set once the archive's contents are known (after preflight).
    var counter: RestoreProgressCounter? {
        get { state.withLock { $0.counter } }
    }

    func attach(_ counter: RestoreProgressCounter) {
        state.withLock { $0.counter = counter }
    }

    /// A new step: always reported.
    func begin(_ phase: String) {
        state.withLock { $0.phase = phase; $0.lastSent = Date() }
        send(phase)
    }

    /// An item finished within the current step: reported if the last update is old enough.
    func tick() {
        guard onProgress != nil else { return }
        let now = Date()
        let phase: String? = state.withLock { state in
            guard now.timeIntervalSince(state.lastSent) >= interval else { return nil }
            state.lastSent = now
            return state.phase
        }
        if let phase { send(phase) }
    }

    private func send(_ phase: String) {
        guard let onProgress else { return }
        let snapshot = counter?.snapshot
        onProgress(Restore.Progress(
            phase: phase, elapsed: Date().timeIntervalSince(started),
            objectsDone: snapshot?.objectsDone ?? 0, objectsTotal: snapshot?.objectsTotal ?? 0,
            bytesLoaded: snapshot?.bytesDone ?? 0, bytesTotal: snapshot?.bytesTotal ?? 0))
    }
}

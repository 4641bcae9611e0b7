import Synchronization

/// Entries the service is reading outside a job (a download streaming to a client) and entries
/// retention is deleting, so neither happens to the other: retention keeps an entry that a
/// download holds, and a download does not start on an entry being deleted.
public final class EntryHolds: Sendable {
    struct State {
        var readers: [String: Int] = [:]
        var deleting: Set<String> = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Ids held by readers now.
    public var held: Set<String> { state.withLock { Set($0.readers.keys) } }

    /// Holds `id` for a reader; false while it is being deleted.
    public func acquireReader(_ id: String) -> Bool {
        state.withLock { state in
            guard !state.deleting.contains(id) else { return false }
            state.readers[id, default: 0] += 1
            return true
        }
    }

    public func releaseReader(_ id: String) {
        state.withLock { state in
            guard let n = state.readers[id] else { return }
            state.readers[id] = n > 1 ? n - 1 : nil
        }
    }

    /// Marks `id` as being deleted; false (and nothing marked) while a reader holds it.
    public func claimForDeletion(_ id: String) -> Bool {
        state.withLock { state in
            guard state.readers[id] == nil else { return false }
            state.deleting.insert(id)
            return true
        }
    }

    public func endDeletion(_ id: String) {
        _ = state.withLock { $0.deleting.remove(id) }
    }
}

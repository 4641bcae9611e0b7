/// Bytes of part buffers a client may hold at once, shared by every transfer of that client, so
/// many files moved in parallel still stay within `Options.memoryBudget` (tsbackup promises a
/// bounded peak memory whatever the database size).
actor S3MemoryBudget {
    let limit: Int64
    private var inUse: Int64 = 0
    private var waiters: [(bytes: Int64, continuation: CheckedContinuation<Void, Never>)] = []

    init(limit: Int64) {
        self.limit = max(limit, 1)
    }

    /// Waits until `bytes` fit (a request larger than the whole budget waits for all of it),
    /// first come first served so large parts are not starved by small ones.
    func acquire(_ bytes: Int64) async {
        let bytes = min(max(bytes, 0), limit)
        if waiters.isEmpty && inUse + bytes <= limit {
            inUse += bytes
            return
        }
        await withCheckedContinuation { waiters.append((bytes, $0)) }
    }

    /// Transfers waiting for room (for tests and diagnostics).
    var waitingCount: Int { waiters.count }
    var bytesInUse: Int64 { inUse }

    func release(_ bytes: Int64) {
        inUse -= min(max(bytes, 0), limit)
        while let first = waiters.first, inUse + first.bytes <= limit {
            waiters.removeFirst()
            inUse += first.bytes
            first.continuation.resume()
        }
    }

    /// Runs `body` while holding `bytes` of the budget.
    nonisolated func withBytes<T: Sendable>(_ bytes: Int64, _ body: () async throws -> T) async throws -> T {
        await acquire(bytes)
        do {
            let result = try await body()
            await release(bytes)
            return result
        } catch {
            await release(bytes)
            throw error
        }
    }
}

import Foundation
import Synchronization

/// The S3 repository's lock: a lease object naming its holder, renewed while the run lasts.
///
/// Every change to the lease is a conditional write, so two runs never both believe they hold it:
/// - taking a free lease creates the object with `If-None-Match: *` (of two runs only one creates it);
/// - taking over a stale lease (expired, or its process on this machine is gone) replaces exactly
///   the version that was read, with `If-Match: <its ETag>`: of two runs that both saw the same
///   stale lease, only the first replacement succeeds; the other gets 412, reads the lease again,
///   finds the winner's fresh one and is refused ("in use by ...");
/// - renewal replaces only the version this run wrote last, and release deletes only that version,
///   so a run whose lease was taken over never overwrites or removes the new holder's lease.
///
/// Each lease carries a random nonce. After a takeover the run waits a moment and reads the lease
/// back: it holds the lease only if the nonce is its own. That also covers stores that evaluate a
/// condition and the write non-atomically (moto) or ignore `If-Match`: the last writer's lease is
/// what both read back, so only one of them goes on.
final class S3Lease: RepositoryLease {
    struct Holder: Codable, Equatable {
        var holder: String
        var host: String
        var pid: Int32
        var command: String
        var acquired: Date
        var expires: Date
        /// Random per acquisition: tells this run's lease from another's (leases of older versions lack it).
        var nonce: String?
    }

    let repository: S3Repository
    let staleHolder: String?
    let holder: Holder
    /// Whether this run still holds the lease (false once lost or released), and the ETag of the
    /// version it wrote last (nil if the store sends none: then writes are unconditional).
    private let state: Mutex<(held: Bool, etag: String?)>
    private let renewal: Mutex<Task<Void, Never>?>

    private init(repository: S3Repository, staleHolder: String?, holder: Holder, etag: String?) {
        self.repository = repository
        self.staleHolder = staleHolder
        self.holder = holder
        self.state = Mutex((true, etag))
        self.renewal = Mutex(nil)
    }

    /// Seconds a lease lasts without renewal (TSBACKUP_S3_LEASE_SECONDS, default 300).
    static func duration(_ environment: [String: String]) -> TimeInterval {
        environment["TSBACKUP_S3_LEASE_SECONDS"].flatMap(Double.init).map { max(2, $0) } ?? 300
    }

    /// Seconds between taking over a stale lease and reading it back (TSBACKUP_S3_LEASE_SETTLE_SECONDS,
    /// default 1): long enough for a concurrent taker's write to have landed.
    static func settle(_ environment: [String: String]) -> TimeInterval {
        environment["TSBACKUP_S3_LEASE_SETTLE_SECONDS"].flatMap(Double.init).map { max(0, $0) } ?? 1
    }

    static func describe(_ holder: Holder) -> String {
        "pid \(holder.pid) on \(holder.host) since \(ISO8601DateFormatter().string(from: holder.acquired)) (\(holder.command))"
    }

    static func inUse(_ repository: S3Repository, by current: Holder) -> TSBackupError {
        TSBackupError(.precondition, "The repository \(repository.location) is in use by \(describe(current)); its lease runs until \(ISO8601DateFormatter().string(from: current.expires)). Wait for that run to finish, then try again; two runs never write one repository at once. If that run is dead on another machine, its lease expires by itself.")
    }

    static func acquire(_ repository: S3Repository, command: String) async throws -> S3Lease {
        let lockKey = repository.s3Location.key("lock")
        let client = repository.client
        let ttl = duration(repository.environment)
        let host = ProcessInfo.processInfo.hostName
        let nonce = UUID().uuidString
        func failure(_ error: S3Error) -> TSBackupError {
            error.tsBackupError(endpoint: repository.endpoint, bucket: repository.s3Location.bucket)
        }
        func fresh() -> Holder {
            let now = Date()
            return Holder(holder: "tsbackup \(TSBackupVersion.current)", host: host, pid: getpid(), command: command,
                          acquired: now, expires: now.addingTimeInterval(ttl), nonce: nonce)
        }
        var stale: String?
        for _ in 0..<4 {
            // A free lease: create it.
            let mine = fresh()
            do {
                let etag = try await client.putObject(lockKey, data: Data(try JSONOutput.encode(mine).utf8), ifNoneMatch: true)
                return S3Lease(repository: repository, staleHolder: stale, holder: mine, etag: etag).renewing(ttl: ttl)
            } catch let error as S3Error where error.code == .preconditionFailed {
                // Held, or left by a run that died: read who holds it.
            } catch let error as S3Error {
                throw failure(error)
            }
            let read: (data: Data, etag: String?)
            do {
                read = try await client.getObjectAndETag(lockKey)
            } catch let error as S3Error where error.code == .noSuchKey {
                continue  // released meanwhile: try again
            } catch let error as S3Error {
                throw failure(error)
            }
            let current = try? JSONOutput.decode(Holder.self, from: read.data)
            if let current, current.nonce == nonce {
                // Our own create, whose answer was lost and whose retry saw 412.
                return S3Lease(repository: repository, staleHolder: stale, holder: current, etag: read.etag).renewing(ttl: ttl)
            }
            let holderGone = current.map { $0.host == host && $0.pid != getpid() && kill($0.pid, 0) != 0 && errno == ESRCH } ?? false
            if let current, current.expires > Date(), !holderGone {
                throw inUse(repository, by: current)
            }
            // Expired, unreadable, or its process is gone: a stale lease. Replace exactly the version read.
            stale = current.map { describe($0) + (holderGone ? ", a process that no longer runs" : ", whose lease expired \(ISO8601DateFormatter().string(from: $0.expires))") } ?? "an unreadable lease"
            guard let staleETag = read.etag else {
                throw TSBackupError(.failed, "The store behind \(repository.location) sent no ETag for the lease object, so a stale lease cannot be taken over safely. Remove the lease `lock` under the repository's prefix once you are sure no run writes it.")
            }
            try await TestSeams.leaseTakeoverGate()
            let taker = fresh()
            var takenETag: String?
            do {
                takenETag = try await client.putObject(lockKey, data: Data(try JSONOutput.encode(taker).utf8), ifMatch: staleETag)
            } catch let error as S3Error where error.code == .preconditionFailed || error.code == .noSuchKey {
                // Another run replaced or removed the stale lease first (or a retry of our own write
                // found it done): read it again and decide from what is there now.
                continue
            } catch let error as S3Error {
                throw failure(error)
            }
            // Read back after a moment: the lease is ours only if it still carries our nonce.
            try await Task.sleep(for: .seconds(settle(repository.environment)))
            let back: (data: Data, etag: String?)
            do {
                back = try await client.getObjectAndETag(lockKey)
            } catch let error as S3Error where error.code == .noSuchKey {
                continue
            } catch let error as S3Error {
                throw failure(error)
            }
            guard let now = try? JSONOutput.decode(Holder.self, from: back.data), now.nonce == nonce else {
                if let other = try? JSONOutput.decode(Holder.self, from: back.data) { throw inUse(repository, by: other) }
                continue
            }
            return S3Lease(repository: repository, staleHolder: stale, holder: now, etag: back.etag ?? takenETag).renewing(ttl: ttl)
        }
        throw TSBackupError(.precondition, "Could not take the lease of \(repository.location): other runs took it at the same time. Try again.")
    }

    /// Rewrites the lease with a later expiry every third of its duration, replacing only the
    /// version this run wrote; if another run took the lease over meanwhile, renewal stops.
    private func renewing(ttl: TimeInterval) -> S3Lease {
        let task = Task { [self] in
            let key = repository.s3Location.key("lock")
            var current = holder
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(ttl / 3))
                if Task.isCancelled { break }
                let (held, version) = state.withLock { $0 }
                guard held else { break }
                current.expires = Date().addingTimeInterval(ttl)
                guard let data = try? JSONOutput.encode(current) else { continue }
                do {
                    let written = try await repository.client.putObject(key, data: Data(data.utf8), ifMatch: version)
                    state.withLock { $0.etag = written ?? $0.etag }
                } catch let error as S3Error where error.code == .preconditionFailed || error.code == .noSuchKey {
                    // Changed under us: ours still if it carries our nonce (a retried write whose
                    // first answer was lost); otherwise another run took it over.
                    if let read = try? await repository.client.getObjectAndETag(key),
                       let now = try? JSONOutput.decode(Holder.self, from: read.data), now.nonce != nil, now.nonce == holder.nonce {
                        state.withLock { $0.etag = read.etag }
                        continue
                    }
                    state.withLock { $0.held = false }  // lost: never touch the lease again
                    break
                } catch {
                    // A transient failure: the next round tries again while the lease still runs.
                }
            }
        }
        renewal.withLock { $0 = task }
        return self
    }

    func release() async {
        let task = renewal.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        guard let task else { return }
        task.cancel()
        await task.value
        let (held, version) = state.withLock { value -> (Bool, String?) in
            defer { value.held = false }
            return value
        }
        guard held else { return }
        try? await repository.client.deleteObject(repository.s3Location.key("lock"), ifMatch: version)
    }
}

import Foundation
import Synchronization

/// One entry as a repository listing names it: enough to tell whether its manifest changed
/// since it was last read, without reading it.
public struct ListedEntry: Sendable, Hashable {
    /// The entry's id.
    public var id: String
    /// Where it is: a directory (`backups/<id>` or `backups/<id>.partial`) or an S3 key prefix.
    public var location: String
    /// Identifies the manifest's stored bytes (inode, size and change times of the local file;
    /// the S3 object's ETag and size). Nil when the entry has no manifest: it is incomplete.
    public var fingerprint: String?
    /// True for a staging directory (`<id>.partial`): incomplete whatever it holds.
    public var staging: Bool

    public init(id: String, location: String, fingerprint: String?, staging: Bool = false) {
        self.id = id
        self.location = location
        self.fingerprint = fingerprint
        self.staging = staging
    }
}

extension Repository {
    public func listing() async throws -> [ListedEntry]? { nil }

    public func entry(listed: ListedEntry) async throws -> RepositoryEntry {
        guard let entry = try await entries().first(where: { $0.id == listed.id }) else {
            return RepositoryEntry(id: listed.id, state: .incomplete, location: listed.location)
        }
        return entry
    }
}

/// The repository's entries for a long-running reader (the service's backup list): decoded
/// manifests are kept and reused while the repository's listing shows the same manifest
/// (same fingerprint), so a request costs one listing instead of reading and decoding every
/// manifest. Entries that appeared, changed or went away since (also through the CLI beside the
/// service) are seen by the next call, because every call lists the repository again.
///
/// ``invalidate()`` drops everything: the service calls it when it wrote or deleted entries
/// itself, so its own changes never depend on a fingerprint at all.
public final class EntryListingCache: Sendable {
    struct Cached: Sendable {
        var fingerprint: String
        var entry: RepositoryEntry
    }

    struct State: Sendable {
        var location: String?
        var generation = 0
        var byLocation: [String: Cached] = [:]
        var hits = 0
        var reads = 0
    }

    private let state = Mutex(State())
    /// When false, every call reads every manifest (what the service did before the cache; kept
    /// for the benchmark's before/after figures).
    public let enabled: Bool

    public init(enabled: Bool = true) {
        self.enabled = enabled
    }

    /// Forgets every cached manifest.
    public func invalidate() {
        state.withLock { state in
            state.generation += 1
            state.byLocation = [:]
        }
    }

    /// Manifests reused from the cache and manifests read, since the start (for tests and logs).
    public var counts: (hits: Int, reads: Int) { state.withLock { ($0.hits, $0.reads) } }

    /// Every entry of `repository`, oldest first, as ``Repository/entries()`` returns them.
    public func entries(of repository: any Repository) async throws -> [RepositoryEntry] {
        guard enabled, let listed = try await repository.listing() else {
            let entries = try await repository.entries()
            state.withLock { $0.reads += entries.count }
            return entries
        }
        let (known, generation) = state.withLock { state -> ([String: Cached], Int) in
            if state.location != repository.location {
                state.location = repository.location
                state.generation += 1
                state.byLocation = [:]
            }
            return (state.byLocation, state.generation)
        }
        var fresh: [String: Cached] = [:]
        var result = [RepositoryEntry?](repeating: nil, count: listed.count)
        var misses: [(Int, ListedEntry)] = []
        for (index, item) in listed.enumerated() {
            if let fingerprint = item.fingerprint, let hit = known[item.location], hit.fingerprint == fingerprint {
                result[index] = hit.entry
                fresh[item.location] = hit
            } else {
                misses.append((index, item))
            }
        }
        // The fingerprint was taken before the read, so what is stored is at least as new as the
        // fingerprint says: a manifest replaced after the listing shows a new fingerprint next time.
        let read = try await Concurrently.map(misses, limit: 8) { miss in
            (miss.0, miss.1, try await repository.entry(listed: miss.1))
        }
        for (index, item, entry) in read {
            result[index] = entry
            if let fingerprint = item.fingerprint { fresh[item.location] = Cached(fingerprint: fingerprint, entry: entry) }
        }
        state.withLock { state in
            state.hits += listed.count - misses.count
            state.reads += misses.count
            // An invalidation while this call read keeps its word: nothing read before it is kept.
            if state.generation == generation { state.byLocation = fresh }
        }
        return result.compactMap { $0 }
    }
}

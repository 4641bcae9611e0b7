import Foundation

/// Server sessions for work that plans over many chunks, a new one every few thousand chunks. A
/// session keeps a cache entry for every relation it has opened or planned over until it ends:
/// one session that counted 50,000 chunks (and their 100,000 indexes) through their roots grew
/// to about 1.06 GB on the server. Used by the checks through the roots, the backup's
/// (``BatchRootCheck``) and the restore verification's (``RootWindows``). A new session costs a
/// connection and a few catalog reads, paid every few thousand chunks.
struct RotatingSessions {
    static let chunksPerSession = 5_000

    let settings: ConnectionSettings
    let chunksPerSession: Int
    private(set) var current: DatabaseSession
    /// Sessions opened so far.
    private(set) var opened = 1
    private var planned = 0

    /// A first session, prepared for content hashing (``TableContent/prepare(_:)``), as every next one is.
    static func open(_ settings: ConnectionSettings, chunksPerSession: Int) async throws -> RotatingSessions {
        let session = try await DatabaseSession.connect(settings)
        do {
            try await TableContent.prepare(session)
        } catch {
            await session.close()
            throw error
        }
        return RotatingSessions(settings: settings, chunksPerSession: max(1, chunksPerSession), current: session)
    }

    private init(settings: ConnectionSettings, chunksPerSession: Int, current: DatabaseSession) {
        self.settings = settings
        self.chunksPerSession = chunksPerSession
        self.current = current
    }

    /// The session for a query planning over at most `chunks` chunks: a new one when this one
    /// would pass its share.
    mutating func session(planning chunks: Int) async throws -> DatabaseSession {
        if planned > 0, planned + chunks > chunksPerSession {
            await current.close()
            current = try await DatabaseSession.connect(settings)
            opened += 1
            planned = 0
            try await TableContent.prepare(current)
        }
        planned += chunks
        return current
    }

    func close() async { await current.close() }

    /// Runs `body` with sessions opened from `settings`, closing the last one whatever happens.
    static func with<T>(_ settings: ConnectionSettings, chunksPerSession: Int,
                        _ body: (inout RotatingSessions) async throws -> T) async throws -> T {
        var sessions = try await open(settings, chunksPerSession: chunksPerSession)
        do {
            let result = try await body(&sessions)
            await sessions.close()
            return result
        } catch {
            await sessions.close()
            throw error
        }
    }
}

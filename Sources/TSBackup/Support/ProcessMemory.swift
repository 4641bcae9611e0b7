#if canImport(Glibc)
import Glibc
#endif

/// glibc malloc settings a command sets once, at process start, before any thread exists.
///
/// tsbackup's threads (NIO's event loops, the concurrency pool) each get a malloc arena of their
/// own by default (up to 8 per core), and memory freed in one arena is not reused by another, so
/// a backup at tens of thousands of chunks held noticeably more resident memory than it had live
/// heap (at 10,000 chunks a live heap of at most 9 MB, 12.6 MB more resident than a tiny backup).
/// One arena kept the resident set closest to the heap (docs/performance.md, "Memory", has the
/// measurements); tsbackup's own threads mostly wait on child processes and the server, so
/// they rarely contend for it. `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment still
/// win: a setting the user made is left alone.
public enum ProcessMemory {
    public static func configure(environment: [String: String]) {
        #if canImport(Glibc)
        guard environment["MALLOC_ARENA_MAX"] == nil, environment["GLIBC_TUNABLES"] == nil else { return }
        // Glibc's Swift module does not export <malloc.h>: look mallopt up (RTLD_DEFAULT is 0).
        guard let symbol = dlsym(nil, "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        _ = mallopt(arenaMax, 1)
        #endif
    }

    /// `M_ARENA_MAX` of glibc's <malloc.h>.
    static let arenaMax: Int32 = -8
}

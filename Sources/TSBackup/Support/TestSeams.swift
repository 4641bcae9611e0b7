import Foundation

/// Hooks that let the integration tests provoke failures a real server here cannot produce. Each
/// one is read from the environment in this one place, named `TSBACKUP_TEST_...`, and changes
/// nothing unless set.
enum TestSeams {
    /// `TSBACKUP_TEST_SHORT_COPY=<schema.chunk>`: the export's copy of that chunk reads one row
    /// fewer than the chunk holds, as a read that misses compressed rows would. The export's
    /// check against the hypertable root must then fail and name the chunk.
    static func shortCopyChunk(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let value = environment["TSBACKUP_TEST_SHORT_COPY"], !value.isEmpty else { return nil }
        return value
    }

    /// `TSBACKUP_TEST_LEAVE_OUT_CHUNK=<schema.chunk>`: a batched backup's plan leaves that chunk
    /// out of its batch while the main pg_dump still excludes it, so no archive holds it, as a
    /// bug in cutting batches would. The check through the hypertable root must fail the backup
    /// and name the chunk.
    static func leaveOutChunk(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let value = environment["TSBACKUP_TEST_LEAVE_OUT_CHUNK"], !value.isEmpty else { return nil }
        return value
    }
}

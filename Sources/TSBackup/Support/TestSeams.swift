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

    /// `TSBACKUP_TEST_MISORDER_CHUNK=<schema.chunk>`: the parallel chunk pre-data puts that
    /// chunk's DEFAULT entries before its TABLE in its list, as a wrongly cut list would. The
    /// server rejects them; the restore must fail with pg_restore's message and drop the database.
    static func misorderChunk(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let value = environment["TSBACKUP_TEST_MISORDER_CHUNK"], !value.isEmpty else { return nil }
        return value
    }

    /// `TSBACKUP_TEST_SERIAL_PREDATA=1`: restore's pre-data stays one serial pg_restore whatever
    /// the chunk count and jobs, for before/after measurements with the same binary.
    static func serialPreData(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["TSBACKUP_TEST_SERIAL_PREDATA"] == "1"
    }
}

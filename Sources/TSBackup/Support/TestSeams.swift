import Foundation

/// Hooks that let the integration tests provoke failures a real server here cannot produce. Each
/// one is read from the environment in this one place, named `TSBACKUP_TEST_...`, and changes
/// nothing unless set.
public enum TestSeams {
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

    /// `TSBACKUP_TEST_CHUNK_DATA_IN_ARCHIVES=1`: a batched backup writes its chunks' rows into the
    /// batches' pg_dump archives, as tsbackup did before it copied them into data files of its
    /// own (``BatchedDump``), so the tests can make and restore a backup of the old form.
    static func chunkDataInArchives(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["TSBACKUP_TEST_CHUNK_DATA_IN_ARCHIVES"] == "1"
    }

    /// `TSBACKUP_TEST_LEASE_GATE=<dir>`: a run about to take over a stale S3 lease first creates
    /// `<dir>/stale-<pid>`, then waits (a hang guard of ten minutes: the other run may be slow to
    /// get there on a loaded machine) until `<dir>/go` exists. A test holds two runs there, so
    /// both have read the same stale lease before either replaces it.
    static func leaseTakeoverGate(environment: [String: String] = ProcessInfo.processInfo.environment) async throws {
        guard let directory = environment["TSBACKUP_TEST_LEASE_GATE"], !directory.isEmpty else { return }
        _ = FileManager.default.createFile(atPath: directory + "/stale-\(getpid())", contents: Data())
        for _ in 0..<6000 where !FileManager.default.fileExists(atPath: directory + "/go") {
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

extension TestSeams {
    /// The steps that can pause: a restore's, each chunk batch of a backup, named "chunk batch
    /// <n> of <schema.table>" (a test drops chunks there), a chunk batch after its rows were
    /// copied and before its DDL is dumped, "chunk batch <n> DDL of <schema.table>", a sweep of
    /// interrupted runs between reading a marker and checking its run, "sweep: checking <name>", and "base backup: streaming", after
    /// the first piece of pg_basebackup's stream is stored (a test crashes the server there).
    /// `TSBACKUP_TEST_PAUSE=<step>=<file>`: when a restore step whose name starts with `<step>`
    /// begins, the run creates `<file>` and waits until the test removes it, so a test can act on
    /// the server (take a lock, stop it) at that exact moment. A hang guard gives up after 300 s.
    public static func pauseIfAsked(atStep name: String, environment: [String: String] = ProcessInfo.processInfo.environment) async {
        guard let value = environment["TSBACKUP_TEST_PAUSE"], let separator = value.firstIndex(of: "=") else { return }
        let step = String(value[..<separator])
        let file = String(value[value.index(after: separator)...])
        guard !step.isEmpty, !file.isEmpty, name.hasPrefix(step) else { return }
        _ = FileManager.default.createFile(atPath: file, contents: Data(name.utf8))
        for _ in 0..<3000 where FileManager.default.fileExists(atPath: file) {
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// `TSBACKUP_TEST_MISORDER_CHUNK=<schema.chunk>`: the parallel chunk pre-data puts that
    /// chunk's DEFAULT entries before its TABLE in its list, as a wrongly cut list would. The
    /// server rejects them; the restore must fail with pg_restore's message and drop the database.
    static func misorderChunk(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let value = environment["TSBACKUP_TEST_MISORDER_CHUNK"], !value.isEmpty else { return nil }
        return value
    }
}

extension TestSeams {
    /// The same `TSBACKUP_TEST_PAUSE=<step>=<file>`, for a step that a psql child runs between
    /// two of its statements: psql arguments that create `<file>` and wait until the test
    /// removes it (a shell loop under psql's `\!`), or none. The step must be named exactly, and
    /// the pause lives in psql, not in tsbackup: a test can SIGKILL tsbackup there and see what
    /// psql does without it. A hang guard gives up after 300 s.
    static func psqlPause(atStep name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        guard let value = environment["TSBACKUP_TEST_PAUSE"], let separator = value.firstIndex(of: "=") else { return [] }
        let file = String(value[value.index(after: separator)...])
        guard value[..<separator] == name, !file.isEmpty, !file.contains("'"), !file.contains("\"") else { return [] }
        return ["-c", "\\! sh -c 'printf %s \"\(name)\" > \"\(file)\"; i=0; while [ -e \"\(file)\" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done'"]
    }
}

extension TestSeams {
    /// `TSBACKUP_TEST_ROOT_CHECK_CHUNKS_PER_SESSION=<n>`: the checks through the roots (the
    /// backup's and the restore verification's) move to a new server session every `n` chunks
    /// planned (5,000 otherwise), so a test with a few hundred chunks runs them on several sessions.
    static func rootCheckChunksPerSession(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
        guard let value = environment["TSBACKUP_TEST_ROOT_CHECK_CHUNKS_PER_SESSION"], let n = Int(value), n > 0 else { return nil }
        return n
    }

    /// `TSBACKUP_TEST_SIZES_CHUNKS_PER_SESSION=<n>`: hypertable sizes are read on a session of
    /// their own per `n` chunks, and a backup's table sizes per `n` tables (5,000 otherwise), so
    /// a test with a few dozen chunks reads them in slices.
    static func sizesChunksPerSession(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
        guard let value = environment["TSBACKUP_TEST_SIZES_CHUNKS_PER_SESSION"], let n = Int(value), n > 0 else { return nil }
        return n
    }

    /// `TSBACKUP_TEST_ANALYZE_TABLES_PER_SESSION=<n>`: the restore's ANALYZE moves to a new session
    /// every `n` tables (2,000 otherwise), so a test with a few hundred chunks uses several.
    static func analyzeTablesPerSession(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
        guard let value = environment["TSBACKUP_TEST_ANALYZE_TABLES_PER_SESSION"], let n = Int(value), n > 0 else { return nil }
        return n
    }

    /// `TSBACKUP_TEST_COUNT_CHUNK_LISTINGS=<file>`: every read of the whole chunk catalog
    /// (``ChunkPathDetector/read(_:)``) appends a line to `<file>`, so a test can check that a
    /// batched backup lists its chunks once (at 50,000 chunks each listing cost megabytes and
    /// seconds), not once to decide and again in the snapshot.
    static func countChunkListing(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["TSBACKUP_TEST_COUNT_CHUNK_LISTINGS"], !path.isEmpty else { return }
        let line = Data("chunk listing read by pid \(getpid())\n".utf8)
        if let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(line)
            try? handle.close()
        } else {
            _ = FileManager.default.createFile(atPath: path, contents: line)
        }
    }
}

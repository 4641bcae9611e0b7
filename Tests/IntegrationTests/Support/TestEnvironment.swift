import Foundation
import Synchronization
import Testing
import TSBackup
import TSBackupSandbox

/// One sandbox cluster per test process, started on first use. Every test works in databases of
/// its own, so tests can run in parallel. The cluster's watchdog stops and deletes it when the test
/// process ends, however it ends.
actor SharedCluster {
    static let shared = SharedCluster()
    private var starting: Task<SandboxCluster, any Error>?

    func cluster() async throws -> SandboxCluster {
        if let starting { return try await starting.value }
        let task = Task { try await SandboxCluster.start() }
        starting = task
        return try await task.value
    }
}

/// A fresh database name per call.
func uniqueDatabaseName(_ prefix: String) -> String {
    "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
}

/// Creates a database with TimescaleDB and the small sample data set on the shared cluster.
func makeSampleDatabase(_ prefix: String, options: SampleData.Options = .small) async throws -> (SandboxCluster, String) {
    let cluster = try await SharedCluster.shared.cluster()
    let name = uniqueDatabaseName(prefix)
    try await cluster.createDatabase(name)
    try await cluster.withSuperuser(database: name) { try await SampleData(options).load(into: $0) }
    return (cluster, name)
}

/// Runs a backup (``runBackup``) that pauses where its step named `step` begins (the
/// `TSBACKUP_TEST_PAUSE` seam, `marker` its file), runs `whilePaused` while it waits there, then
/// lets it go on. Requires that the backup paused; returns its result and what `whilePaused`
/// returned. The pause is waited for as a state (the marker file), with a hang guard of ten
/// minutes only; the marker is removed whether `whilePaused` succeeds or throws.
func pausedBackup<T>(_ cluster: SandboxCluster, _ database: String, repository: String, _ extra: [String] = [],
                     at step: String, marker: String, sourceLocation: SourceLocation = #_sourceLocation,
                     whilePaused: () async throws -> T) async throws -> (backup: ProcessResult, value: T) {
    async let running = runBackup(cluster, database, repository: repository, extra,
                                  environment: ["TSBACKUP_TEST_PAUSE": "\(step)=\(marker)"])
    for _ in 0..<6000 where !FileManager.default.fileExists(atPath: marker) {  // a hang guard of ten minutes
        try await Task.sleep(for: .milliseconds(100))
    }
    var value: T?
    do {
        if FileManager.default.fileExists(atPath: marker) { value = try await whilePaused() }
    } catch {
        try? FileManager.default.removeItem(atPath: marker)
        throw error
    }
    try? FileManager.default.removeItem(atPath: marker)
    let backup = try await running
    let done = try #require(value, "the backup never paused at \"\(step)\": \(backup.standardError)", sourceLocation: sourceLocation)
    return (backup, done)
}

/// Runs the real `tsbackup` binary built next to the test bundle.
enum CLI {
    static var executable: String {
        // scripts/sanitize.sh runs the suites against an ASan or TSan build of tsbackup.
        if let override = ProcessInfo.processInfo.environment["TSBACKUP_TEST_BINARY"], !override.isEmpty {
            return override
        }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: me).deletingLastPathComponent()
        // The test binary may sit inside a .xctest bundle directory on some platforms.
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("tsbackup").path),
              directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("tsbackup").path
    }

    /// `tsbackup-wal` (the archive commands alone), built beside tsbackup.
    static var walExecutable: String {
        (executable as NSString).deletingLastPathComponent + "/tsbackup-wal"
    }

    /// Runs tsbackup (or `executable`) with `arguments`; only the variables in `environment` are
    /// added (PG* variables of the test process are cleared so they cannot leak into a test).
    static func run(_ arguments: [String], environment: [String: String] = [:], executable: String = CLI.executable) async throws -> ProcessResult {
        var env: [String: String?] = [:]
        for key in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPASSFILE", "PGSSLMODE", "PGSERVICE"] {
            env[key] = .some(nil)
        }
        env["HOME"] = NSTemporaryDirectory()  // no ~/.pgpass of the machine's user
        for (key, value) in environment { env[key] = value }
        return try await ProcessRunner.run(executable, arguments, environment: env)
    }
}

/// A session that inserts batches of 20 rows into `public.conditions` (also into new chunks, since
/// `step` moves on with every batch) until stopped, and counts the batches it committed.
///
/// Tests wait for its counts (states), never for a time: ``waitForBatches(_:)`` before the run
/// under test, so writes are under way however slowly the machine starts the writer; and again
/// after it, so rows are certainly committed after the run's snapshot.
final class ConditionsWriter: Sendable {
    private struct State {
        var committed = 0
        var stop = false
        var failure: String?
    }
    /// Shared with the writing task (a `Mutex` cannot be copied into it).
    private final class Shared: Sendable {
        let state = Mutex(State())
    }
    private let shared: Shared
    private let task: Task<Void, Never>

    init(_ cluster: SandboxCluster, _ database: String, from start: String, step: String) {
        let shared = Shared()
        self.shared = shared
        task = Task {
            do {
                try await DatabaseSession.with(cluster.settings(database: database)) { session in
                    var n = 0
                    // A flag, not cancellation: the statement in flight always completes.
                    while !shared.state.withLock({ $0.stop }) {
                        n += 1
                        try await session.execute("""
                            INSERT INTO public.conditions (time, device_id, temperature)
                            SELECT timestamptz '\(start)' + make_interval(\(step) => \(n) * 7 + g), 1 + g % 4, \(n)
                            FROM generate_series(1, 20) g
                            """)
                        shared.state.withLock { $0.committed = n }
                    }
                }
            } catch {
                shared.state.withLock { $0.failure = "\(error)" }
            }
        }
    }

    /// A test that throws before ``stop()`` still ends the writer.
    deinit { shared.state.withLock { $0.stop = true } }

    /// Batches committed so far.
    var committed: Int { shared.state.withLock { $0.committed } }

    /// Waits until at least `count` batches have committed; a hang guard of ten minutes.
    func waitForBatches(_ count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(600)
        while true {
            let (committed, failure) = shared.state.withLock { ($0.committed, $0.failure) }
            if let failure { throw SandboxError("the conditions writer failed: \(failure)") }
            if committed >= count { return }
            guard ContinuousClock.now < deadline else { throw SandboxError("hang guard: the conditions writer committed \(committed) of \(count) batches") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Stops after the statement in flight; returns how many batches committed.
    func stop() async throws -> Int {
        shared.state.withLock { $0.stop = true }
        await task.value
        let (committed, failure) = shared.state.withLock { ($0.committed, $0.failure) }
        if let failure { throw SandboxError("the conditions writer failed: \(failure)") }
        return committed
    }
}

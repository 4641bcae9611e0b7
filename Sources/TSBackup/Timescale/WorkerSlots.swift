import PostgresNIO

/// Whether the restored database's TimescaleDB scheduler will find the two slots it needs: one of
/// TimescaleDB's own pool (`timescaledb.max_background_workers`) and one of PostgreSQL's
/// background-worker slots (`max_worker_processes`). Read once in the restore's preflight, from
/// `pg_stat_activity`, before the database is created.
///
/// How TimescaleDB counts (its loader, `bgw_counter.c` and `bgw_launcher.c`): the launcher
/// reserves the pool's first slot when it starts; every database with TimescaleDB gets a
/// scheduler that holds one slot for as long as the database exists (released only when the
/// scheduler is stopped or the database dropped); each job a scheduler starts reserves one more
/// slot for as long as it runs (`ts_bgw_worker_reserve`) and releases it when it ends. A
/// scheduler that finds the pool full is not started; the launcher retries on its next round
/// (every minute, or at the next start/stop message), so a slot a job worker frees is taken up,
/// but one held by another database's scheduler never frees. All of these workers are dynamic
/// PostgreSQL background workers too, and each needs a `max_worker_processes` slot while it runs.
///
/// In `pg_stat_activity` (PostgreSQL 15, TimescaleDB 2.19.3) the launcher's backend_type is
/// "TimescaleDB Background Worker Launcher", a scheduler's "TimescaleDB Background Worker
/// Scheduler" (in its database), and a job worker's is its job's application_name, which
/// TimescaleDB writes as "<name> [<job id>]" (e.g. "Job History Log Retention Policy [3]").
struct WorkerSlots: Sendable, Equatable {
    /// `max_worker_processes`.
    var maxWorkerProcesses: Int
    /// `timescaledb.max_background_workers`.
    var timescaleMaxWorkers: Int
    /// Databases whose TimescaleDB scheduler runs now: each holds its pool slot for good.
    var schedulers: Int
    /// TimescaleDB job workers running now: each holds a slot of both pools until its job ends.
    var jobWorkers: Int
    /// Parallel query workers running now: `max_worker_processes` slots, held for one query.
    var parallelWorkers: Int
    /// Every other background worker running now, TimescaleDB's launcher and schedulers included
    /// (the logical replication launcher, replication workers, other extensions' workers): they
    /// hold their `max_worker_processes` slots as long as the server runs, as far as tsbackup can tell.
    var lastingWorkers: Int
    /// How many of `lastingWorkers` are not TimescaleDB's launcher or schedulers, and their
    /// backend types (for the message).
    var otherWorkers: Int
    var otherWorkerTypes: [String]

    static let launcherType = "TimescaleDB Background Worker Launcher"
    static let schedulerType = "TimescaleDB Background Worker Scheduler"
    /// A TimescaleDB job worker's backend_type: its job's application_name, "<name> [<job id>]".
    static let jobWorkerPattern = #" \[[0-9]+\]$"#
    /// PostgreSQL's own processes in pg_stat_activity that are not background workers and take
    /// no `max_worker_processes` slot (the autovacuum workers have their own pool). The logical
    /// replication launcher is not here: it is a background worker and holds a slot.
    static let ownProcessTypes = [
        "client backend", "autovacuum launcher", "autovacuum worker", "checkpointer", "background writer",
        "walwriter", "archiver", "startup", "walreceiver", "walsender", "logger", "standalone backend",
    ]

    /// The TimescaleDB pool's slots that stay taken: the launcher's (whenever the pool has one:
    /// TimescaleDB reserves it before anything else, also while the launcher restarts) and one
    /// per running scheduler.
    var timescaleLasting: Int { (timescaleMaxWorkers > 0 ? 1 : 0) + schedulers }

    /// What the preflight does about it: a refusal (nil when the scheduler can start) and warnings.
    ///
    /// Refused only when slots that stay taken leave none for the scheduler, in either pool: then
    /// it never starts, and the restore would fail its "TimescaleDB scheduler running" check
    /// after all the work, dropping the database. Workers that end on their own (job workers,
    /// parallel workers) only warn: the launcher starts the scheduler once one ends, and the
    /// check waits for it; refusing on them would turn a momentary job into a failed restore.
    ///
    /// A full max_worker_processes refuses as well, not just warns: a scheduler the launcher cannot
    /// register for want of a PostgreSQL slot keeps its TimescaleDB slot and is retried each
    /// round, so it starts when a slot frees, and never when long-running workers hold them all.
    /// Those include TimescaleDB's launcher, every scheduler, the logical replication launcher
    /// (a background worker like any other) and other extensions' workers, which tsbackup
    /// cannot tell apart and counts as long-running: most are launchers or supervisors, and a
    /// short-lived one caught in the act costs a rerun, not a restore that fails at its end.
    /// Parallel and TimescaleDB job workers are the short-lived ones tsbackup can recognise;
    /// with PostgreSQL's default of 8 slots (and TimescaleDB's 16) this pool runs out first:
    /// the two launchers and six databases' schedulers fill it, and a seventh gets none.
    /// The counts are a snapshot of pg_stat_activity: a scheduler started or stopped meanwhile, a
    /// database created or dropped in the same moment, or a database still waiting for a slot of
    /// its own (invisible here) can change the outcome; the scheduler check after the restore
    /// stays the proof.
    func assess(server: String) -> (refusal: String?, warnings: [String]) {
        if timescaleLasting + 1 > timescaleMaxWorkers {
            let holders = timescaleMaxWorkers == 0
                ? "0 turns TimescaleDB's background workers off altogether"
                : "\(timescaleLasting) \(timescaleLasting == 1 ? "is" : "are") in use: the launcher and \(Self.count(schedulers, "database's scheduler", "databases' schedulers"))"
            let needed = timescaleLasting + 1
            return ("The target \(server) has no free slot in TimescaleDB's background-worker pool for the restored database's scheduler: timescaledb.max_background_workers is \(timescaleMaxWorkers) and \(holders) (every database with TimescaleDB keeps a scheduler, and its slot, for as long as it exists). Without a scheduler the restore would fail its final check after all the work, so nothing was restored and no database was created. Raise timescaledb.max_background_workers to at least \(needed) plus the job workers that should run at once (and max_worker_processes with it) and restart the server, or drop TimescaleDB databases that are no longer needed; then run the restore again.", [])
        }
        if lastingWorkers + 1 > maxWorkerProcesses {
            let others = otherWorkerTypes.isEmpty ? "" : " (\(otherWorkerTypes.prefix(5).joined(separator: ", "))\(otherWorkerTypes.count > 5 ? ", ..." : ""))"
            return ("The target \(server) has no free background-worker slot for the restored database's TimescaleDB scheduler: max_worker_processes is \(maxWorkerProcesses) and \(lastingWorkers) \(lastingWorkers == 1 ? "is" : "are") held by workers that keep running (TimescaleDB's launcher, \(Self.count(schedulers, "database's scheduler", "databases' schedulers")) and \(Self.count(otherWorkers, "other worker", "other workers"))\(others)). Without a scheduler the restore would fail its final check after all the work, so nothing was restored and no database was created. Raise max_worker_processes to at least \(lastingWorkers + 1) plus the TimescaleDB job workers and parallel workers that should run at once and restart the server, or drop TimescaleDB databases that are no longer needed; then run the restore again.", [])
        }
        var warnings: [String] = []
        if timescaleLasting + jobWorkers + 1 > timescaleMaxWorkers {
            warnings.append("TimescaleDB's background-worker pool is full right now (timescaledb.max_background_workers \(timescaleMaxWorkers): the launcher, \(Self.count(schedulers, "scheduler", "schedulers")) and \(Self.count(jobWorkers, "job worker", "job workers"))): the restored database's scheduler starts once a job ends, and the restore's scheduler check waits for it.")
        } else if timescaleLasting + 1 == timescaleMaxWorkers {
            warnings.append("After this restore every slot of timescaledb.max_background_workers (\(timescaleMaxWorkers)) is held by TimescaleDB's launcher and schedulers, leaving none for job workers: TimescaleDB's jobs in every database will fail to start until it is raised (with max_worker_processes) and the server restarted, or a TimescaleDB database is dropped.")
        }
        if lastingWorkers + jobWorkers + parallelWorkers + 1 > maxWorkerProcesses {
            warnings.append("Every max_worker_processes slot (\(maxWorkerProcesses)) is taken right now, \(jobWorkers + parallelWorkers) of them by job or parallel workers that end on their own: the restored database's TimescaleDB scheduler starts once one is free, and the restore's scheduler check waits for it.")
        }
        return (nil, warnings)
    }

    static func count(_ n: Int, _ one: String, _ many: String) -> String { "\(n) \(n == 1 ? one : many)" }

    /// Reads the settings and the running background workers in one statement.
    static func read(_ session: DatabaseSession) async throws -> WorkerSlots {
        let (maxWorkers, timescaleMax, schedulers, jobs, parallel, lasting, otherCount, others) = try await session.row(
            """
            WITH workers AS (
                SELECT datid, backend_type,
                       backend_type = \(schedulerType) AS scheduler,
                       backend_type LIKE 'parallel%' AS parallel
                FROM pg_stat_activity
                WHERE backend_type <> ALL (\(ownProcessTypes))
            ), classified AS (
                -- A job worker runs in a database whose scheduler started it.
                SELECT w.*, (backend_type ~ \(jobWorkerPattern)
                             AND datid IN (SELECT datid FROM workers WHERE scheduler)) AS job
                FROM workers w
            )
            SELECT current_setting('max_worker_processes')::int8,
                   current_setting('timescaledb.max_background_workers')::int8,
                   count(DISTINCT datid) FILTER (WHERE scheduler),
                   count(*) FILTER (WHERE job),
                   count(*) FILTER (WHERE parallel AND NOT job),
                   count(*) FILTER (WHERE NOT parallel AND NOT job),
                   count(*) FILTER (WHERE other),
                   array_agg(DISTINCT backend_type::text) FILTER (WHERE other)
            FROM (SELECT *, NOT parallel AND NOT job AND NOT scheduler AND backend_type <> \(launcherType) AS other
                  FROM classified) c
            """, as: (Int64, Int64, Int64, Int64, Int64, Int64, Int64, [String]?).self,
            purpose: "counting the background workers and TimescaleDB's worker slots")
        return WorkerSlots(maxWorkerProcesses: Int(maxWorkers), timescaleMaxWorkers: Int(timescaleMax), schedulers: Int(schedulers),
                           jobWorkers: Int(jobs), parallelWorkers: Int(parallel), lastingWorkers: Int(lasting),
                           otherWorkers: Int(otherCount), otherWorkerTypes: (others ?? []).sorted())
    }
}

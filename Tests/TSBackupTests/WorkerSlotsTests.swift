import Testing
@testable import TSBackup

/// The restore's preflight refuses when the restored database's TimescaleDB scheduler could not
/// get a slot that stays free (WorkerSlots.assess); workers that end on their own only warn.
@Suite struct WorkerSlotsTests {
    /// A server with `schedulers` TimescaleDB databases and the logical replication launcher.
    func slots(maxWorkers: Int = 400, timescaleMax: Int = 390, schedulers: Int, jobs: Int = 0, parallel: Int = 0,
               others: [String] = ["logical replication launcher"]) -> WorkerSlots {
        WorkerSlots(maxWorkerProcesses: maxWorkers, timescaleMaxWorkers: timescaleMax, schedulers: schedulers, jobWorkers: jobs,
                    parallelWorkers: parallel, lastingWorkers: 1 + schedulers + others.count,
                    otherWorkers: others.count, otherWorkerTypes: others)
    }

    @Test func roomInBothPoolsPassesSilently() {
        let (refusal, warnings) = slots(timescaleMax: 16, schedulers: 3).assess(server: "db:5432")
        #expect(refusal == nil)
        #expect(warnings.isEmpty)
    }

    @Test("the launcher and one scheduler per database fill timescaledb.max_background_workers: refused, naming setting, value, use and the ways out")
    func fullTimescalePoolIsRefused() throws {
        // 3 slots: the launcher and two databases' schedulers.
        let refusal = try #require(slots(timescaleMax: 3, schedulers: 2).assess(server: "db:5432").refusal)
        #expect(refusal.contains("timescaledb.max_background_workers is 3"))
        #expect(refusal.contains("3 are in use: the launcher and 2 databases' schedulers"))
        #expect(refusal.contains("at least 4"))
        #expect(refusal.contains("restart the server") && refusal.contains("drop TimescaleDB databases"))
        #expect(refusal.contains("no database was created"))
        #expect(!refusal.contains("\n"))
        // One slot less in use and it fits, exactly.
        #expect(slots(timescaleMax: 3, schedulers: 1).assess(server: "db:5432").refusal == nil)
    }

    @Test("a pool of 0 or 1 can never hold a scheduler")
    func tinyPools() throws {
        let off = try #require(slots(timescaleMax: 0, schedulers: 0).assess(server: "db:5432").refusal)
        #expect(off.contains("timescaledb.max_background_workers is 0") && off.contains("off altogether"))
        let launcherOnly = try #require(slots(timescaleMax: 1, schedulers: 0).assess(server: "db:5432").refusal)
        #expect(launcherOnly.contains("1 is in use: the launcher and 0 databases' schedulers"))
    }

    @Test("job workers filling the pool end on their own: a warning, not a refusal")
    func jobWorkersOnlyWarn() {
        let (refusal, warnings) = slots(timescaleMax: 4, schedulers: 2, jobs: 1).assess(server: "db:5432")
        #expect(refusal == nil)
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("1 job worker") == true)
    }

    @Test("a restore that takes the pool's last slot warns that no job worker can start any more")
    func lastSlotWarns() {
        let (refusal, warnings) = slots(timescaleMax: 4, schedulers: 2).assess(server: "db:5432")
        #expect(refusal == nil)
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("leaving none for job workers") == true)
    }

    @Test("max_worker_processes held by workers that keep running (the launcher, schedulers, other extensions') is refused, naming them")
    func fullWorkerProcessesIsRefused() throws {
        // 8 slots: replication launcher, TimescaleDB launcher, 5 schedulers, pg_cron: 8 in use.
        let full = slots(maxWorkers: 8, timescaleMax: 16, schedulers: 5, others: ["logical replication launcher", "pg_cron launcher"])
        let refusal = try #require(full.assess(server: "db:5432").refusal)
        #expect(refusal.contains("max_worker_processes is 8 and 8 are held"))
        #expect(refusal.contains("5 databases' schedulers and 2 other workers (logical replication launcher, pg_cron launcher)"))
        #expect(refusal.contains("at least 9"))
        #expect(!refusal.contains("timescaledb.max_background_workers is"))
    }

    @Test("max_worker_processes filled only by job and parallel workers warns")
    func passingWorkersOnlyWarn() {
        let busy = slots(maxWorkers: 8, timescaleMax: 16, schedulers: 4, jobs: 1, parallel: 1)
        let (refusal, warnings) = busy.assess(server: "db:5432")
        #expect(refusal == nil)
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("Every max_worker_processes slot (8)") == true)
    }

    @Test("TimescaleDB's pool is checked first: both full names timescaledb.max_background_workers")
    func timescalePoolFirst() throws {
        let both = slots(maxWorkers: 4, timescaleMax: 3, schedulers: 2)
        #expect(try #require(both.assess(server: "db:5432").refusal).contains("timescaledb.max_background_workers is 3"))
    }
}

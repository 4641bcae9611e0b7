import Foundation
import Prometheus
import TSBackup

/// The service's Prometheus metrics, served at `/metrics` in the text exposition format.
///
/// Per database (label `database`): the last successful backup's time, duration and size, the
/// failures counted since the service started, the last rehearsal's result (1 pass, 0 fail),
/// time and duration; and the job queue's depth. Gauges are created per database when it is
/// configured, so a database that never succeeded shows 0 rather than nothing.
public final class ServiceMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    struct PerDatabase: Sendable {
        let lastSuccess: Gauge
        let duration: Gauge
        let size: Gauge
        let failures: Counter
        let successes: Counter
        let rehearsalResult: Gauge
        let rehearsalTime: Gauge
        let rehearsalDuration: Gauge
        let rehearsalFailures: Counter
    }

    let databases: [String: PerDatabase]
    let queued: Gauge
    let running: Gauge
    let scheduleLateness: Gauge

    public init(databases names: [String]) {
        var databases: [String: PerDatabase] = [:]
        for name in names {
            let label = [("database", name)]
            databases[name] = PerDatabase(
                lastSuccess: registry.makeGauge(name: "tsbackup_last_successful_backup_timestamp_seconds", labels: label,
                                                help: "Unix time when the newest complete backup of the database was taken (0: none)."),
                duration: registry.makeGauge(name: "tsbackup_last_backup_duration_seconds", labels: label,
                                             help: "Duration of the newest complete backup."),
                size: registry.makeGauge(name: "tsbackup_last_backup_size_bytes", labels: label,
                                         help: "Stored size of the newest complete backup."),
                failures: registry.makeCounter(name: "tsbackup_backup_failures_total", labels: label,
                                               help: "Backups of the database that failed since the service started."),
                successes: registry.makeCounter(name: "tsbackup_backup_successes_total", labels: label,
                                                help: "Backups of the database that completed since the service started."),
                rehearsalResult: registry.makeGauge(name: "tsbackup_last_rehearsal_success", labels: label,
                                                    help: "1 if the last restore rehearsal of the database passed, 0 if it failed (or none ran)."),
                rehearsalTime: registry.makeGauge(name: "tsbackup_last_rehearsal_timestamp_seconds", labels: label,
                                                  help: "Unix time when the last restore rehearsal of the database finished (0: none)."),
                rehearsalDuration: registry.makeGauge(name: "tsbackup_last_rehearsal_duration_seconds", labels: label,
                                                      help: "Duration of the last restore rehearsal."),
                rehearsalFailures: registry.makeCounter(name: "tsbackup_rehearsal_failures_total", labels: label,
                                                        help: "Restore rehearsals of the database that failed since the service started."))
        }
        self.databases = databases
        queued = registry.makeGauge(name: "tsbackup_jobs_queued", help: "Jobs waiting in the queue.")
        running = registry.makeGauge(name: "tsbackup_jobs_running", help: "Jobs running now.")
        scheduleLateness = registry.makeGauge(name: "tsbackup_schedule_last_lateness_seconds",
                                              help: "Seconds between the last scheduled slot's due time and its job's start.")
    }

    /// A complete backup: its time (the manifest's start), duration and stored size.
    public func backupSucceeded(database: String, takenAt: Date, duration: Double, bytes: Int64, countRun: Bool = true) {
        guard let m = databases[database] else { return }
        m.lastSuccess.set(takenAt.timeIntervalSince1970)
        m.duration.set(duration)
        m.size.set(Double(bytes))
        if countRun { m.successes.increment() }
    }

    public func backupFailed(database: String) {
        databases[database]?.failures.increment()
    }

    public func rehearsal(database: String, ok: Bool, finishedAt: Date, duration: Double, countFailure: Bool = true) {
        guard let m = databases[database] else { return }
        m.rehearsalResult.set(ok ? 1.0 : 0.0)
        m.rehearsalTime.set(finishedAt.timeIntervalSince1970)
        m.rehearsalDuration.set(duration)
        if !ok && countFailure { m.rehearsalFailures.increment() }
    }

    public func queue(queued: Int, running: Int) {
        self.queued.set(Double(queued))
        self.running.set(Double(running))
    }

    public func scheduleStarted(lateness: Double) {
        scheduleLateness.set(lateness)
    }

    /// The text exposition format.
    public func render() -> String {
        registry.emitToString()
    }
}

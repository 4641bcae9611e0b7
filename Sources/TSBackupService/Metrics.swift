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
                lastSuccess: registry.makeGauge(descriptor: Self.name("last_successful_backup_timestamp", unit: "seconds",
                                                                      "Unix time when the newest complete backup of the database was taken (0: none)."), labels: label),
                duration: registry.makeGauge(descriptor: Self.name("last_backup_duration", unit: "seconds", "Duration of the newest complete backup."), labels: label),
                size: registry.makeGauge(descriptor: Self.name("last_backup_size", unit: "bytes", "Stored size of the newest complete backup."), labels: label),
                failures: registry.makeCounter(descriptor: Self.name("backup_failures", unit: "total",
                                                                     "Backups of the database that failed since the service started."), labels: label),
                successes: registry.makeCounter(descriptor: Self.name("backup_successes", unit: "total",
                                                                      "Backups of the database that completed since the service started."), labels: label),
                rehearsalResult: registry.makeGauge(descriptor: Self.name("last_rehearsal_success", unit: "",
                                                                          "1 if the last restore rehearsal of the database passed, 0 if it failed (or none ran)."), labels: label),
                rehearsalTime: registry.makeGauge(descriptor: Self.name("last_rehearsal_timestamp", unit: "seconds",
                                                                        "Unix time when the last restore rehearsal of the database finished (0: none)."), labels: label),
                rehearsalDuration: registry.makeGauge(descriptor: Self.name("last_rehearsal_duration", unit: "seconds",
                                                                            "Duration of the last restore rehearsal."), labels: label),
                rehearsalFailures: registry.makeCounter(descriptor: Self.name("rehearsal_failures", unit: "total",
                                                                              "Restore rehearsals of the database that failed since the service started."), labels: label))
        }
        self.databases = databases
        queued = registry.makeGauge(descriptor: Self.name("jobs_queued", unit: "", "Jobs waiting in the queue."))
        running = registry.makeGauge(descriptor: Self.name("jobs_running", unit: "", "Jobs running now."))
        scheduleLateness = registry.makeGauge(descriptor: Self.name("schedule_last_lateness", unit: "seconds",
                                                                    "Seconds between the last scheduled slot's due time and its job's start."))
    }

    /// `tsbackup_<metric>_<unit>` (no unit part when `unit` is empty), with its help text.
    private static func name(_ metric: String, unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "tsbackup", metricName: metric, unitName: unit, helpText: help)
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

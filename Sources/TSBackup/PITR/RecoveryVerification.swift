import Foundation
import PostgresNIO

/// Proves a recovered, promoted cluster: replay stopped at the target, and every database with
/// TimescaleDB is usable (extension loaded at the recorded version, catalog and extension agree,
/// chunks and tables agree both ways, not in restore mode, its scheduler running; with
/// `amcheck`, clean B-tree indexes on hypertables and chunks).
struct RecoveryVerification: Sendable {
    let base: BaseBackupManifest
    let target: Recover.Target
    let settings: ConnectionSettings
    let logFile: String
    let amcheck: Bool
    let schedulerWait: Duration

    typealias Check = Restore.Report.Check

    struct Outcome {
        var checks: [Check]
        var lastReplayedCommit: Date?
        var replayLSN: String?
        var timeline: Int?
    }

    func run() async throws -> Outcome {
        var outcome = Outcome(checks: [])
        let databases: [String] = try await DatabaseSession.with(settings) { session in
            let (inRecovery, replayed, lsn, timeline) = try await session.row(
                """
                SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text,
                       (SELECT timeline_id FROM pg_control_checkpoint())::int4
                """, as: (Bool, Date?, String?, Int32).self)
            outcome.lastReplayedCommit = replayed
            outcome.replayLSN = lsn
            outcome.timeline = Int(timeline)
            outcome.checks.append(.init(subject: "cluster", check: "promoted", expected: "not in recovery", actual: inRecovery ? "in recovery" : "not in recovery", ok: !inRecovery))
            outcome.checks.append(.init(subject: "cluster", check: "system identifier", expected: base.systemIdentifier,
                                        actual: try await session.value("SELECT system_identifier::text FROM pg_control_system()", as: String.self),
                                        ok: true))
            outcome.checks[outcome.checks.count - 1].ok = outcome.checks.last!.expected == outcome.checks.last!.actual
            outcome.checks += try await targetChecks(session, replayed: replayed, replayLSN: lsn.flatMap { WALPosition($0) })
            return try await session.values(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", as: String.self)
        }
        for database in databases {
            outcome.checks += try await DatabaseSession.with(settings.with(database: database)) { session in
                try await timescaleChecks(session, database: database)
            }
        }
        for recorded in base.databases where !databases.contains(recorded.name) {
            outcome.checks.append(.init(subject: recorded.name, check: "database exists", expected: "yes", actual: "no", ok: false))
        }
        return outcome
    }

    // MARK: The target

    /// The stop record PostgreSQL logs: "recovery stopping before commit of transaction 745, time 2026-...".
    struct StopRecord: Equatable {
        var before: Bool
        var xid: UInt32
        var time: Date?
    }

    static func stopRecord(in log: String) -> StopRecord? {
        var found: StopRecord?
        for line in log.split(separator: "\n") {
            guard let range = line.range(of: "recovery stopping ") else { continue }
            let rest = line[range.upperBound...]
            let before = rest.hasPrefix("before")
            guard let xidRange = rest.range(of: "of transaction ") else { continue }
            let xidText = rest[xidRange.upperBound...].prefix { $0.isNumber }
            guard let xid = UInt32(xidText) else { continue }
            var time: Date?
            if let timeRange = rest.range(of: ", time ") {
                time = parseLogTime(String(rest[timeRange.upperBound...]))
            }
            found = StopRecord(before: before, xid: xid, time: time)
        }
        return found
    }

    /// "2026-11-27 09:30:00.123456+00" as PostgreSQL prints a timestamptz in its log.
    static func parseLogTime(_ text: String) -> Date? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        for format in ["yyyy-MM-dd HH:mm:ss.SSSSSSxx", "yyyy-MM-dd HH:mm:ssxx", "yyyy-MM-dd HH:mm:ss.SSSSSSx", "yyyy-MM-dd HH:mm:ssx"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: trimmed) { return date }
        }
        return nil
    }

    func targetChecks(_ session: DatabaseSession, replayed: Date?, replayLSN: WALPosition?) async throws -> [Check] {
        var checks: [Check] = []
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        let stop = Self.stopRecord(in: log)
        switch target {
        case .time(let time):
            let ok = replayed.map { $0 <= time } ?? true
            checks.append(.init(subject: "cluster", check: "last replayed commit <= target", expected: "<= \(Recover.timestamp(time))",
                                actual: replayed.map(Recover.timestamp) ?? "none replayed", ok: ok))
            checks += try await stopRecordChecks(session, stop: stop, after: time)
        case .lsn(let lsn):
            let ok = replayLSN.map { $0 >= lsn } ?? false
            checks.append(.init(subject: "cluster", check: "replayed up to target", expected: ">= \(lsn)", actual: replayLSN?.description ?? "unknown", ok: ok))
            if let stop {
                checks += try await stopRecordChecks(session, stop: stop, after: nil)
            }
        case .latest:
            let ended = log.contains("archive recovery complete") || log.contains("redo done at")
            checks.append(.init(subject: "cluster", check: "replayed to the end of the archive", expected: "archive recovery complete",
                                actual: ended ? "archive recovery complete" : "not in the server log", ok: ended))
        }
        return checks
    }

    /// The first transaction past the target, as the stop record names it, must not be visible:
    /// its commit time is after the target and its status is not committed. A replay that went
    /// one transaction too far fails here.
    func stopRecordChecks(_ session: DatabaseSession, stop: StopRecord?, after time: Date?) async throws -> [Check] {
        guard let stop else {
            return [.init(subject: "cluster", check: "recovery stop record", expected: "in the server log", actual: "not found (log_min_messages above LOG?)", ok: false)]
        }
        var checks: [Check] = []
        if let time, stop.before {
            let ok = stop.time.map { $0 > time } ?? false
            checks.append(.init(subject: "cluster", check: "first transaction not replayed is after the target",
                                expected: "> \(Recover.timestamp(time))", actual: stop.time.map(Recover.timestamp) ?? "unknown", ok: ok))
        }
        let status = try await session.value(
            PostgresQuery(unsafeSQL: """
            SELECT coalesce(pg_xact_status(((pg_current_xact_id()::text::int8 >> 32 << 32) | \(stop.xid))::text::xid8), 'unknown')
            """), as: String.self)
        let expected = stop.before ? "not committed" : "committed"
        let actual = status == "committed" ? "committed" : "not committed (\(status))"
        checks.append(.init(subject: "cluster", check: "transaction \(stop.xid) at the stop point", expected: expected,
                            actual: actual, ok: (status == "committed") == !stop.before))
        return checks
    }

    // MARK: TimescaleDB

    func timescaleChecks(_ session: DatabaseSession, database: String) async throws -> [Check] {
        let recorded = base.databases.first { $0.name == database }
        let installed = try await session.rows("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", as: String.self).first
        var checks: [Check] = []
        if let expected = recorded?.timescaledb {
            checks.append(.init(subject: database, check: "TimescaleDB version", expected: expected, actual: installed ?? "not installed", ok: installed == expected))
        }
        guard let installed else { return checks }
        // Calling a function of the versioned library loads it: a missing .so fails here.
        var loaded = "loaded"
        do {
            _ = try await session.execute("SELECT time_bucket('1 hour'::interval, now())")
        } catch let error as TSBackupError {
            loaded = error.message.singleLine(limit: 200)
        }
        checks.append(.init(subject: database, check: "TimescaleDB library", expected: "loaded", actual: loaded, ok: loaded == "loaded"))
        let catalog = try await session.rows("SELECT value FROM _timescaledb_catalog.metadata WHERE key = 'timescaledb_version'", as: String.self).first
        checks.append(.init(subject: database, check: "catalog version = extension version", expected: installed, actual: catalog ?? "none", ok: catalog == installed))

        let missingTables = try await session.values(
            """
            SELECT format('%s.%s', c.schema_name, c.table_name) FROM _timescaledb_catalog.chunk c
            WHERE NOT c.dropped AND to_regclass(format('%I.%I', c.schema_name, c.table_name)) IS NULL ORDER BY 1
            """, as: String.self)
        checks.append(.init(subject: database, check: "catalog chunks exist as tables", expected: "all",
                            actual: missingTables.isEmpty ? "all" : "missing: \(missingTables.prefix(5).joined(separator: ", "))", ok: missingTables.isEmpty))
        let strayTables = try await session.values(
            """
            SELECT i.inhrelid::regclass::text FROM pg_inherits i
            JOIN _timescaledb_catalog.hypertable h ON i.inhparent = to_regclass(format('%I.%I', h.schema_name, h.table_name))
            WHERE NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk c
                              WHERE NOT c.dropped AND to_regclass(format('%I.%I', c.schema_name, c.table_name)) = i.inhrelid)
            ORDER BY 1
            """, as: String.self)
        checks.append(.init(subject: database, check: "chunk tables are in the catalog", expected: "all",
                            actual: strayTables.isEmpty ? "all" : "not in catalog: \(strayTables.prefix(5).joined(separator: ", "))", ok: strayTables.isEmpty))
        for table in recorded?.hypertables ?? [] {
            let exists = try await session.value(
                "SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = \(table.schema) AND table_name = \(table.name))", as: Bool.self)
            checks.append(.init(subject: "\(database): \(table.schema).\(table.name)", check: "hypertable present (from the base backup)",
                                expected: "yes", actual: exists ? "yes" : "no", ok: exists))
        }

        let restoring = try await session.value(
            """
            SELECT coalesce(current_setting('timescaledb.restoring', true), 'off') IN ('on', 'true', '1', 'yes')
                OR EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                           WHERE d.datname = current_database() AND array_to_string(s.setconfig, ',') ILIKE '%timescaledb.restoring=on%')
            """, as: Bool.self)
        checks.append(.init(subject: database, check: "timescaledb.restoring", expected: "not set", actual: restoring ? "set" : "not set", ok: !restoring))

        let deadline = ContinuousClock.now + schedulerWait
        var running = false
        while true {
            running = try await ServerInspector(session: session).schedulerRunning()
            if running || ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(300))
        }
        checks.append(.init(subject: database, check: "TimescaleDB scheduler", expected: "running",
                            actual: running ? "running" : "not running after \(schedulerWait.components.seconds) s", ok: running))

        if amcheck { checks += try await indexChecks(session, database: database) }
        return checks
    }

    /// bt_index_check on every B-tree index of hypertables and chunks, with amcheck created in a
    /// transaction that is rolled back, so the recovered database is left as it was.
    func indexChecks(_ session: DatabaseSession, database: String) async throws -> [Check] {
        try await session.execute("BEGIN")
        defer { Task { _ = try? await session.execute("ROLLBACK") } }
        var failures: [String] = []
        var count = 0
        do {
            try await session.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            let indexes = try await session.values(
                """
                SELECT x.indexrelid::regclass::text FROM pg_index x
                JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam AND a.amname = 'btree'
                WHERE x.indrelid IN (
                    SELECT to_regclass(format('%I.%I', schema_name, table_name)) FROM _timescaledb_catalog.hypertable
                    UNION ALL
                    SELECT to_regclass(format('%I.%I', schema_name, table_name)) FROM _timescaledb_catalog.chunk WHERE NOT dropped)
                ORDER BY 1
                """, as: String.self)
            for index in indexes {
                count += 1
                do {
                    _ = try await session.execute("SAVEPOINT amcheck")
                    _ = try await session.query("SELECT bt_index_check(\(index)::regclass)")
                    _ = try await session.execute("RELEASE SAVEPOINT amcheck")
                } catch let error as TSBackupError {
                    failures.append("\(index): \(error.message.singleLine(limit: 150))")
                    _ = try? await session.execute("ROLLBACK TO SAVEPOINT amcheck")
                }
            }
        } catch let error as TSBackupError {
            failures.append(error.message.singleLine(limit: 200))
        }
        _ = try? await session.execute("ROLLBACK")
        return [.init(subject: database, check: "B-tree indexes (amcheck)", expected: "clean",
                      actual: failures.isEmpty ? "clean (\(count) indexes)" : failures.prefix(3).joined(separator: "; "), ok: failures.isEmpty)]
    }
}

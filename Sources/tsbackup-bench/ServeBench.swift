import Crypto
import Foundation
import TSBackup
import TSBackupSandbox

/// `tsbackup serve` under load (issue 13's figures): GET /api/backups with 1,000 entries in the
/// repository under wrk on loopback, with the listing cache off (every request reads and decodes
/// every manifest, as before the cache) and on, in the same run; the service's idle RSS; and the
/// time from a schedule's due moment to its job's start.
extension Bench {
    func serveScenario(entries count: Int = 1000, wrkSeconds: Int = 20) async throws {
        let scenario = "serve"
        let database = "bench_serve"
        try await createDataset(database, SampleData.Options(devices: 2, days: 2, events: 100, eventsPerChunk: 50, sensors: 2), label: database)
        // One real backup, then copies of it through the repository's API (files copied, the
        // manifest re-stamped with a new id and committed), so the list reads valid entries.
        log("== serve: \(count) entries in a local repository")
        let first = try await tsbackupBackup(database, ["--jobs", "1"])
        let repository = first.repository
        let planted = try await timed { try await Self.plantCopies(repository: repository, of: first.id, total: count) }
        log(String(format: "  planted %d copies of %@ through the repository API in %.1f s", count - 1, first.id, planted))

        let token = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let port = try SandboxCluster.freeLoopbackPort()
        let config = work + "/serve-list.yaml"
        try """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(repository)}
            state_file: \(work)/serve-list-\(UUID().uuidString.prefix(6)).sqlite
            databases:
              \(database): {host: 127.0.0.1, port: \(cluster.port), user: \(SandboxCluster.superuser), password_env: BENCH_PGPASSWORD, dbname: \(database)}
            tokens:
              - {name: bench, sha256: \(Self.sha256Hex(token)), role: viewer}

            """.write(toFile: config, atomically: true, encoding: .utf8)

        for cache in ["off", "on"] {
            // The process's directory is removed when it ends: one of its own, apart from the repository.
            let directory = work + "/serve-run-\(cache)-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let service = try await BackgroundProcess.start(
                name: "serve-\(cache)", command: [tsbackup, "serve", "--config", config],
                environment: ["BENCH_PGPASSWORD": cluster.superuserPassword, "TSBACKUP_SERVE_LISTING_CACHE": cache],
                directory: directory)
            do {
                try await service.waitForPort(port, timeout: .seconds(120))
                try await Task.sleep(for: .seconds(3))
                let idle = Self.rssKB(service.pid)
                // Correctness first: the list has every entry.
                let url = "http://127.0.0.1:\(port)/api/backups"
                let listed = try await ProcessRunner.run("curl", ["-fsS", "-H", "Authorization: Bearer \(token)", url])
                try check(listed, "curl /api/backups")
                let entries = (try JSONSerialization.jsonObject(with: Data(listed.standardOutput.utf8)) as? [Any])?.count ?? -1
                guard entries == count else { throw SandboxError("GET /api/backups listed \(entries) entries, expected \(count)") }
                // One request at a time first (3 of them): a figure even when the loaded run
                // completes few requests.
                var single: [Double] = []
                for _ in 0..<3 {
                    single.append(try await timed {
                        try check(try await ProcessRunner.run("curl", ["-fsS", "-o", "/dev/null", "-H", "Authorization: Bearer \(token)", url]), "curl")
                    })
                }
                let loadBefore = Self.oneMinuteLoad()
                let wrk = try await ProcessRunner.run("wrk", ["-t2", "-c4", "-d\(wrkSeconds)s", "--timeout", "60s", "--latency",
                                                              "-H", "Authorization: Bearer \(token)", url])
                try check(wrk, "wrk")
                let loaded = Self.rssKB(service.pid)
                let (rps, p50, p99, requests, errors) = Self.parseWrk(wrk.standardOutput)
                let load = (loadBefore + Self.oneMinuteLoad()) / 2
                var m = Measurement(scenario: scenario, name: "GET /api/backups, \(count) entries, cache \(cache)", seconds: [p99])
                m.counters = ["requests_per_second": [rps], "p50_seconds": [p50], "p99_seconds": [p99], "requests": [requests],
                              "errors": [errors], "single_request_seconds": single, "idle_rss_kb": [idle], "rss_after_load_kb": [loaded], "load_average_1m": [load]]
                results.measurements.append(m)
                results.findings.append(Finding(scenario: scenario, name: "GET /api/backups (\(count) entries), listing cache \(cache)", value: rps,
                                                text: String(format: "%.1f req/s, p50 %.1f ms, p99 %.1f ms (%d requests, %d errors; wrk -t2 -c4 -d%ds; load %.1f); one at a time: median %.1f ms",
                                                             rps, p50 * 1000, p99 * 1000, Int(requests), Int(errors), wrkSeconds, load, Measurement.median(single) * 1000)))
                results.findings.append(Finding(scenario: scenario, name: "service RSS (cache \(cache))", value: idle,
                                                text: String(format: "idle %.1f MB after start, %.1f MB after the load", idle / 1024, loaded / 1024)))
                log(String(format: "  cache %@: %.1f req/s, p50 %.1f ms, p99 %.1f ms, %d requests, %d errors; one at a time %@ ms; RSS idle %.1f MB, after load %.1f MB; load %.1f",
                           cache, rps, p50 * 1000, p99 * 1000, Int(requests), Int(errors), single.map { String(Int($0 * 1000)) }.joined(separator: "/"),
                           idle / 1024, loaded / 1024, load))
            } catch {
                await service.stop()
                throw error
            }
            await service.stop()
        }
        let off = results.measurements.first { $0.name.hasSuffix("cache off") }?.medianCounter("requests_per_second") ?? 0
        let on = results.measurements.first { $0.name.hasSuffix("cache on") }?.medianCounter("requests_per_second") ?? 0
        if off > 0 {
            results.findings.append(Finding(scenario: scenario, name: "listing cache: requests/s on vs off", value: on / off,
                                            text: String(format: "%.1fx", on / off)))
        }
        try await scheduleLatency(database: database)
        try? FileManager.default.removeItem(atPath: repository)
        try await dropDatabase(database)
    }

    /// A schedule every 10 seconds taking real backups of the small database: for each run, the
    /// job's `started_at` minus its slot (`scheduled_for`), as the service recorded them.
    func scheduleLatency(database: String, runs: Int = 4) async throws {
        let token = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let port = try SandboxCluster.freeLoopbackPort()
        let config = work + "/serve-schedule.yaml"
        try """
            listen: {host: 127.0.0.1, port: \(port)}
            repository: {url: \(work)/serve-schedule-repo-\(UUID().uuidString.prefix(6))}
            state_file: \(work)/serve-schedule-\(UUID().uuidString.prefix(6)).sqlite
            databases:
              \(database):
                {host: 127.0.0.1, port: \(cluster.port), user: \(SandboxCluster.superuser), password_env: BENCH_PGPASSWORD, dbname: \(database), backup_jobs: 1, schedule: {cron: "*/10 * * * * *"}}
            tokens:
              - {name: bench, sha256: \(Self.sha256Hex(token)), role: viewer}

            """.write(toFile: config, atomically: true, encoding: .utf8)
        log("== serve: schedule every 10 s, \(runs) scheduled backups")
        let directory = work + "/serve-run-schedule-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let service = try await BackgroundProcess.start(name: "serve-schedule", command: [tsbackup, "serve", "--config", config],
                                                        environment: ["BENCH_PGPASSWORD": cluster.superuserPassword], directory: directory)
        defer { Task { await service.stop() } }
        try await service.waitForPort(port, timeout: .seconds(120))
        // The state file has started_at to the microsecond (the API's JSON rounds to seconds);
        // the slots of a seconds-field cron are whole seconds, so scheduled_for is exact.
        let stateFile = try String(contentsOfFile: config, encoding: .utf8).split(separator: "\n")
            .first { $0.hasPrefix("state_file:") }.map { String($0.dropFirst("state_file:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
        var lateness: [Double] = []
        let deadline = ContinuousClock.now + .seconds(180)
        let iso = ISO8601DateFormatter()
        while ContinuousClock.now < deadline {
            let rows = try await ProcessRunner.run("sqlite3", ["-readonly", "-separator", "|", stateFile,
                "SELECT printf('%.6f', started_at), json_extract(parameters, '$.scheduled_for') FROM jobs WHERE requested_by = 'scheduler' AND started_at IS NOT NULL ORDER BY id"])
            lateness = rows.standardOutput.split(separator: "\n").compactMap { line -> Double? in
                let parts = line.split(separator: "|").map(String.init)
                guard parts.count == 2, let started = Double(parts[0]), let due = iso.date(from: parts[1]) else { return nil }
                return started - due.timeIntervalSince1970
            }
            if lateness.count >= runs { break }
            try await Task.sleep(for: .seconds(1))
        }
        await service.stop()
        guard !lateness.isEmpty else { throw SandboxError("no scheduled job started; log:\n\(service.log().suffix(2000))") }
        results.measurements.append(Measurement(scenario: "serve", name: "schedule due -> job start", seconds: lateness))
        results.findings.append(Finding(scenario: "serve", name: "schedule due moment -> job start", value: Measurement.median(lateness),
                                        text: "median \(Int(Measurement.median(lateness) * 1000)) ms; runs: " + lateness.map { "\(Int($0 * 1000)) ms" }.joined(separator: ", ")
                                            + String(format: " (load %.1f)", Self.oneMinuteLoad())))
        log("  due -> start: " + lateness.map { "\(Int($0 * 1000)) ms" }.joined(separator: ", "))
    }

    /// Copies entry `id` until the repository holds `total` entries: each copy gets a new id,
    /// its files copied into the staged entry and its manifest committed by the repository
    /// (checksummed, written last), exactly as a backup's would be.
    static func plantCopies(repository path: String, of id: String, total: Int) async throws {
        let repository = try LocalRepository.open(path, create: false)
        let (entry, manifest) = try await repository.completeManifest(id)
        try await repository.withLock(command: "bench plant") { _ in
            var when = manifest.startedAt
            for _ in 1..<total {
                when = when.addingTimeInterval(-3600)
                let newID = repository.newID(now: when)
                let staged = try repository.beginEntry(newID)
                for file in entry.files {
                    let target = staged.directory + "/" + file.path
                    try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    try FileManager.default.copyItem(atPath: entry.location + "/" + file.path, toPath: target)
                }
                var copy = manifest
                copy.id = newID
                copy.startedAt = when
                try await repository.commitEntry(staged, manifest: copy)
            }
        }
    }

    static func sha256Hex(_ text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func rssKB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    /// The 1-minute load average alone, to average over a measurement.
    static func oneMinuteLoad() -> Double {
        Double(((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "0").split(separator: " ").first ?? "0") ?? 0
    }

    /// Requests/s, p50 and p99 (seconds), requests and errors from `wrk --latency` output.
    static func parseWrk(_ text: String) -> (Double, Double, Double, Double, Double) {
        func seconds(_ value: Substring) -> Double {
            let units: [(String, Double)] = [("us", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60)]
            for (unit, factor) in units where value.hasSuffix(unit) {
                return (Double(value.dropLast(unit.count)) ?? 0) * factor
            }
            return Double(value) ?? 0
        }
        var rps = 0.0, p50 = 0.0, p99 = 0.0, requests = 0.0, errors = 0.0
        for raw in text.split(separator: "\n") {
            let fields = raw.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first == "Requests/sec:", fields.count > 1 { rps = Double(fields[1]) ?? 0 }
            if first == "50%", fields.count > 1 { p50 = seconds(fields[1]) }
            if first == "99%", fields.count > 1 { p99 = seconds(fields[1]) }
            if fields.count > 3, fields[1] == "requests", fields[2] == "in" { requests = Double(first) ?? 0 }
            if raw.contains("Non-2xx or 3xx responses:"), let last = fields.last { errors += Double(last) ?? 0 }
            if raw.contains("Socket errors:") {
                errors += fields.compactMap { Double($0.trimmingCharacters(in: .punctuationCharacters)) }.reduce(0, +)
            }
        }
        return (rps, p50, p99, requests, errors)
    }
}

import Foundation

/// Repeated timings of one operation, with whatever counters it reported.
struct Measurement: Codable {
    var scenario: String
    var name: String
    var seconds: [Double]
    /// Extra figures per run (bytes written, WAL syncs, peak memory...), keyed by name.
    var counters: [String: [Double]] = [:]

    var median: Double { Self.median(seconds) }
    var spread: (Double, Double) { (seconds.min() ?? 0, seconds.max() ?? 0) }

    func medianCounter(_ key: String) -> Double? {
        counters[key].map(Self.median)
    }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    enum CodingKeys: String, CodingKey {
        case scenario, name, seconds, counters
        case medianSeconds = "median_seconds"
        case minSeconds = "min_seconds"
        case maxSeconds = "max_seconds"
    }

    init(scenario: String, name: String, seconds: [Double] = [], counters: [String: [Double]] = [:]) {
        self.scenario = scenario
        self.name = name
        self.seconds = seconds
        self.counters = counters
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        scenario = try container.decode(String.self, forKey: .scenario)
        name = try container.decode(String.self, forKey: .name)
        seconds = try container.decode([Double].self, forKey: .seconds)
        counters = try container.decode([String: [Double]].self, forKey: .counters)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(scenario, forKey: .scenario)
        try container.encode(name, forKey: .name)
        try container.encode(seconds, forKey: .seconds)
        try container.encode(counters, forKey: .counters)
        try container.encode(median, forKey: .medianSeconds)
        try container.encode(spread.0, forKey: .minSeconds)
        try container.encode(spread.1, forKey: .maxSeconds)
    }
}

/// A derived figure: a ratio of medians, a content check, a growth series.
struct Finding: Codable {
    var scenario: String
    var name: String
    var value: Double?
    var text: String
}

/// Everything one run of the benchmark measured, written as JSON for later comparison.
struct BenchResults: Codable {
    var mode: String
    var startedAt: Date
    var cores: Int
    var memoryBytes: UInt64
    var postgres: String
    var timescaledb: String
    var pgDump: String
    var tsbackupVersion: String
    var tsbackupBuild: String
    var repetitions: Int
    var datasets: [String: String] = [:]
    var measurements: [Measurement] = []
    var findings: [Finding] = []

    enum CodingKeys: String, CodingKey {
        case mode
        case startedAt = "started_at"
        case cores
        case memoryBytes = "memory_bytes"
        case postgres, timescaledb
        case pgDump = "pg_dump"
        case tsbackupVersion = "tsbackup_version"
        case tsbackupBuild = "tsbackup_build"
        case repetitions, datasets, measurements, findings
    }
}

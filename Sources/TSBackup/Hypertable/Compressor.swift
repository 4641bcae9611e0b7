import Foundation

/// The compressor for data files: zstd when installed (faster at the same ratio), else gzip.
enum Compressor {
    static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> (name: String, compress: [String]) {
        if let zstd = find("zstd", environment: environment) { return ("zstd", [zstd, "-q", "-c", "-3", "-T1"]) }
        if let gzip = find("gzip", environment: environment) { return ("gzip", [gzip, "-c", "-6"]) }
        throw TSBackupError(.precondition, "Neither zstd nor gzip was found on PATH; tsbackup compresses exported data with one of them. Install zstd (apt-get install zstd).")
    }

    static func decompressor(for name: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [String] {
        guard let path = find(name, environment: environment) else {
            throw TSBackupError(.precondition, "The export's data files are compressed with \(name), which is not installed here. Install it (apt-get install \(name)) and import again.")
        }
        return [path, "-d", "-c", "-q"]
    }

    static func find(_ name: String, environment: [String: String]) -> String? {
        for directory in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

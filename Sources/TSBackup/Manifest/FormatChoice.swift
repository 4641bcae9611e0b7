import Foundation

extension BackupManifest {
    /// Which archive format a backup writes when the user does not say (`--format`), and why.
    ///
    /// pg_dump's directory format writes one file per table and dumps tables on `--jobs`
    /// connections at once; its custom format writes one file with one connection. The
    /// directory format's parallelism pays off where there are bytes to compress; its files cost
    /// a roughly fixed time each (pg_dump opens, compresses, closes and lists every one; tsbackup
    /// hashes each and records it in the manifest). On a database with thousands of small chunks
    /// that per-file cost is most of the backup: at 5,023 hourly chunks `pg_dump -Fd -j2 -Z2`
    /// took 20.30 s and `pg_dump -Fc -Z2` 6.98 s (about 2.7 ms per file), while on a data-heavy
    /// database of 22 chunks the directory format with 2 jobs was several times faster
    /// (docs/performance.md has the figures). The choice weighs the two with an estimate.
    public struct FormatChoice: Codable, Sendable, Equatable {
        /// The format the backup wrote.
        public var format: Format
        /// "auto" (chosen from the estimate below) or "user" (`--format`).
        public var chosenBy: String
        /// Why, in one sentence.
        public var reason: String
        /// Tables pg_dump dumps (each a file in the directory format) and their heap bytes.
        public var tables: Int
        public var tableBytes: Int64
        /// The estimates the automatic choice compared, in seconds; nil when the user chose.
        public var estimatedDirectorySeconds: Double?
        public var estimatedCustomSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case format
            case chosenBy = "chosen_by"
            case reason, tables
            case tableBytes = "table_bytes"
            case estimatedDirectorySeconds = "estimated_directory_seconds"
            case estimatedCustomSeconds = "estimated_custom_seconds"
        }

        /// Seconds per table file the directory format costs beyond the custom format (see above).
        public static let secondsPerFile = 0.0027
        /// Heap bytes one pg_dump job reads and compresses per second at gzip level 2 (the
        /// data-heavy point: 2.3 M rows, 22 chunks, `-Fd -j2` at level 1-2 in about 5 s).
        public static let bytesPerSecondPerJob = 25_000_000.0

        /// The automatic choice for `tables` tables holding `tableBytes` heap bytes, dumped with
        /// `jobs` connections in the directory format.
        public static func automatic(tables: Int, tableBytes: Int64, jobs: Int) -> FormatChoice {
            let jobs = max(1, jobs)
            let dataSeconds = Double(max(0, tableBytes)) / bytesPerSecondPerJob
            let custom = dataSeconds
            let directory = dataSeconds / Double(jobs) + Double(tables) * secondsPerFile
            let average = tables > 0 ? tableBytes / Int64(tables) : 0
            let shape = "\(tables) tables averaging \(ByteCount.format(average))"
            // No floor of tables: at 26 chunks (58 tables, 80 kB) the custom format measured faster
            // too (one pg_dump connection instead of three, no file per table; docs/performance.md).
            // With no table at all both estimates are 0: one file.
            if custom <= directory {
                return FormatChoice(format: .custom, chosenBy: "auto",
                                    reason: String(format: "%@: one file per table would cost more (about %.1f s estimated with %d jobs) than dumping into one custom-format file (about %.1f s)",
                                                   shape, directory, jobs, custom),
                                    tables: tables, tableBytes: tableBytes, estimatedDirectorySeconds: directory, estimatedCustomSeconds: custom)
            }
            let why = String(format: "the data is heavy enough that %d parallel jobs (about %.1f s estimated) beat one custom-format file (about %.1f s)", jobs, directory, custom)
            return FormatChoice(format: .directory, chosenBy: "auto", reason: "\(shape): \(why)",
                                tables: tables, tableBytes: tableBytes, estimatedDirectorySeconds: directory, estimatedCustomSeconds: custom)
        }

        /// The user's `--format`.
        public static func user(_ format: Format, tables: Int, tableBytes: Int64) -> FormatChoice {
            FormatChoice(format: format, chosenBy: "user", reason: "--format \(format.rawValue) was given", tables: tables, tableBytes: tableBytes)
        }

        /// The directory format because the user asked for `--compress zstd`, which compresses
        /// that format's data files (pg_dump compresses custom archives with gzip itself).
        public static func zstdAsked(tables: Int, tableBytes: Int64) -> FormatChoice {
            FormatChoice(format: .directory, chosenBy: "user", reason: "--compress zstd was given, which compresses the directory format's data files",
                         tables: tables, tableBytes: tableBytes)
        }
    }
}

import Foundation
import TSBackup

/// Damages the stored files of one repository entry, one change at a time, and asks the real
/// `tsbackup verify` about each: every change must make it exit non-zero (detected) and name the
/// damaged file in what it prints (named). Each change is undone before the next, and the entry
/// must verify cleanly before the first change and after the last, so a miss is never an artefact
/// of an earlier change. Shared by `tsbackup-bench --corruption` and the integration tests.
public struct CorruptionCampaign: Sendable {
    /// Where the entry's files are stored, read and rewritten byte for byte.
    public enum Store: Sendable {
        /// The entry's directory in a local repository.
        case local(directory: String)
        /// The entry's key prefix (ending in `/`) in a bucket.
        case s3(client: S3Client, prefix: String)
    }

    public enum ChangeKind: String, Sendable, Codable {
        case flip, truncation
    }

    /// One change: a byte XORed with `mask` at `offset`, or the file cut to `offset` bytes.
    public struct Change: Sendable, Codable, CustomStringConvertible {
        public var kind: ChangeKind
        public var file: String
        public var offset: Int
        public var mask: UInt8
        public var size: Int

        public var description: String {
            kind == .flip ? "\(file) byte \(offset) of \(size) xor 0x\(String(mask, radix: 16))" : "\(file) cut to \(offset) of \(size) bytes"
        }
    }

    /// What `tsbackup verify` made of one change.
    public struct Result: Sendable, Codable {
        public var change: Change
        public var detected: Bool
        public var named: Bool
        public var exitCode: Int32?
        /// The first lines verify printed (for the misses' list).
        public var output: String
    }

    public var tsbackup: String
    public var repository: String
    public var environment: [String: String]
    public var id: String
    public var store: Store

    public init(tsbackup: String, repository: String, environment: [String: String], id: String, store: Store) {
        self.tsbackup = tsbackup
        self.repository = repository
        self.environment = environment
        self.id = id
        self.store = store
    }

    /// Chooses the changes. Flips: first one in each file that describes the entry (manifest.json,
    /// roles.sql, each toc.dat, schema.sql), then, when there are at least twice as many flips as
    /// files, one in every other file; the rest in files chosen at random (manifest.json with
    /// probability `manifestShare`, else any file). Truncations: each file once in the same order
    /// while they last, then random files. Offsets and masks (a non-zero XOR) come from a generator
    /// seeded with `seed`, so a run can be repeated exactly.
    public func plan(flips: Int, truncations: Int, seed: UInt64, manifestShare: Double = 0) async throws -> [Change] {
        var random = SplitMix64(seed: seed)
        let files = try await listFiles().filter { $0.size > 0 }
        guard !files.isEmpty else { throw SandboxError("entry \(id) has no files to damage") }
        let describing = files.filter { Self.fileClass($0.path) != "data files" || $0.path.hasSuffix("schema.sql") }
        let others = files.filter { file in !describing.contains { $0.path == file.path } }
        let covered = describing + (flips >= 2 * files.count ? others : [])
        let manifest = files.first { $0.path == "manifest.json" }
        var changes: [Change] = []
        for n in 0..<flips {
            let file: (path: String, size: Int)
            if n < covered.count {
                file = covered[n]
            } else if let manifest, Double(random.next() % 1000) < manifestShare * 1000 {
                file = manifest
            } else {
                file = files[Int(random.next() % UInt64(files.count))]
            }
            changes.append(Change(kind: .flip, file: file.path, offset: Int(random.next() % UInt64(file.size)),
                                  mask: UInt8(1 + random.next() % 255), size: file.size))
        }
        let order = describing + others
        for n in 0..<truncations {
            let file = n < order.count ? order[n] : files[Int(random.next() % UInt64(files.count))]
            changes.append(Change(kind: .truncation, file: file.path, offset: Int(random.next() % UInt64(file.size)), mask: 0, size: file.size))
        }
        return changes
    }

    /// Applies each change, runs verify, restores the file. Throws when the entry does not verify
    /// cleanly before or after: then the results would mean nothing.
    public func run(_ changes: [Change], progress: (@Sendable (Int, Result) -> Void)? = nil) async throws -> [Result] {
        let before = try await verify()
        guard before.exitCode == 0 else {
            throw SandboxError("entry \(id) does not verify before any damage (exit \(before.statusDescription)): \(before.standardOutput.suffix(800)) \(before.standardError.suffix(800))")
        }
        var results: [Result] = []
        for (n, change) in changes.enumerated() {
            let pristine = try await read(change.file)
            var damaged = pristine
            switch change.kind {
            case .flip: damaged[change.offset] ^= change.mask
            case .truncation: damaged = pristine.prefix(change.offset)
            }
            try await write(change.file, damaged)
            let outcome: ProcessResult
            do {
                outcome = try await verify()
            } catch {
                try await write(change.file, pristine)
                throw error
            }
            try await write(change.file, pristine)
            let text = outcome.standardOutput + "\n" + outcome.standardError
            let result = Result(change: change, detected: outcome.exitCode != 0 && outcome.exitCode != nil,
                                named: text.contains(change.file), exitCode: outcome.exitCode,
                                output: String(text.split(separator: "\n").prefix(6).joined(separator: " | ").prefix(600)))
            results.append(result)
            progress?(n, result)
        }
        let after = try await verify()
        guard after.exitCode == 0 else {
            throw SandboxError("entry \(id) does not verify after its files were restored (exit \(after.statusDescription)): \(after.standardOutput.suffix(800))")
        }
        return results
    }

    func verify() async throws -> ProcessResult {
        var env: [String: String?] = [:]
        for key in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPASSFILE", "PGSERVICE"] { env[key] = .some(nil) }
        for (key, value) in environment { env[key] = value }
        return try await ProcessRunner.run(tsbackup, ["verify", id, "--repo", repository], environment: env)
    }

    /// The entry's stored files (manifest included), relative to the entry, with their sizes.
    func listFiles() async throws -> [(path: String, size: Int)] {
        switch store {
        case .local(let directory):
            return try FileSystem.regularFiles(under: directory).sorted().map { ($0, Int(FileSystem.size(of: directory + "/" + $0))) }
        case .s3(let client, let prefix):
            return try await client.listObjects(prefix: prefix).map { (String($0.key.dropFirst(prefix.count)), Int($0.size)) }
                .sorted { $0.0 < $1.0 }
        }
    }

    func read(_ file: String) async throws -> Data {
        switch store {
        case .local(let directory): return try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
        case .s3(let client, let prefix): return try await client.getObject(prefix + file)
        }
    }

    func write(_ file: String, _ data: Data) async throws {
        switch store {
        case .local(let directory):
            // In place, as a disk would damage it (no rename, same inode).
            let path = directory + "/" + file
            guard let handle = FileHandle(forWritingAtPath: path) else { throw SandboxError("cannot open \(path) for writing") }
            defer { try? handle.close() }
            try handle.truncate(atOffset: 0)
            try handle.write(contentsOf: data)
            try handle.synchronize()
        case .s3(let client, let prefix):
            try await client.putObject(prefix + file, data: data)
        }
    }

    /// Counts of a set of results.
    public struct Tally: Sendable, Codable {
        public var changes = 0
        public var detected = 0
        public var named = 0
        public var missed: [String] = []

        public init(_ results: [Result]) {
            for result in results {
                changes += 1
                if result.detected { detected += 1 }
                if result.detected && result.named { named += 1 }
                if !result.detected {
                    missed.append("undetected: \(result.change) (verify exit \(result.exitCode.map(String.init) ?? "none"))")
                } else if !result.named {
                    missed.append("not named: \(result.change): \(result.output)")
                }
            }
        }
    }

    /// The kind of file a path is, for the breakdown: manifest, toc, roles, data.
    public static func fileClass(_ path: String) -> String {
        if path == "manifest.json" { return "manifest.json" }
        if path.hasSuffix("toc.dat") { return "toc.dat" }
        if path == "roles.sql" { return "roles.sql" }
        return "data files"
    }
}

/// A small deterministic generator (SplitMix64), so a seed names a campaign exactly.
public struct SplitMix64: Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

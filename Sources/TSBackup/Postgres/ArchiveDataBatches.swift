import Foundation

/// The zstd data files of a directory archive decompressed just before pg_restore reads them and
/// removed right after, so that a restore needs scratch space for a few batches of data, not
/// for an uncompressed copy of the whole archive (``ArchiveDataCompression``).
///
/// Why batches and not pipes: pg_restore 15 (15.20 here) refuses a data file that is not a
/// regular file (`"<id>.dat" is not a regular file`, also for `<id>.dat.gz`), so a FIFO fed
/// while it reads cannot be used. Instead the data runs as serial pg_restores ("lanes", see
/// ``RestoreProcedure``), each over consecutive batches of its items: the files of batch k+1 are
/// decompressed while pg_restore loads batch k, and batch k's files are removed once it has
/// loaded them. Scratch space peaks near `(2 x lanes + 1) x` ``batchBytes`` (or the largest table's
/// data file, which is a batch of its own when larger).
struct ArchiveDataBatches: Sendable {
    struct Source: Sendable {
        /// The stored `.zst` file, and its path as the manifest names it (for errors).
        var path: String
        var name: String
        var bytes: Int64
    }

    /// The scratch archive, where `<dump id>.dat` is decompressed.
    let directory: String
    let sources: [Int: Source]
    /// Plain bytes per stored byte over the whole archive: estimates a file's plain size.
    let ratio: Double

    /// The default budget of plain bytes per batch; `TSBACKUP_RESTORE_BATCH_BYTES` overrides it.
    static let defaultBatchBytes: Int64 = 256 << 20

    static func batchBytes(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int64 {
        environment["TSBACKUP_RESTORE_BATCH_BYTES"].flatMap { Int64($0) }.map { max(1, $0) } ?? defaultBatchBytes
    }

    func bytes(of id: Int) -> Int64? { sources[id]?.bytes }

    func file(_ id: Int) -> String { directory + "/\(id).dat" }

    /// Decompresses the files `ids` on a thread of their own (blocking file work stays off
    /// Swift's cooperative threads); returns the plain bytes written. A file that does not
    /// decompress throws naming it (``ZstdFile/decompress(_:to:name:expectedBytes:)``, which
    /// leaves no partial file).
    func decompress(_ ids: [Int]) async throws -> Int64 {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int64, any Error>) in
            Thread.detachNewThread {
                continuation.resume(with: Result {
                    var total: Int64 = 0
                    for id in ids {
                        guard let source = sources[id] else { continue }
                        total += try ZstdFile.decompress(source.path, to: file(id), name: source.name)
                    }
                    return total
                })
            }
        }
    }

    /// Removes the decompressed files `ids` (those that exist).
    func remove(_ ids: [Int]) {
        for id in ids { unlink(file(id)) }
    }

    /// One pg_restore's share of a lane: its list lines, and the data files among them in order.
    struct Batch: Sendable, Equatable {
        var lines: [String]
        var ids: [Int]
    }

    /// The dump id a `--use-list` line starts with; nil for a comment.
    static func dumpID(_ line: String) -> Int? {
        guard !line.hasPrefix(";") else { return nil }
        return Int(line.prefix { $0.isNumber })
    }

    /// The lines of a `--use-list` file split into at most `count` lanes: the items with a data
    /// file (`bytes` non-nil) go to the lane with the fewest bytes so far, largest first; every
    /// other line stays in the first lane. Each lane keeps the list's order. Lanes without a
    /// line are left out.
    static func lanes(_ lines: [String], count: Int, bytes: (Int) -> Int64?) -> [[String]] {
        let count = max(1, count)
        let data = lines.indices.compactMap { index -> (index: Int, bytes: Int64)? in
            guard let id = dumpID(lines[index]), let size = bytes(id) else { return nil }
            return (index, size)
        }
        var laneOf: [Int: Int] = [:]
        var totals = Array(repeating: Int64(0), count: count)
        for item in data.sorted(by: { $0.bytes != $1.bytes ? $0.bytes > $1.bytes : $0.index < $1.index }) {
            let lane = totals.indices.min { totals[$0] != totals[$1] ? totals[$0] < totals[$1] : $0 < $1 }!
            laneOf[item.index] = lane
            totals[lane] += max(item.bytes, 1)
        }
        var result = Array(repeating: [String](), count: count)
        for (index, line) in lines.enumerated() { result[laneOf[index] ?? 0].append(line) }
        return result.filter { !$0.isEmpty }
    }

    /// A lane's lines cut into batches in order, each holding data files of at most `budget`
    /// estimated plain bytes (a larger file alone). The first batches get 1/16, 1/8, 1/4 and 1/2
    /// of the budget, so that pg_restore starts loading soon while the next batch is
    /// decompressed. Lines without a data file go with the batch they fall in.
    static func batches(_ lines: [String], budget: Int64, plainBytes: (Int) -> Int64?) -> [Batch] {
        var result: [Batch] = []
        var current = Batch(lines: [], ids: [])
        var used: Int64 = 0
        for line in lines {
            if let id = dumpID(line), let size = plainBytes(id) {
                let limit = result.count < 4 ? max(1, budget >> (4 - result.count)) : budget
                if !current.ids.isEmpty, used + size > limit {
                    result.append(current)
                    current = Batch(lines: [], ids: [])
                    used = 0
                }
                current.ids.append(id)
                used += size
            }
            current.lines.append(line)
        }
        if !current.lines.isEmpty { result.append(current) }
        return result
    }

    /// The most plain bytes the batches can hold in scratch space at once: in each of `lanes`
    /// lanes (no more than there are data `files`) the batch pg_restore loads and the one
    /// decompressed ahead, and one batch more (the catalog data's lane loads and prefetches while
    /// every data lane's first batch waits, ``RestoreProcedure/startFirstBatches()``), each at most
    /// `budget` or the `largest` file (a batch of its own); never more than the `total` plain
    /// size. The restore checks this much is free before it creates the database.
    static func scratchBytes(largest: Int64, files: Int, total: Int64, budget: Int64, lanes: Int) -> Int64 {
        guard files > 0 else { return 0 }
        let held = 2 * Int64(max(1, min(lanes, files))) + 1
        let batch = max(budget, largest, 0)
        let (all, overflow) = batch.multipliedReportingOverflow(by: held)
        return overflow ? max(total, 0) : max(0, min(total, all))
    }

    /// The largest data file's estimated plain size (0 without any).
    var largestPlainBytes: Int64 { sources.keys.compactMap(plainBytes(of:)).max() ?? 0 }

    /// A file's estimated plain size.
    func plainBytes(of id: Int) -> Int64? {
        sources[id].map { Int64(Double($0.bytes) * ratio) }
    }
}

import Foundation
import Synchronization

/// zstd for the data files of pg_dump's directory format.
///
/// pg_dump 15 compresses with gzip only, and gzip is where a data-heavy backup spends its time
/// (docs/performance.md). So by default pg_dump writes the directory archive uncompressed
/// (`--compress=0`, in parallel) and tsbackup compresses each table's data file with zstd
/// before the files are hashed: `dump/<dump id>.dat` becomes `dump/<dump id>.dat.zst`, one zstd
/// frame with its content checksum. `toc.dat` (and `blobs.toc`) stay as pg_dump wrote them, so
/// `pg_restore --list` still reads the stored archive in place (backup's archive check, verify).
/// The manifest's ``BackupManifest/FileCompression`` says so; its `files[]` hold the stored
/// (compressed) files' sizes and SHA-256, so verify checks them like any file.
///
/// pg_restore 15 cannot read zstd. A restore hands pg_restore a scratch directory with the
/// table of contents, and decompresses the data files into it in batches just before
/// pg_restore loads them, removing each batch once loaded (``ArchiveDataBatches``): the
/// uncompressed archive never lies whole on disk. Where that does not apply (large objects,
/// which pg_restore reads by its own plan; `TSBACKUP_RESTORE_SCRATCH_COPY=1`) every data file
/// is decompressed into the scratch directory first (``Expansion/decompress()``), which needs
/// their whole size free.
public enum ArchiveDataCompression {
    /// The suffix of a compressed data file.
    public static let suffix = ".zst"
    /// What a restore's scratch directories are called (swept when a restore was killed).
    static let scratchPrefix = "tsbackup-restore-data-"

    /// Whether `name` (a file name inside a directory archive) is table data that is compressed:
    /// `<dump id>.dat` and `blob_<oid>.dat`; never the table of contents.
    static func isDataFile(_ name: String) -> Bool {
        name.hasSuffix(".dat") && name != "toc.dat"
    }

    /// Compresses every data file of the directory archive `archive` (relative to `staging`)
    /// at zstd `level`, largest first, one file per core at a time. Each plain file is removed
    /// as soon as its compressed copy is complete. Returns the manifest entries of the
    /// compressed files (paths relative to `staging`) and the summary for the manifest.
    static func compress(archive: String, staging: String, level: Int) async throws -> (files: [BackupManifest.FileEntry], summary: BackupManifest.FileCompression) {
        try await DataFileCompressor(staging: staging, archive: archive, level: level).finish()
    }

    /// The archive as pg_restore can read it, for a backup whose data files are compressed; nil
    /// for any other backup (pg_restore reads it where it is). ``prepare(_:directory:)`` makes
    /// the scratch directory and copies the table of contents (enough for pre-data); the data
    /// files are decompressed by ``decompress()``, which the restore runs beside its first steps.
    struct Expansion: Sendable {
        let scratch: OwnedScratchDirectory
        let manifest: BackupManifest
        let directory: String
        let compressed: [BackupManifest.FileEntry]
        /// Set when the data files are decompressed batch by batch as pg_restore loads them
        /// (``ArchiveDataBatches``); nil when ``decompress()`` must write them all out first.
        var batches: ArchiveDataBatches?
        /// The archive in the scratch directory, under the manifest's archive name.
        var archivePath: String { scratch.path + "/" + manifest.archive }

        /// Decompresses every `.zst` file (under its name without the suffix), largest first,
        /// one per core at a time, and checks the total against the manifest's `plain_bytes`.
        func decompress() async throws {
            let sorted = compressed.sorted { $0.bytes > $1.bytes }
            let lanes = max(1, min(ProcessInfo.processInfo.activeProcessorCount, sorted.count))
            let (scratch, directory, manifest) = (scratch, directory, manifest)
            let produced = try await withThrowingTaskGroup(of: Int64.self) { group in
                for lane in 0..<lanes {
                    group.addTask {
                        var total: Int64 = 0
                        for index in stride(from: lane, to: sorted.count, by: lanes) {
                            let file = sorted[index]
                            let source = try EntryPath.resolve(file.path, in: directory)
                            let destination = scratch.path + "/" + String(file.path.dropLast(suffix.count))
                            total += try ZstdFile.decompress(source, to: destination, name: file.path)
                        }
                        return total
                    }
                }
                var total: Int64 = 0
                for try await part in group { total += part }
                return total
            }
            let recorded = manifest.fileCompression?.plainBytes ?? 0
            guard produced == recorded else {
                throw TSBackupError(.failed, "The data files of backup \(manifest.id) decompress to \(produced) bytes, the manifest records \(recorded); the backup was not used. Run `tsbackup verify \(manifest.id)` and restore another backup.")
            }
        }
    }

    /// See ``Expansion``. `directory` holds the entry's files (its own directory, or a
    /// materialized copy), checked against the manifest before. With `batched` (and where
    /// ``batchingAllowed(_:)``) the restore decompresses batch by batch (``Expansion/batches``);
    /// otherwise the caller runs ``Expansion/decompress()``. The caller removes the scratch directory once
    /// nothing writes into it any more.
    static func prepare(_ manifest: BackupManifest, directory: String, batched: Bool = true, lanes: Int = 1) throws -> Expansion? {
        guard let compression = manifest.fileCompression else { return nil }
        guard compression.method == "zstd", compression.suffix == suffix else {
            throw TSBackupError(.failed, "Backup \(manifest.id) stores its data files compressed with \(compression.method) (\(compression.suffix)), which this tsbackup cannot read. Restore it with the tsbackup version that took it (\(manifest.tsbackupVersion)) or newer.")
        }
        let archiveFiles = manifest.files.filter { $0.path.hasPrefix(manifest.archive + "/") }
        let plainFiles = archiveFiles.filter { !$0.path.hasSuffix(suffix) }
        let compressed = archiveFiles.filter { $0.path.hasSuffix(suffix) }
        let tocBytes = plainFiles.reduce(Int64(0)) { $0 + $1.bytes }
        let parent = ScratchSpace.base()
        let free = FileSystem.freeBytes(at: FileSystem.nearestExistingAncestor(of: parent))
        if let free, free < tocBytes + (64 << 20) {
            throw TSBackupError(.precondition, "Restoring backup \(manifest.id) needs \(ByteCount.format(tocBytes)) of local scratch space in \(parent) for its table of contents, which has \(ByteCount.format(free)) free. Free space there, or point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem.")
        }
        let scratch = try OwnedScratchDirectory(prefix: scratchPrefix, parent: parent)
        var expansion = Expansion(scratch: scratch, manifest: manifest, directory: directory, compressed: compressed)
        do {
            try FileManager.default.createDirectory(atPath: scratch.path + "/" + manifest.archive, withIntermediateDirectories: true)
            for file in plainFiles {
                try FileManager.default.copyItem(atPath: try EntryPath.resolve(file.path, in: directory), toPath: scratch.path + "/" + file.path)
            }
            if batched, batchingAllowed(compressed), let batches = try batchSources(compressed, archive: expansion.archivePath, directory: directory, plainBytes: compression.plainBytes) {
                // Up front, not as the zstd writer's I/O error halfway through the data.
                let budget = ArchiveDataBatches.batchBytes()
                let largest = batches.largestPlainBytes
                let held = ArchiveDataBatches.scratchBytes(largest: largest, files: batches.sources.count, total: compression.plainBytes,
                                                           budget: budget, lanes: lanes)
                let needed = held + tocBytes
                if let free, free < needed + (64 << 20) {
                    let lanesUsed = max(1, min(lanes, batches.sources.count))
                    throw TSBackupError(.precondition, "Restoring backup \(manifest.id) needs \(ByteCount.format(needed)) of local scratch space in \(parent), which has \(ByteCount.format(free)) free: pg_restore cannot read zstd, so its data files are decompressed there batch by batch, and \(lanesUsed) lane\(lanesUsed == 1 ? "" : "s") (--jobs) each hold the batch loading and the next one (and one more while the TimescaleDB catalog data loads), each up to \(ByteCount.format(max(budget, largest))) (TSBACKUP_RESTORE_BATCH_BYTES is \(ByteCount.format(budget)), the largest data file about \(ByteCount.format(largest)) decompressed), never more than all its data (\(ByteCount.format(compression.plainBytes))), plus the table of contents. Nothing was restored. Free space there, point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem, or set a smaller TSBACKUP_RESTORE_BATCH_BYTES (or fewer --jobs); a batch is never smaller than the largest data file.")
                }
                expansion.batches = batches
                return expansion
            }
        } catch {
            scratch.remove()
            throw (error as? TSBackupError) ?? TSBackupError(.failed, "Could not copy the archive's table of contents into \(scratch.path): \(error.localizedDescription). Check TSBACKUP_SCRATCH_DIR (or TMPDIR).")
        }
        // The fallback: every data file decompressed into scratch space before pg_restore reads it.
        let needed = compression.plainBytes + tocBytes
        if let free, free < needed + (64 << 20) {
            scratch.remove()
            throw TSBackupError(.precondition, "Restoring backup \(manifest.id) needs \(ByteCount.format(needed)) of local scratch space in \(parent) for its decompressed data files (pg_restore cannot read zstd, and its data files cannot be decompressed batch by batch\(compressed.contains { isLargeObjectFile($0.path) } ? ": the backup holds large objects" : "")), which has \(ByteCount.format(free)) free. Free space there, or point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem.")
        }
        return expansion
    }

    /// `TSBACKUP_RESTORE_SCRATCH_COPY=1` decompresses every data file into scratch space before
    /// pg_restore runs, as before batches: a way back, and the benchmark's "before".
    static func scratchCopyRequested(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["TSBACKUP_RESTORE_SCRATCH_COPY"] == "1"
    }

    static func isLargeObjectFile(_ path: String) -> Bool {
        (path.split(separator: "/").last ?? "").hasPrefix("blob_")
    }

    /// Batches cover table data only: pg_restore reads large objects (`blob_<oid>.dat`) as
    /// blobs.toc lists them, within one entry a list file cannot cut.
    static func batchingAllowed(_ compressed: [BackupManifest.FileEntry]) -> Bool {
        !scratchCopyRequested() && !compressed.contains { isLargeObjectFile($0.path) }
    }

    /// The stored file of each dump id, or nil when a name is not `<dump id>.dat.zst`.
    static func batchSources(_ compressed: [BackupManifest.FileEntry], archive: String, directory: String, plainBytes: Int64) throws -> ArchiveDataBatches? {
        var sources: [Int: ArchiveDataBatches.Source] = [:]
        for file in compressed {
            let name = String(file.path.split(separator: "/").last ?? "")
            guard name.hasSuffix(".dat" + suffix), let id = Int(name.dropLast((".dat" + suffix).count)) else { return nil }
            sources[id] = .init(path: try EntryPath.resolve(file.path, in: directory), name: file.path, bytes: file.bytes)
        }
        let stored = compressed.reduce(Int64(0)) { $0 + $1.bytes }
        return ArchiveDataBatches(directory: archive, sources: sources, ratio: stored > 0 ? Double(plainBytes) / Double(stored) : 1)
    }

    /// ``prepare(_:directory:)`` and ``Expansion/decompress()`` at once; the caller removes the
    /// returned directory.
    static func expand(_ manifest: BackupManifest, directory: String) async throws -> OwnedScratchDirectory? {
        guard let expansion = try prepare(manifest, directory: directory, batched: false) else { return nil }
        do {
            try await expansion.decompress()
        } catch {
            expansion.scratch.remove()
            throw error
        }
        return expansion.scratch
    }

    /// Removes restore scratch directories whose restore was killed (see ``OwnedScratchDirectory``).
    static func sweep() -> [String] {
        OwnedScratchDirectory.sweep(prefix: scratchPrefix, parent: ScratchSpace.base(), what: "restore")
    }
}

extension ArchiveDataCompression {
    /// The dump id of a data file pg_dump reports done: its verbose line `finished item <id>
    /// TABLE DATA <name>` (printed once a parallel worker has closed the file); nil for any other line.
    static func finishedDataItem(_ line: String) -> Int? {
        var body = Substring(line.trimmingCharacters(in: .whitespaces))
        if body.hasPrefix("pg_dump: ") { body = body.dropFirst("pg_dump: ".count) }
        guard body.hasPrefix("finished item ") else { return nil }
        let rest = body.dropFirst("finished item ".count)
        guard let space = rest.firstIndex(of: " "), let id = Int(rest[..<space]), id > 0,
              rest[space...].hasPrefix(" TABLE DATA ") else { return nil }
        return id
    }
}

/// Compresses a directory archive's data files with zstd while pg_dump still dumps the others.
///
/// Compressing after pg_dump ended put all of zstd's CPU time after the dump; on a loaded
/// machine that serial tail cost more than pg_dump's own gzip, which runs beside the server's
/// COPY. So each data file pg_dump reports finished (``ArchiveDataCompression/finishedDataItem(_:)``)
/// is compressed at once, at most `lanes` files at a time on threads of their own; ``finish()``
/// then takes whatever was not reported (blobs, a serial dump), largest first, and waits. A
/// file is also compressed soon after it was written, while its pages are still in memory
/// (often before the kernel wrote them out), and the uncompressed archive never lies whole in
/// the staging directory at once unless the dump is serial.
final class DataFileCompressor: Sendable {
    private struct State {
        var queue: [String] = []
        var submitted: Set<String> = []
        var running = 0
        var results: [(file: BackupManifest.FileEntry, plainBytes: Int64)] = []
        var failure: TSBackupError?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    /// The archive's path relative to the staging directory, and its absolute path.
    let archive: String
    let directory: String
    let level: Int
    let lanes: Int
    private let state = Mutex(State())

    init(staging: String, archive: String, level: Int, lanes: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.archive = archive
        self.directory = staging + "/" + archive
        self.level = level
        self.lanes = max(1, lanes)
    }

    /// Queues the data file `name` (in the archive) unless it was queued before.
    func submit(_ name: String) {
        let start = state.withLock { state -> Bool in
            guard state.failure == nil, state.submitted.insert(name).inserted else { return false }
            state.queue.append(name)
            guard state.running < lanes else { return false }
            state.running += 1
            return true
        }
        // Blocking file work stays off Swift's cooperative threads.
        if start { Thread.detachNewThread { self.work() } }
    }

    private func work() {
        while true {
            let next = state.withLock { state -> String? in
                if state.failure == nil, !state.queue.isEmpty { return state.queue.removeFirst() }
                state.running -= 1
                return nil
            }
            guard let name = next else { break }
            do {
                let plain = directory + "/" + name
                let packed = try ZstdFile.compress(plain, to: plain + ArchiveDataCompression.suffix, level: level)
                guard unlink(plain) == 0 else { throw FileSystem.ioError("remove \(plain)") }
                let entry = BackupManifest.FileEntry(path: archive + "/" + name + ArchiveDataCompression.suffix, bytes: packed.bytes, sha256: packed.sha256)
                state.withLock { $0.results.append((entry, packed.plainBytes)) }
            } catch {
                let failure = (error as? TSBackupError) ?? TSBackupError(.failed, "Compressing \(name) failed: \(error)")
                state.withLock { if $0.failure == nil { $0.failure = failure } }
            }
        }
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.running == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no file is being compressed (before the archive is removed or kept).
    func idle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.running == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// After pg_dump succeeded: compresses the data files it did not report, largest first,
    /// waits for all, and returns the manifest entries (sorted by path) and the summary.
    func finish() async throws -> (files: [BackupManifest.FileEntry], summary: BackupManifest.FileCompression) {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter(ArchiveDataCompression.isDataFile)
        for (name, _) in names.map({ ($0, FileSystem.size(of: directory + "/" + $0)) }).sorted(by: { $0.1 > $1.1 }) {
            submit(name)
        }
        await idle()
        let (results, failure) = state.withLock { ($0.results, $0.failure) }
        if let failure { throw failure }
        let summary = BackupManifest.FileCompression(
            method: "zstd", level: level, suffix: ArchiveDataCompression.suffix, files: results.count,
            plainBytes: results.reduce(0) { $0 + $1.plainBytes }, bytes: results.reduce(0) { $0 + $1.file.bytes })
        return (results.map(\.file).sorted { $0.path < $1.path }, summary)
    }
}

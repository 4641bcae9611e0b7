import Foundation

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
/// pg_restore 15 cannot read zstd: a restore first writes the archive with every data file
/// decompressed into a scratch directory (``expand(_:directory:)``) and hands pg_restore that.
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
        let directory = staging + "/" + archive
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter(isDataFile)
        let sized = names.map { ($0, FileSystem.size(of: directory + "/" + $0)) }.sorted { $0.1 > $1.1 }
        let lanes = max(1, min(ProcessInfo.processInfo.activeProcessorCount, sized.count))
        let results = try await withThrowingTaskGroup(of: [(BackupManifest.FileEntry, Int64)].self) { group in
            // Lane i takes files i, i + lanes, ...: with the largest first, the lanes end close together.
            for lane in 0..<lanes {
                group.addTask {
                    try stride(from: lane, to: sized.count, by: lanes).map { index in
                        let name = sized[index].0
                        let plain = directory + "/" + name
                        let packed = try ZstdFile.compress(plain, to: plain + suffix, level: level)
                        guard unlink(plain) == 0 else { throw FileSystem.ioError("remove \(plain)") }
                        return (BackupManifest.FileEntry(path: archive + "/" + name + suffix, bytes: packed.bytes, sha256: packed.sha256), packed.plainBytes)
                    }
                }
            }
            var all: [(BackupManifest.FileEntry, Int64)] = []
            for try await part in group { all += part }
            return all
        }
        let summary = BackupManifest.FileCompression(
            method: "zstd", level: level, suffix: suffix, files: results.count,
            plainBytes: results.reduce(0) { $0 + $1.1 }, bytes: results.reduce(0) { $0 + $1.0.bytes })
        return (results.map(\.0).sorted { $0.path < $1.path }, summary)
    }

    /// The archive as pg_restore can read it: for a backup whose data files are compressed, a
    /// scratch directory holding `manifest.archive` with every `.zst` file decompressed (under
    /// its name without the suffix) and the other archive files copied; nil for any other
    /// backup (pg_restore reads it where it is). `directory` holds the entry's files (its own
    /// directory, or a materialized copy); they were checked against the manifest before.
    /// The caller removes the scratch directory.
    static func expand(_ manifest: BackupManifest, directory: String) async throws -> OwnedScratchDirectory? {
        guard let compression = manifest.fileCompression else { return nil }
        guard compression.method == "zstd", compression.suffix == suffix else {
            throw TSBackupError(.failed, "Backup \(manifest.id) stores its data files compressed with \(compression.method) (\(compression.suffix)), which this tsbackup cannot read. Restore it with the tsbackup version that took it (\(manifest.tsbackupVersion)) or newer.")
        }
        let archiveFiles = manifest.files.filter { $0.path.hasPrefix(manifest.archive + "/") }
        let otherBytes = archiveFiles.filter { !$0.path.hasSuffix(suffix) }.reduce(Int64(0)) { $0 + $1.bytes }
        let needed = compression.plainBytes + otherBytes
        let parent = ScratchSpace.base()
        if let free = FileSystem.freeBytes(at: FileSystem.nearestExistingAncestor(of: parent)), free < needed + (64 << 20) {
            throw TSBackupError(.precondition, "Restoring backup \(manifest.id) needs \(ByteCount.format(needed)) of local scratch space in \(parent) for its decompressed data files (pg_restore cannot read zstd), which has \(ByteCount.format(free)) free. Free space there, or point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem.")
        }
        let scratch = try OwnedScratchDirectory(prefix: scratchPrefix, parent: parent)
        do {
            try FileManager.default.createDirectory(atPath: scratch.path + "/" + manifest.archive, withIntermediateDirectories: true)
            let sorted = archiveFiles.sorted { $0.bytes > $1.bytes }
            let lanes = max(1, min(ProcessInfo.processInfo.activeProcessorCount, sorted.count))
            let produced = try await withThrowingTaskGroup(of: Int64.self) { group in
                for lane in 0..<lanes {
                    group.addTask {
                        var total: Int64 = 0
                        for index in stride(from: lane, to: sorted.count, by: lanes) {
                            let file = sorted[index]
                            let source = try EntryPath.resolve(file.path, in: directory)
                            if file.path.hasSuffix(suffix) {
                                let destination = scratch.path + "/" + String(file.path.dropLast(suffix.count))
                                total += try ZstdFile.decompress(source, to: destination, name: file.path)
                            } else {
                                try FileManager.default.copyItem(atPath: source, toPath: scratch.path + "/" + file.path)
                            }
                        }
                        return total
                    }
                }
                var total: Int64 = 0
                for try await part in group { total += part }
                return total
            }
            guard produced == compression.plainBytes else {
                throw TSBackupError(.failed, "The data files of backup \(manifest.id) decompress to \(produced) bytes, the manifest records \(compression.plainBytes); the backup was not used. Run `tsbackup verify \(manifest.id)` and restore another backup.")
            }
        } catch {
            scratch.remove()
            throw error
        }
        return scratch
    }

    /// Removes restore scratch directories whose restore was killed (see ``OwnedScratchDirectory``).
    static func sweep() -> [String] {
        OwnedScratchDirectory.sweep(prefix: scratchPrefix, parent: ScratchSpace.base(), what: "restore")
    }
}

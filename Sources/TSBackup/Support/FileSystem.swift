import Crypto
import Foundation

/// Durable file operations: a backup is only as good as what reached the disk.
public enum FileSystem {
    /// Flushes a file or directory to stable storage.
    public static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ioError("open \(path) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ioError("fsync \(path)") }
    }

    /// Flushes every file and directory under `directory` to stable storage.
    ///
    /// One `syncfs` of the filesystem costs one journal commit; an fsync per file costs one per
    /// file (thousands for a dump with thousands of chunks). Falls back to per-file fsync where
    /// `syncfs` is unavailable.
    public static func syncTree(_ directory: String) throws {
        if let syncfs = syncfsFunction {
            let fd = open(directory, O_RDONLY)
            guard fd >= 0 else { throw ioError("open \(directory) to sync it") }
            defer { close(fd) }
            guard syncfs(fd) == 0 else { throw ioError("sync the filesystem holding \(directory)") }
            return
        }
        let files = try regularFiles(under: directory)
        for file in files { try sync(directory + "/" + file) }
        for parent in Set(files.map { ((directory + "/" + $0) as NSString).deletingLastPathComponent }) + [directory] {
            try sync(parent)
        }
    }

    /// glibc's syncfs(2), which Swift's Glibc module does not import.
    private static let syncfsFunction: (@convention(c) (Int32) -> Int32)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "syncfs") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Int32).self)
    }()

    /// Writes `data` to `path` through a temporary file, fsyncs it, renames it into place and
    /// fsyncs the directory, so readers see the old contents or the new, never a torn file.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: nil) else { throw ioError("create \(temporary)") }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try handle.write(contentsOf: data)
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw ioError("write \(path)", underlying: error)
        }
        try rename(temporary, to: path)
    }

    /// Renames and fsyncs the directory holding the result.
    public static func rename(_ from: String, to: String) throws {
        guard Foundation.rename(from, to) == 0 else { throw ioError("rename \(from) to \(to)") }
        try sync((to as NSString).deletingLastPathComponent)
    }

    /// Every regular file under `directory`, as paths relative to it, sorted.
    public static func regularFiles(under directory: String) throws -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory + "/" + relative, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(relative)
            }
        }
        return files.sorted()
    }

    /// SHA-256 (hex) and size of a file, read in 1 MiB pieces.
    public static func sha256(of path: String) throws -> (hex: String, bytes: Int64) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ioError("open \(path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        var total: Int64 = 0
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            total += Int64(chunk.count)
        }
        return (hex(hasher.finalize()), total)
    }

    /// Size and SHA-256 of every regular file under `directory`, hashed on all cores, sorted by path.
    /// Files in `skipping` (relative paths) are left out: their caller hashed them already.
    public static func hashFiles(under directory: String, skipping: Set<String> = []) async throws -> [BackupManifest.FileEntry] {
        let files = try regularFiles(under: directory).filter { !skipping.contains($0) }
        let lanes = max(1, min(ProcessInfo.processInfo.activeProcessorCount, files.count))
        if files.isEmpty { return [] }
        return try await withThrowingTaskGroup(of: [BackupManifest.FileEntry].self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    try stride(from: lane, to: files.count, by: lanes).map { index in
                        let (hex, bytes) = try sha256(of: directory + "/" + files[index])
                        return BackupManifest.FileEntry(path: files[index], bytes: bytes, sha256: hex)
                    }
                }
            }
            var all: [BackupManifest.FileEntry] = []
            for try await part in group { all += part }
            return all.sorted { $0.path < $1.path }
        }
    }

    /// Lower-case hex of a digest's bytes. Written out by hand: `String(format:)` per byte cost
    /// about as much as hashing a small file, once per file of a 50,000-chunk archive.
    public static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func sha256(of data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    /// Bytes available to this user on the filesystem holding `path`.
    public static func freeBytes(at path: String) -> Int64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// `path` itself if it exists, else its closest existing parent directory.
    public static func nearestExistingAncestor(of path: String) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
            url = url.deletingLastPathComponent()
        }
        return url.path
    }

    /// Total size of the regular files under `directory` (or of one file).
    public static func size(of path: String) -> Int64 {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
        if !isDirectory.boolValue {
            return ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
        }
        return ((try? regularFiles(under: path)) ?? []).reduce(0) { $0 + size(of: path + "/" + $1) }
    }

    /// One read(2) into `buffer`, retried on EINTR: the bytes read, 0 at the end of the file.
    static func readSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        try SystemIO.readSome(fd, into: buffer) { ioError("read \(path)", code: $0) }
    }

    /// Writes all of `bytes` to `fd`, through short writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        try SystemIO.writeAll(fd, bytes) { ioError("write \(path)", code: $0) }
    }

    /// An error for a failed system call (`code`: its errno) or a failed Foundation call (`underlying`).
    static func ioError(_ what: String, underlying: (any Error)? = nil, code: Int32 = errno) -> TSBackupError {
        let reason = underlying.map { "\($0)" } ?? String(cString: strerror(code))
        if code == ENOSPC || reason.contains("No space left") {
            return TSBackupError(.failed, "Could not \(what): the disk is full. Free space on that filesystem or use a repository elsewhere, then run the command again.")
        }
        return TSBackupError(.failed, "Could not \(what): \(reason). Check the path, its permissions and free space.")
    }
}

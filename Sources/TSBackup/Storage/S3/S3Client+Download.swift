import Foundation
import NIOHTTP1
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension S3Client {
    /// Downloads an object into a file at `path` (replaced if present).
    ///
    /// Objects above the multipart threshold are fetched as parallel ranged GETs of one part size
    /// each (`effectiveConcurrency` at a time, so memory stays bounded) pinned to the object's
    /// ETag with `If-Match`, so an object replaced mid-download fails instead of mixing versions.
    /// The bytes go to `path.part` first and are renamed into place only when complete.
    /// - Returns: the object's size.
    @discardableResult
    public func downloadFile(_ key: String, to path: String) async throws -> Int64 {
        guard let info = try await headObject(key) else {
            throw S3Error(code: .noSuchKey, status: 404, s3Code: "NoSuchKey", key: key, operation: "GetObject",
                          message: "the object does not exist")
        }
        let temporary = path + ".part"
        let file = try WritableFile(path: temporary)
        do {
            if info.size <= options.multipartThreshold {
                try await budget.withBytes(info.size) {
                    let data = try await getObject(key)
                    try file.write(data, at: 0)
                }
            } else {
                let partSize = Self.partSize(forObjectSize: info.size, minimum: options.minimumPartSize)
                let count = Int((info.size + partSize - 1) / partSize)
                let width = effectiveConcurrency(partSize: partSize)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    var next = 0
                    func launch() {
                        let index = next
                        next += 1
                        let range = Int64(index) * partSize..<min(Int64(index + 1) * partSize, info.size)
                        group.addTask { [self] in
                            try await budget.withBytes(Int64(range.count)) {
                                let data = try await getRange(key, range: range, etag: info.etag)
                                try file.write(data, at: range.lowerBound)
                            }
                        }
                    }
                    while next < min(width, count) { launch() }
                    while try await group.next() != nil {
                        if next < count { launch() }
                    }
                }
            }
            try file.finish(expectedSize: info.size)
            guard rename(temporary, path) == 0 else {
                throw S3Error(code: .other, key: key, operation: "GetObject",
                              message: "could not move the download into place at \(path): \(String(cString: strerror(errno)))")
            }
            return info.size
        } catch {
            file.close()
            unlink(temporary)
            throw error
        }
    }

    /// One ranged GET that must return exactly `range`, from the object version `etag`.
    func getRange(_ key: String, range: Range<Int64>, etag: String?) async throws -> Data {
        var request = Request(method: .GET, key: key, operation: "GetObject \(range.lowerBound)-\(range.upperBound - 1)",
                              responseLimit: Int(clamping: range.count))
        request.headers.append(("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        if let etag { request.headers.append(("If-Match", "\"\(etag)\"")) }
        let response = try await send(request)
        guard response.status == 206, Int64(response.body.count) == Int64(range.count) else {
            throw S3Error(code: .other, status: response.status, key: key, operation: request.operation,
                          message: "expected \(range.count) bytes (206), got \(response.body.count) bytes (\(response.status))")
        }
        return response.body
    }
}

private func closeDescriptor(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #else
    _ = Darwin.close(fd)
    #endif
}

/// A file opened for reading by range from many tasks at once (`pread` needs no shared offset).
final class ReadOnlyFile: Sendable {
    let fd: Int32
    let size: Int64
    let path: String

    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw S3Error(code: .other, operation: "PutObject", message: "could not open \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let message = String(cString: strerror(errno))
            closeDescriptor(fd)
            throw S3Error(code: .other, operation: "PutObject", message: "could not stat \(path): \(message)")
        }
        self.fd = fd
        self.size = Int64(info.st_size)
        self.path = path
    }

    static func size(of path: String) throws -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw S3Error(code: .other, operation: "PutObject", message: "could not stat \(path): \(String(cString: strerror(errno)))")
        }
        return Int64(info.st_size)
    }

    func read(_ range: Range<Int64>) throws -> Data {
        var data = Data(count: Int(range.count))
        let done = try data.withUnsafeMutableBytes { buffer in
            try SystemIO.readFull(fd, into: buffer, at: range.lowerBound) {
                S3Error(code: .other, operation: "PutObject", message: "could not read \(path): \(String(cString: strerror($0)))")
            }
        }
        guard done == data.count else {
            throw S3Error(code: .other, operation: "PutObject", message: "\(path) ended early at \(range.lowerBound + Int64(done)) bytes (it shrank while being uploaded)")
        }
        return data
    }

    deinit { closeDescriptor(fd) }
}

/// A file written by range from many tasks at once (`pwrite`).
final class WritableFile: Sendable {
    let fd: Int32
    let path: String
    private let closed = Atomic<Bool>(false)

    init(path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw S3Error(code: .other, operation: "GetObject", message: "could not create \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.path = path
    }

    func write(_ data: Data, at offset: Int64) throws {
        try data.withUnsafeBytes { buffer in
            try SystemIO.writeAll(fd, buffer, at: offset) {
                S3Error(code: .other, operation: "GetObject", message: "could not write \(path): \(String(cString: strerror($0)))")
            }
        }
    }

    /// Checks the length, flushes to disk and closes.
    func finish(expectedSize: Int64) throws {
        var info = stat()
        guard fstat(fd, &info) == 0, Int64(info.st_size) == expectedSize else {
            throw S3Error(code: .other, operation: "GetObject", message: "\(path) has \(info.st_size) bytes after the download, expected \(expectedSize)")
        }
        guard fsync(fd) == 0 else {
            throw S3Error(code: .other, operation: "GetObject", message: "could not flush \(path): \(String(cString: strerror(errno)))")
        }
        close()
    }

    func close() {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) { closeDescriptor(fd) }
    }

    deinit { close() }
}

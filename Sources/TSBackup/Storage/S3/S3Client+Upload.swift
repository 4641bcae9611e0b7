import Foundation
import Logging
import NIOHTTP1

extension S3Client {
    /// S3's limits for multipart uploads.
    public enum MultipartLimits {
        public static let maxParts: Int64 = 10_000
        public static let maxPartSize: Int64 = 5 << 30
        public static let maxObjectSize: Int64 = 5 * (1 << 40)
    }

    /// The part size for an object of `size` bytes: at least `minimum`, a whole number of MiB,
    /// and large enough that the object fits in 10,000 parts (a 5 TiB object gets ~525 MiB parts).
    public static func partSize(forObjectSize size: Int64, minimum: Int64 = 8 << 20) -> Int64 {
        let mib: Int64 = 1 << 20
        let needed = (size + MultipartLimits.maxParts - 1) / MultipartLimits.maxParts
        let rounded = (max(needed, minimum) + mib - 1) / mib * mib
        return min(rounded, MultipartLimits.maxPartSize)
    }

    /// How many parts may be in flight at once for parts of `partSize`: the configured
    /// concurrency, reduced so that the part buffers stay within the memory budget.
    public func effectiveConcurrency(partSize: Int64) -> Int {
        Self.effectiveConcurrency(options: options, partSize: partSize)
    }

    static func effectiveConcurrency(options: Options, partSize: Int64) -> Int {
        let byMemory = Int(max(1, options.memoryBudget / max(partSize, 1)))
        return max(1, min(options.concurrency, byMemory))
    }

    /// Uploads an object of `size` bytes whose contents `reader` produces by range, so callers
    /// can stream files or encrypt on the fly. `reader` may be called more than once for the same
    /// range (retries) and concurrently for different ranges; it must return exactly the bytes asked.
    ///
    /// Up to `multipartThreshold` bytes go in one PutObject; above, a multipart upload with parts of
    /// ``partSize(forObjectSize:minimum:)`` sent `effectiveConcurrency` at a time. A failed or
    /// cancelled multipart upload is aborted so no parts are left billed in the bucket.
    public func putObject(_ key: String, size: Int64, reader: @escaping @Sendable (Range<Int64>) async throws -> Data) async throws {
        guard size >= 0, size <= MultipartLimits.maxObjectSize else {
            throw S3Error(code: .other, key: key, operation: "PutObject",
                          message: "an object must be 0 to 5 TiB; this one is \(size) bytes")
        }
        if size <= options.multipartThreshold {
            let request = Request(method: .PUT, key: key, operation: "PutObject")
            _ = try await budget.withBytes(size) {
                try await send(request, body: { try await Self.read(reader, 0..<size, key: key) })
            }
            return
        }
        let partSize = Self.partSize(forObjectSize: size, minimum: options.minimumPartSize)
        let uploadId = try await createMultipartUpload(key)
        do {
            let parts = try await uploadParts(key, uploadId: uploadId, size: size, partSize: partSize, reader: reader)
            try await completeMultipartUpload(key, uploadId: uploadId, parts: parts)
        } catch {
            // Abort even when cancelled: the parts would otherwise stay stored (and billed).
            await Task.detached { [self] in
                do {
                    try await abortMultipartUpload(key, uploadId: uploadId)
                } catch {
                    logger.warning("could not abort the multipart upload of \(key): \(error)")
                }
            }.value
            throw error
        }
    }

    /// Uploads a local file (multipart above the threshold), reading it by range as parts go out.
    public func putFile(_ key: String, path: String) async throws {
        let file = try ReadOnlyFile(path: path)
        let size = file.size
        try await putObject(key, size: size) { range in try file.read(range) }
        // The file must not have changed size while we sent it.
        let after = try ReadOnlyFile.size(of: path)
        if after != size {
            throw S3Error(code: .other, key: key, operation: "PutObject",
                          message: "\(path) changed size during the upload (\(size) -> \(after) bytes); the stored object may be inconsistent, upload again")
        }
    }

    // MARK: Multipart steps

    func createMultipartUpload(_ key: String) async throws -> String {
        var request = Request(method: .POST, key: key, operation: "CreateMultipartUpload")
        request.query = [("uploads", "")]
        let response = try await send(request, body: { Data() })
        return try S3XML.uploadId(response.body)
    }

    func uploadParts(_ key: String, uploadId: String, size: Int64, partSize: Int64,
                     reader: @escaping @Sendable (Range<Int64>) async throws -> Data) async throws -> [(number: Int, etag: String)] {
        let count = Int((size + partSize - 1) / partSize)
        let width = effectiveConcurrency(partSize: partSize)
        var etags = [String?](repeating: nil, count: count)
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var next = 0
            func launch() {
                let index = next
                next += 1
                let range = Int64(index) * partSize..<min(Int64(index + 1) * partSize, size)
                group.addTask { [self] in
                    var request = Request(method: .PUT, key: key, operation: "UploadPart \(index + 1)/\(count)")
                    request.query = [("partNumber", String(index + 1)), ("uploadId", uploadId)]
                    let response = try await budget.withBytes(Int64(range.count)) {
                        try await send(request, body: { try await Self.read(reader, range, key: key) })
                    }
                    guard let etag = response.headers.first(name: "ETag") else {
                        throw S3Error(code: .other, status: response.status, key: key, operation: request.operation,
                                      message: "the store returned no ETag for the part")
                    }
                    return (index, S3XML.unquoteETag(etag))
                }
            }
            while next < min(width, count) { launch() }
            while let (index, etag) = try await group.next() {
                etags[index] = etag
                if next < count { launch() }
            }
        }
        return etags.enumerated().map { (number: $0.offset + 1, etag: $0.element!) }
    }

    func completeMultipartUpload(_ key: String, uploadId: String, parts: [(number: Int, etag: String)]) async throws {
        var request = Request(method: .POST, key: key, operation: "CompleteMultipartUpload")
        request.query = [("uploadId", uploadId)]
        request.headers = [("Content-Type", "application/xml")]
        let body = S3XML.completeRequest(parts)
        let response = try await send(request, body: { body })
        // S3 may answer 200 and put the failure in the body.
        let result = try S3XML.completeResult(response.body)
        if let failure = result.error {
            throw S3Error(code: S3Error.classify(status: 500, s3Code: failure.code), status: response.status, s3Code: failure.code,
                          key: key, operation: "CompleteMultipartUpload", message: failure.message ?? "completion failed")
        }
    }

    /// Aborts a multipart upload; an upload already gone (404 NoSuchUpload) counts as aborted.
    public func abortMultipartUpload(_ key: String, uploadId: String) async throws {
        var request = Request(method: .DELETE, key: key, operation: "AbortMultipartUpload")
        request.query = [("uploadId", uploadId)]
        _ = try await send(request, accept: [404])
    }

    /// Multipart uploads started under `prefix` and neither completed nor aborted (leftovers of
    /// interrupted runs, for garbage collection).
    public func listMultipartUploads(prefix: String = "") async throws -> [S3MultipartUploadInfo] {
        var uploads: [S3MultipartUploadInfo] = []
        var keyMarker: String?
        var uploadMarker: String?
        while true {
            var request = Request(method: .GET, key: nil, operation: "ListMultipartUploads")
            request.query = [("uploads", ""), ("encoding-type", "url")]
            if !prefix.isEmpty { request.query.append(("prefix", prefix)) }
            if let keyMarker { request.query.append(("key-marker", keyMarker)) }
            if let uploadMarker { request.query.append(("upload-id-marker", uploadMarker)) }
            let response = try await send(request)
            let page = try S3XML.listMultipartUploads(response.body)
            uploads += page.uploads
            guard page.truncated, let nextKey = page.nextKey, nextKey != keyMarker || page.nextUploadId != uploadMarker else { break }
            keyMarker = nextKey
            uploadMarker = page.nextUploadId
        }
        return uploads
    }

    /// Calls the reader and checks it kept its promise on length.
    static func read(_ reader: @Sendable (Range<Int64>) async throws -> Data, _ range: Range<Int64>, key: String) async throws -> Data {
        let data = try await reader(range)
        guard Int64(data.count) == Int64(range.count) else {
            throw S3Error(code: .other, key: key, operation: "PutObject",
                          message: "the data source gave \(data.count) bytes for the \(range.count) bytes at offset \(range.lowerBound)")
        }
        return data
    }
}

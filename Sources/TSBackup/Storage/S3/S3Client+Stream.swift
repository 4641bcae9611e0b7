import Foundation
import Logging
import NIOHTTP1

extension S3Client {
    /// Starts an upload of an object whose size is not known in advance (a child process's
    /// output): see ``S3UploadStream``. `expectedSize` only chooses the part size, so that an
    /// object up to about twice that size fits in S3's 10,000 parts.
    public func uploadStream(_ key: String, expectedSize: Int64) -> S3UploadStream {
        let partSize = Self.partSize(forObjectSize: max(expectedSize, 0) * 2, minimum: options.minimumPartSize)
        return S3UploadStream(client: self, key: key, partSize: partSize, width: effectiveConcurrency(partSize: partSize))
    }
}

/// An object uploaded while it is produced: bytes are collected into parts, and each full part
/// goes out as an UploadPart of one multipart upload, at most `width` at a time (a writer that
/// is ahead waits for the oldest part, so memory stays at about `width + 1` parts whatever the
/// object's size, and the producer is slowed to the store's pace). An object that ends before
/// its first part is full is stored with one PutObject and no multipart upload is ever made.
///
/// ``finish()`` completes the upload; ``abort()`` (call it on every failure, also when the
/// producer failed) cancels the parts in flight and aborts the multipart upload, so no parts stay
/// stored. A process killed in between leaves the multipart upload behind; the repository's
/// garbage collection lists and aborts such leftovers.
public actor S3UploadStream {
    let client: S3Client
    public let key: String
    let partSize: Int64
    let width: Int
    private var buffer = Data()
    private var uploadId: String?
    private var nextPart = 1
    private var inFlight: [(number: Int, task: Task<String, any Error>)] = []
    private var done: [(number: Int, etag: String)] = []
    private var total: Int64 = 0
    private var closed = false

    init(client: S3Client, key: String, partSize: Int64, width: Int) {
        self.client = client
        self.key = key
        self.partSize = partSize
        self.width = max(1, width)
    }

    /// Bytes accepted so far.
    public var bytesWritten: Int64 { total }

    /// Appends bytes; sends every part that became full (waiting while `width` parts are in flight).
    public func write(_ data: Data) async throws {
        precondition(!closed, "S3UploadStream written after finish or abort")
        total += Int64(data.count)
        buffer.append(data)
        while Int64(buffer.count) >= partSize {
            let part = Data(buffer.prefix(Int(partSize)))
            buffer.removeFirst(Int(partSize))
            try await send(part)
        }
    }

    /// Sends what is left and completes the object. Nothing is visible under `key` before.
    public func finish() async throws {
        precondition(!closed, "S3UploadStream finished twice")
        closed = true
        guard uploadId != nil else {
            // Smaller than one part: one PutObject, no multipart upload to leave behind.
            let body = buffer
            buffer = Data()
            _ = try await client.putObject(key, data: body)
            return
        }
        if !buffer.isEmpty {
            let part = buffer
            buffer = Data()
            try await send(part)
        }
        while !inFlight.isEmpty { try await collectOldest() }
        guard let uploadId else { return }
        try await client.completeMultipartUpload(key, uploadId: uploadId, parts: done.sorted { $0.number < $1.number })
    }

    /// Cancels the parts in flight and aborts the multipart upload (if one was started). Never throws:
    /// a failed abort is logged, and garbage collection finds the upload later.
    public func abort() async {
        closed = true
        buffer = Data()
        for (_, task) in inFlight { task.cancel() }
        for (_, task) in inFlight { _ = try? await task.value }
        inFlight = []
        guard let uploadId else { return }
        self.uploadId = nil
        let client = client, key = key
        // Detached: abort even when the caller is being cancelled.
        await Task.detached {
            do {
                try await client.abortMultipartUpload(key, uploadId: uploadId)
            } catch {
                client.logger.warning("could not abort the multipart upload of \(key): \(error)")
            }
        }.value
    }

    private func send(_ part: Data) async throws {
        if uploadId == nil { uploadId = try await client.createMultipartUpload(key) }
        guard let uploadId else { return }
        while inFlight.count >= width { try await collectOldest() }
        let number = nextPart
        nextPart += 1
        guard Int64(number) <= S3Client.MultipartLimits.maxParts else {
            throw S3Error(code: .other, key: key, operation: "UploadPart",
                          message: "the object outgrew S3's 10,000 parts of \(partSize) bytes; the size it was expected to have was far too small")
        }
        let client = client, key = key
        let task = Task<String, any Error> {
            var request = S3Client.Request(method: .PUT, key: key, operation: "UploadPart \(number)")
            request.query = [("partNumber", String(number)), ("uploadId", uploadId)]
            let response = try await client.budget.withBytes(Int64(part.count)) {
                try await client.send(request, body: { part })
            }
            guard let etag = response.headers.first(name: "ETag") else {
                throw S3Error(code: .other, status: response.status, key: key, operation: request.operation,
                              message: "the store returned no ETag for the part")
            }
            return S3XML.unquoteETag(etag)
        }
        inFlight.append((number, task))
    }

    private func collectOldest() async throws {
        let (number, task) = inFlight.removeFirst()
        do {
            done.append((number, try await task.value))
        } catch {
            // The caller aborts; the other parts must not keep running meanwhile.
            for (_, other) in inFlight { other.cancel() }
            throw error
        }
    }
}

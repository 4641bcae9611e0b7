import Crypto
import Foundation
import NIOHTTP1

extension S3Client {
    /// Stores `data` under `key` in one PutObject.
    ///
    /// - Parameter ifNoneMatch: send `If-None-Match: *`, so the write only creates: if the key
    ///   exists the store answers 412 and this throws ``S3Error`` with code `.preconditionFailed`.
    ///   (If an attempt's answer is lost and the retry finds the object that attempt created, the
    ///   retry also sees 412; callers using this as a lock re-read the object to tell.)
    /// - Parameter ifMatch: an ETag: the write only replaces that version of the object (412,
    ///   `.preconditionFailed`, when the object changed; `.noSuchKey` when it is gone).
    /// - Returns: the stored object's ETag (without quotes), when the store sends one.
    @discardableResult
    public func putObject(_ key: String, data: Data, ifNoneMatch: Bool = false, ifMatch: String? = nil) async throws -> String? {
        var request = Request(method: .PUT, key: key, operation: "PutObject")
        if ifNoneMatch { request.headers.append(("If-None-Match", "*")) }
        if let ifMatch { request.headers.append(("If-Match", "\"\(ifMatch)\"")) }
        let response = try await send(request, body: { data })
        return response.headers.first(name: "ETag").map(S3XML.unquoteETag)
    }

    /// Reads a small object whole, with its ETag (for a later conditional write or delete).
    public func getObjectAndETag(_ key: String) async throws -> (data: Data, etag: String?) {
        let response = try await send(Request(method: .GET, key: key, operation: "GetObject", responseLimit: 16 << 20))
        return (response.body, response.headers.first(name: "ETag").map(S3XML.unquoteETag))
    }

    /// Reads an object, or the bytes in `range` of it.
    ///
    /// The whole answer is held in memory; use ``downloadFile(_:to:)`` for large objects.
    public func getObject(_ key: String, range: Range<Int64>? = nil) async throws -> Data {
        var request = Request(method: .GET, key: key, operation: "GetObject", responseLimit: Int.max)
        if let range {
            if range.isEmpty { return Data() }
            request.headers.append(("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
            request.responseLimit = Int(clamping: range.count)
        }
        let response = try await send(request)
        if let range, response.status == 206, response.body.count != range.count {
            // A range past the end is cut short by the store; anything else is a broken answer.
            let total = Self.totalLength(response.headers)
            let expected = total.map { min(range.upperBound, $0) - range.lowerBound } ?? Int64(range.count)
            if Int64(response.body.count) != expected {
                throw S3Error(code: .other, status: 206, key: key, operation: "GetObject",
                              message: "asked for \(range.count) bytes at offset \(range.lowerBound), got \(response.body.count)")
            }
        }
        if let range, response.status == 200 {
            // The store ignored Range and sent everything: cut the range out.
            let lower = Int(clamping: min(range.lowerBound, Int64(response.body.count)))
            let upper = Int(clamping: min(range.upperBound, Int64(response.body.count)))
            return response.body.subdata(in: lower..<upper)
        }
        return response.body
    }

    /// Size and ETag of an object, or nil if there is none (404).
    ///
    /// A missing bucket also answers 404 to HEAD (without a body to tell them apart); use
    /// ``headBucket()`` first where that matters.
    public func headObject(_ key: String) async throws -> S3ObjectInfo? {
        let response = try await send(Request(method: .HEAD, key: key, operation: "HeadObject"), accept: [404])
        if response.status == 404 { return nil }
        let size = response.headers.first(name: "Content-Length").flatMap { Int64($0) } ?? 0
        let etag = response.headers.first(name: "ETag").map(S3XML.unquoteETag)
        let modified = response.headers.first(name: "Last-Modified").flatMap(Self.parseHTTPDate)
        return S3ObjectInfo(key: key, size: size, etag: etag, lastModified: modified)
    }

    /// Checks that the bucket exists and the key may access it: throws `.noSuchBucket`,
    /// `.accessDenied` (a HEAD cannot tell a wrong secret from a missing permission), `.unreachable`.
    public func headBucket() async throws {
        let response = try await send(Request(method: .HEAD, key: nil, operation: "HeadBucket"), accept: [404])
        if response.status == 404 {
            throw S3Error(code: .noSuchBucket, status: 404, s3Code: "NoSuchBucket", operation: "HeadBucket",
                          message: "the bucket does not exist")
        }
    }

    /// Creates the bucket (tests, demo, first use of MinIO). Succeeds if this key already owns it.
    public func createBucket() async throws {
        let body = settings.region == "us-east-1" ? Data() : Data("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(S3XML.escape(settings.region))</LocationConstraint></CreateBucketConfiguration>".utf8)
        do {
            _ = try await send(Request(method: .PUT, key: nil, operation: "CreateBucket"), body: { body })
        } catch let error as S3Error where error.s3Code == "BucketAlreadyOwnedByYou" {
            return
        }
    }

    /// Every object whose key starts with `prefix`, in key order (ListObjectsV2, following
    /// continuation tokens 1,000 keys at a time).
    public func listObjects(prefix: String = "") async throws -> [S3ObjectInfo] {
        var objects: [S3ObjectInfo] = []
        try await listPages(prefix: prefix, delimiter: nil) { page in objects += page.objects }
        return objects
    }

    /// Up to `limit` (at most 1,000) keys under `prefix`, in key order: one ListObjectsV2 page,
    /// to tell an empty prefix from one that holds something without listing all of it.
    public func firstKeys(prefix: String, limit: Int = 1) async throws -> [String] {
        var request = Request(method: .GET, key: nil, operation: "ListObjectsV2")
        request.query = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", String(max(1, min(limit, 1000))))]
        if !prefix.isEmpty { request.query.append(("prefix", prefix)) }
        let response = try await send(request)
        return try S3XML.listObjectsV2(response.body).objects.map(\.key)
    }

    /// The distinct "directories" under `prefix`: common prefixes up to the next `delimiter`
    /// (e.g. the backup ids under "repo/backups/").
    public func listCommonPrefixes(prefix: String = "", delimiter: String = "/") async throws -> [String] {
        var prefixes: [String] = []
        try await listPages(prefix: prefix, delimiter: delimiter) { page in prefixes += page.commonPrefixes }
        return prefixes
    }

    func listPages(prefix: String, delimiter: String?, _ onPage: (S3XML.ListPage) throws -> Void) async throws {
        var token: String?
        var pages = 0
        repeat {
            var request = Request(method: .GET, key: nil, operation: "ListObjectsV2")
            request.query = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", "1000")]
            if !prefix.isEmpty { request.query.append(("prefix", prefix)) }
            if let delimiter { request.query.append(("delimiter", delimiter)) }
            if let token { request.query.append(("continuation-token", token)) }
            let response = try await send(request)
            let page = try S3XML.listObjectsV2(response.body)
            try onPage(page)
            pages += 1
            if page.isTruncated {
                guard let next = page.nextContinuationToken, next != token else {
                    throw S3Error(code: .other, operation: "ListObjectsV2",
                                  message: "the listing is truncated but gave no new continuation token (page \(pages))")
                }
                token = next
            } else {
                token = nil
            }
        } while token != nil
    }

    /// Deletes keys, 1,000 per DeleteObjects request. Missing keys count as deleted (S3's rule).
    ///
    /// Throws ``S3Error`` when any key could not be deleted, after trying every batch; its
    /// `deleteFailures` name each key with the store's code.
    public func deleteObjects(_ keys: [String]) async throws {
        var failures: [S3DeleteFailure] = []
        var start = 0
        while start < keys.count {
            let batch = Array(keys[start..<min(start + 1000, keys.count)])
            start += batch.count
            let body = S3XML.deleteRequest(batch)
            var request = Request(method: .POST, key: nil, operation: "DeleteObjects")
            request.query = [("delete", "")]
            request.headers = [("Content-MD5", Data(Insecure.MD5.hash(data: body)).base64EncodedString()),
                               ("Content-Type", "application/xml")]
            let response = try await send(request, body: { body })
            failures += try S3XML.deleteResult(response.body).failed
        }
        if !failures.isEmpty {
            let shown = failures.prefix(5).map { "\"\($0.key)\" (\($0.code))" }.joined(separator: ", ")
            let code = failures.first.map { S3Error.classify(status: 400, s3Code: $0.code) } ?? .other
            var error = S3Error(code: code, operation: "DeleteObjects",
                                message: "\(failures.count) of \(keys.count) keys could not be deleted: \(shown)\(failures.count > 5 ? ", ..." : "")")
            error.deleteFailures = failures
            throw error
        }
    }

    /// Deletes one key (DeleteObject); a missing key is not an error.
    ///
    /// - Parameter ifMatch: an ETag: delete only that version (AWS S3 honours `If-Match` on
    ///   DeleteObject since September 2025, as do moto and Ceph RGW); a changed object answers
    ///   412 and this throws `.preconditionFailed`.
    public func deleteObject(_ key: String, ifMatch: String? = nil) async throws {
        var request = Request(method: .DELETE, key: key, operation: "DeleteObject")
        if let ifMatch { request.headers.append(("If-Match", "\"\(ifMatch)\"")) }
        _ = try await send(request, accept: [404])
    }

    // MARK: Helpers

    /// The total length from `Content-Range: bytes a-b/total`.
    static func totalLength(_ headers: HTTPHeaders) -> Int64? {
        guard let value = headers.first(name: "Content-Range"), let slash = value.lastIndex(of: "/") else { return nil }
        return Int64(value[value.index(after: slash)...])
    }

    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}

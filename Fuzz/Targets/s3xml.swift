// libFuzzer target: an S3 endpoint's response body, through every parser the S3 client uses
// (ListObjectsV2, error bodies, DeleteObjects, CreateMultipartUpload, CompleteMultipartUpload,
// ListMultipartUploads), and the URL decoding of listed keys.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzS3XML(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let body = FuzzInput.data(bytes, count)
    _ = try? S3XML.listObjectsV2(body)
    if let error = S3XML.error(body) {
        _ = S3Error.classify(status: 403, s3Code: error.code)
    }
    _ = try? S3XML.deleteResult(body)
    _ = try? S3XML.uploadId(body)
    _ = try? S3XML.completeResult(body)
    _ = try? S3XML.listMultipartUploads(body)
    _ = S3XML.urlDecode(String(decoding: body, as: UTF8.self))
    return 0
}

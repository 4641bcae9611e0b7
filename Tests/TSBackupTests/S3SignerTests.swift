import Foundation
import Testing
@testable import TSBackup

/// SigV4 against published vectors: the AWS SigV4 test suite (key AKIDEXAMPLE, 20150830T123600Z,
/// service "service") and the S3 documentation's header-signing examples (examplebucket,
/// 20130524T000000Z). Canonical request and string to sign are checked where the vectors give
/// them, so a failure says which step is wrong.
@Suite("SigV4 signing")
struct S3SignerTests {
    static let suiteDate = Date(timeIntervalSince1970: 1_440_938_160) // 2015-08-30T12:36:00Z
    static let s3Date = Date(timeIntervalSince1970: 1_369_353_600)    // 2013-05-24T00:00:00Z
    let suite = S3Signer(credentials: S3Credentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                         region: "us-east-1", service: "service")
    let s3 = S3Signer(credentials: S3Credentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                      region: "us-east-1")
    let suiteScope = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
    let suiteCredential = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
    let empty = S3Signer.emptyPayloadHash

    @Test func dates() {
        #expect(S3Signer.amzDate(Self.suiteDate) == "20150830T123600Z")
        #expect(S3Signer.amzDate(Self.s3Date) == "20130524T000000Z")
        #expect(S3Signer.payloadHash(Data()) == empty)
    }

    @Test("get-vanilla") func getVanilla() {
        let signed = suite.sign(method: "GET", host: "example.amazonaws.com", path: "/", payloadHash: empty, date: Self.suiteDate)
        #expect(signed.canonicalRequest == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\(empty)")
        #expect(signed.stringToSign == suiteScope + "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(signed.authorization == suiteCredential + ", SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(signed.header("x-amz-date") == "20150830T123600Z")
    }

    @Test("get-vanilla-query-order-key-case") func queryOrder() {
        let signed = suite.sign(method: "GET", host: "example.amazonaws.com", path: "/",
                                query: [("Param2", "value2"), ("Param1", "value1")], payloadHash: empty, date: Self.suiteDate)
        #expect(signed.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "Param1=value1&Param2=value2")
        #expect(signed.stringToSign == suiteScope + "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0")
        #expect(signed.signature == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    @Test("post-x-www-form-urlencoded") func formPost() {
        let body = Data("Param1=value1".utf8)
        let hash = S3Signer.payloadHash(body)
        #expect(hash == "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
        let signed = suite.sign(method: "POST", host: "example.amazonaws.com", path: "/",
                                headers: [("Content-Type", "application/x-www-form-urlencoded")], payloadHash: hash, date: Self.suiteDate)
        #expect(signed.canonicalRequest == "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\(hash)")
        #expect(signed.stringToSign == suiteScope + "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281")
        #expect(signed.signature == "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
    }

    @Test("post-sts-header-after: the session token is a signed header") func sessionToken() {
        var credentials = suite.credentials
        credentials.sessionToken = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
        let signer = S3Signer(credentials: credentials, region: "us-east-1", service: "service")
        let signed = signer.sign(method: "POST", host: "example.amazonaws.com", path: "/", payloadHash: empty, date: Self.suiteDate)
        #expect(signed.header("x-amz-security-token") == credentials.sessionToken)
        #expect(signed.stringToSign == suiteScope + "c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6")
        #expect(signed.authorization == suiteCredential + ", SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
    }

    @Test("get-utf8: a non-ASCII path is percent-encoded once") func utf8Path() {
        let signed = suite.sign(method: "GET", host: "example.amazonaws.com", path: "/ሴ", payloadHash: empty, date: Self.suiteDate)
        #expect(signed.canonicalRequest.split(separator: "\n")[1] == "/%E1%88%B4")
    }

    // MARK: S3 documentation examples

    @Test("S3: GET object with a range") func s3GetRange() {
        let signed = s3.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt",
                             headers: [("Range", "bytes=0-9"), ("x-amz-content-sha256", empty)], payloadHash: empty, date: Self.s3Date)
        #expect(signed.canonicalRequest == "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:\(empty)\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\(empty)")
        #expect(signed.stringToSign == "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")
        #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test("S3: PUT object (a $ in the key, the real payload hash)") func s3Put() {
        let hash = S3Signer.payloadHash(Data("Welcome to Amazon S3.".utf8))
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let signed = s3.sign(method: "PUT", host: "examplebucket.s3.amazonaws.com", path: "/test$file.text",
                             headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                                       ("x-amz-content-sha256", hash)],
                             payloadHash: hash, date: Self.s3Date)
        #expect(signed.canonicalRequest.hasPrefix("PUT\n/test%24file.text\n\n"))
        #expect(signed.stringToSign.hasSuffix("9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"))
        #expect(signed.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
        #expect(signed.authorization.contains("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"))
    }

    @Test("S3: GET bucket lifecycle (a query name without value)") func s3Lifecycle() {
        let signed = s3.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/", query: [("lifecycle", "")],
                             headers: [("x-amz-content-sha256", empty)], payloadHash: empty, date: Self.s3Date)
        #expect(signed.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "lifecycle=")
        #expect(signed.stringToSign.hasSuffix("9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"))
        #expect(signed.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test("S3: list objects (query sorted)") func s3List() {
        let signed = s3.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/", query: [("prefix", "J"), ("max-keys", "2")],
                             headers: [("x-amz-content-sha256", empty)], payloadHash: empty, date: Self.s3Date)
        #expect(signed.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "max-keys=2&prefix=J")
        #expect(signed.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func uriEncoding() {
        #expect(S3Signer.uriEncode("a b+c/d~e_f-g.h", encodeSlash: false) == "a%20b%2Bc/d~e_f-g.h")
        #expect(S3Signer.uriEncode("a/b", encodeSlash: true) == "a%2Fb")
        #expect(S3Signer.uriEncode("ключ=&?#*'()!", encodeSlash: true) == "%D0%BA%D0%BB%D1%8E%D1%87%3D%26%3F%23%2A%27%28%29%21")
        #expect(S3Signer.canonicalQuery([("b", "2"), ("a", "x y"), ("a", "+"), ("c", "")]) == "a=%2B&a=x%20y&b=2&c=")
    }

    @Test("a different payload or header changes the signature") func bindsPayloadAndHeaders() {
        let base = s3.sign(method: "PUT", host: "h", path: "/k", headers: [("x-amz-content-sha256", String(repeating: "a", count: 64))],
                           payloadHash: String(repeating: "a", count: 64), date: Self.s3Date)
        let other = s3.sign(method: "PUT", host: "h", path: "/k", headers: [("x-amz-content-sha256", String(repeating: "b", count: 64))],
                            payloadHash: String(repeating: "b", count: 64), date: Self.s3Date)
        let conditional = s3.sign(method: "PUT", host: "h", path: "/k", headers: [("x-amz-content-sha256", String(repeating: "a", count: 64)), ("If-None-Match", "*")],
                                  payloadHash: String(repeating: "a", count: 64), date: Self.s3Date)
        #expect(base.signature != other.signature)
        #expect(base.signature != conditional.signature)
        #expect(conditional.authorization.contains("SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date,"))
        #expect(!base.authorization.contains("wJalrXUtnFEMI"))
    }
}

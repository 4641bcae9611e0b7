import Foundation
import Testing
@testable import TSBackup

@Suite("S3 settings, credentials files and locations")
struct S3SettingsTests {
    /// A home directory with `.aws/credentials` and `.aws/config`, deleted afterwards.
    func withHome<T>(credentials: String? = nil, config: String? = nil, _ body: (String) throws -> T) throws -> T {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-s3-home-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: home + "/.aws", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        if let credentials { try credentials.write(toFile: home + "/.aws/credentials", atomically: true, encoding: .utf8) }
        if let config { try config.write(toFile: home + "/.aws/config", atomically: true, encoding: .utf8) }
        return try body(home)
    }

    @Test func environmentKeysAndDefaults() throws {
        let s = try S3Settings.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "topsecret", "AWS_SESSION_TOKEN": "tok"],
                                               homeDirectory: "/nonexistent")
        #expect(s.credentials == S3Credentials(accessKeyId: "AKID", secretAccessKey: "topsecret", sessionToken: "tok"))
        #expect(s.region == "us-east-1")
        #expect(s.endpoint == nil)
        #expect(s.addressingStyle == .virtualHosted)
        #expect(!s.description.contains("topsecret") && !s.description.contains("tok)"))
        #expect(!"\(s.credentials)".contains("topsecret"))
        #expect(!String(reflecting: s.credentials).contains("topsecret"))
    }

    @Test func regionAndEndpointPrecedence() throws {
        let base = ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"]
        var env = base.merging(["AWS_DEFAULT_REGION": "eu-west-1"]) { $1 }
        #expect(try S3Settings.fromEnvironment(env, homeDirectory: "/nonexistent").region == "eu-west-1")
        env["AWS_REGION"] = "eu-central-1"
        #expect(try S3Settings.fromEnvironment(env, homeDirectory: "/nonexistent").region == "eu-central-1")
        env["AWS_ENDPOINT_URL"] = "http://generic:9000"
        var s = try S3Settings.fromEnvironment(env, homeDirectory: "/nonexistent")
        #expect(s.endpoint?.absoluteString == "http://generic:9000")
        #expect(s.addressingStyle == .path)
        env["AWS_ENDPOINT_URL_S3"] = "https://minio.local:9443"
        s = try S3Settings.fromEnvironment(env, homeDirectory: "/nonexistent")
        #expect(s.endpoint?.absoluteString == "https://minio.local:9443")
        #expect(s.endpointDescription == "https://minio.local:9443")
    }

    @Test func badEndpointIsUsageError() {
        for text in ["minio:9000", "ftp://x", "http://user:pw@host:9000"] {
            #expect(throws: TSBackupError.self) {
                try S3Settings.fromEnvironment(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_ENDPOINT_URL_S3": text], homeDirectory: "/nonexistent")
            }
        }
        do {
            _ = try S3Settings.fromEnvironment(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_ENDPOINT_URL_S3": "http://user:pw@host:9000"], homeDirectory: "/nonexistent")
        } catch let error as TSBackupError {
            #expect(error.kind == .usage)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func missingCredentialsOrHalfOfThem() throws {
        let error = #expect(throws: TSBackupError.self) { try S3Settings.fromEnvironment([:], homeDirectory: "/nonexistent") }
        #expect(error?.kind == .usage)
        #expect(error?.message.contains("AWS_ACCESS_KEY_ID") == true)
        let half = #expect(throws: TSBackupError.self) { try S3Settings.fromEnvironment(["AWS_ACCESS_KEY_ID": "A"], homeDirectory: "/nonexistent") }
        #expect(half?.message.contains("AWS_SECRET_ACCESS_KEY") == true)
    }

    @Test func defaultProfileFromCredentialsFile() throws {
        try withHome(credentials: """
            # comment
            [default]
            aws_access_key_id = AKIDDEFAULT
            aws_secret_access_key = secret/with+chars=
            ; another comment

            [work]
            aws_access_key_id=AKIDWORK
            aws_secret_access_key=worksecret   # trailing comment
            aws_session_token = worktoken
            """, config: """
            [default]
            region = ap-south-1
            [profile work]
            region = eu-north-1
            endpoint_url = http://127.0.0.1:9000
            s3 =
              addressing_style = path
            """) { home in
            let d = try S3Settings.fromEnvironment([:], homeDirectory: home)
            #expect(d.credentials == S3Credentials(accessKeyId: "AKIDDEFAULT", secretAccessKey: "secret/with+chars="))
            #expect(d.region == "ap-south-1")
            #expect(d.credentialSource.contains("default"))
            let w = try S3Settings.fromEnvironment(["AWS_PROFILE": "work"], homeDirectory: home)
            #expect(w.credentials == S3Credentials(accessKeyId: "AKIDWORK", secretAccessKey: "worksecret", sessionToken: "worktoken"))
            #expect(w.region == "eu-north-1")
            #expect(w.endpoint?.absoluteString == "http://127.0.0.1:9000")
            #expect(w.addressingStyle == .path)
            // The environment wins over the profile.
            let e = try S3Settings.fromEnvironment(["AWS_PROFILE": "work", "AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "ENVSECRET", "AWS_REGION": "us-west-2"], homeDirectory: home)
            #expect(e.credentials.accessKeyId == "ENVKEY")
            #expect(e.credentials.sessionToken == nil)
            #expect(e.region == "us-west-2")
        }
    }

    @Test func keysInConfigFileAndOverriddenPaths() throws {
        try withHome(config: """
            [profile ci]
            aws_access_key_id = AKIDCI
            aws_secret_access_key = cisecret
            """) { home in
            let s = try S3Settings.fromEnvironment(["AWS_PROFILE": "ci"], homeDirectory: home)
            #expect(s.credentials.accessKeyId == "AKIDCI")
            // Paths from the environment replace the defaults.
            let missing = #expect(throws: TSBackupError.self) {
                try S3Settings.fromEnvironment(["AWS_PROFILE": "ci", "AWS_CONFIG_FILE": home + "/nowhere"], homeDirectory: home)
            }
            #expect(missing?.message.contains("ci") == true)
            let moved = home + "/elsewhere"
            try "[ci]\naws_access_key_id = MOVED\naws_secret_access_key = x\n".write(toFile: moved, atomically: true, encoding: .utf8)
            let m = try S3Settings.fromEnvironment(["AWS_PROFILE": "ci", "AWS_SHARED_CREDENTIALS_FILE": moved], homeDirectory: home)
            #expect(m.credentials.accessKeyId == "MOVED")
        }
    }

    @Test func profileWithoutSecretNamesTheFile() throws {
        try withHome(credentials: "[default]\naws_access_key_id = ONLYID\n") { home in
            let error = #expect(throws: TSBackupError.self) { try S3Settings.fromEnvironment([:], homeDirectory: home) }
            #expect(error?.message.contains("aws_secret_access_key") == true)
        }
    }

    @Test func locations() throws {
        let a = try S3Location(parsing: "s3://my-bucket")
        #expect(a.bucket == "my-bucket" && a.prefix == "")
        #expect(a.key("x/y") == "x/y")
        let b = try S3Location(parsing: "s3://my.bucket-1/backups/prod/")
        #expect(b.bucket == "my.bucket-1" && b.prefix == "backups/prod")
        #expect(b.key("x") == "backups/prod/x")
        #expect(b.listPrefix == "backups/prod/")
        #expect(b.description == "s3://my.bucket-1/backups/prod")
        for bad in ["s3://", "s3://Upper", "s3://ab", "s3://-bad", "s3://b_underscore", "http://bucket", "s3://bucket/a//b", "s3://bucket/../x"] {
            let error = #expect(throws: TSBackupError.self, "\(bad)") { try S3Location(parsing: bad) }
            #expect(error?.kind == .usage)
        }
    }

    @Test func addressing() {
        let creds = S3Credentials(accessKeyId: "A", secretAccessKey: "S")
        let aws = S3Settings(credentials: creds, region: "eu-west-1")
        let custom = S3Settings(credentials: creds, endpoint: URL(string: "http://127.0.0.1:9000"))
        let a = S3Client.target(settings: aws, bucket: "bkt", key: "a b/c")
        #expect(a.base == "https://bkt.s3.eu-west-1.amazonaws.com" && a.host == "bkt.s3.eu-west-1.amazonaws.com" && a.path == "/a b/c")
        let c = S3Client.target(settings: custom, bucket: "bkt", key: "a b/c")
        #expect(c.base == "http://127.0.0.1:9000" && c.host == "127.0.0.1:9000" && c.path == "/bkt/a b/c")
        #expect(S3Client.target(settings: custom, bucket: "bkt", key: nil).path == "/bkt")
    }
}

@Suite("S3 XML responses, errors and part sizes")
struct S3XMLTests {
    @Test func listObjectsV2Page() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <Name>bucket</Name><Prefix>repo%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
              <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
              <Contents><Key>repo/a+b%2Bc</Key><LastModified>2026-11-27T06:00:00.000Z</LastModified>
                <ETag>&quot;0123abcd&quot;</ETag><Size>42</Size><StorageClass>STANDARD</StorageClass></Contents>
              <Contents><Key>repo/%E2%82%AC%20%26%3C</Key><Size>0</Size><ETag>"e"</ETag></Contents>
              <Contents><Key>repo/big</Key><Size>5497558138880</Size></Contents>
              <CommonPrefixes><Prefix>repo/dir%2F</Prefix></CommonPrefixes>
              <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
            </ListBucketResult>
            """
        let page = try S3XML.listObjectsV2(Data(xml.utf8))
        #expect(page.objects.map(\.key) == ["repo/a b+c", "repo/€ &<", "repo/big"])
        #expect(page.objects[0].size == 42 && page.objects[0].etag == "0123abcd")
        #expect(page.objects[0].lastModified == Date(timeIntervalSince1970: 1_795_759_200))
        #expect(page.objects[2].size == 5_497_558_138_880)
        #expect(page.commonPrefixes == ["repo/dir/"])
        #expect(page.isTruncated)
        #expect(page.nextContinuationToken == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
    }

    @Test func listWithoutEncodingKeepsKeys() throws {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%20</Key><Size>1</Size></Contents></ListBucketResult>"
        let page = try S3XML.listObjectsV2(Data(xml.utf8))
        #expect(page.objects.map(\.key) == ["a+b%20"])
        #expect(!page.isTruncated && page.nextContinuationToken == nil)
    }

    @Test func malformedListing() {
        #expect(throws: S3Error.self) { try S3XML.listObjectsV2(Data("<html>nope</html>".utf8)) }
        #expect(throws: S3Error.self) { try S3XML.listObjectsV2(Data("not xml at all".utf8)) }
    }

    /// Found by fuzzing (Fuzz/corpus/s3xml/regression-*): a body whose element name, attribute
    /// name or comment is not UTF-8, or that holds a processing instruction without data, made
    /// Foundation's XMLParser crash inside its callbacks; it must be an ordinary malformed
    /// response instead. Document type declarations (entities), comments and CDATA, which S3
    /// never sends, are refused the same way.
    @Test func bodiesFoundationCannotParseAreMalformedNotACrash() throws {
        let prefix = Data(#"<?xml version="1.0" encoding="UTF-8"?>"#.utf8)
        let bodies: [[UInt8]] = [
            Array("<ListBucketResult".utf8) + [0xD4, 0xD4] + Array("><IsTruncated>false</IsTruncated></ListBucketResult".utf8) + [0xD4, 0xD4, 0x3E],
            Array("<Error><!--".utf8) + [0xFF] + Array("--><Code>SlowDown</Code></Error>".utf8),
            Array("<Error a".utf8) + [0xFE] + Array(#"="1"><Code>SlowDown</Code></Error>"#.utf8),
            Array("<Error><?pi?><Code>SlowDown</Code></Error>".utf8),
            Array(#"<!DOCTYPE Error [<!ENTITY e "&#60;?pi?>">]><Error><Code>&e;</Code></Error>"#.utf8),
            Array("<Error><!-- é --><Code>SlowDown</Code></Error>".utf8),
            Array("<Error><Code><![CDATA[SlowDown]]></Code></Error>".utf8),
        ]
        for body in bodies {
            let data = prefix + Data(body)
            #expect(throws: S3Error.self) { try S3XML.listObjectsV2(data) }
            #expect(S3XML.error(data) == nil)
            #expect(throws: S3Error.self) { try S3XML.uploadId(data) }
            #expect(throws: S3Error.self) { try S3XML.completeResult(data) }
        }
        // What S3 does send still parses: a declaration (or none), elements, escaped UTF-8 text.
        let fine = prefix + Data("\n<Error><Code>SlowDown</Code><Message>a &lt;?b?&gt; é</Message></Error>".utf8)
        #expect(S3XML.error(fine) == S3XML.ErrorBody(code: "SlowDown", message: "a <?b?> é"))
        #expect(S3XML.error(Data("<Error><Code>SlowDown</Code></Error>".utf8))?.code == "SlowDown")
    }

    @Test func errorBody() {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message>
            <AWSAccessKeyId>AKID</AWSAccessKeyId><RequestId>1</RequestId></Error>
            """
        #expect(S3XML.error(Data(xml.utf8)) == S3XML.ErrorBody(code: "SignatureDoesNotMatch", message: "The request signature we calculated does not match"))
        #expect(S3XML.error(Data()) == nil)
        #expect(S3XML.error(Data("<html/>".utf8))?.code == nil)
    }

    @Test func deleteResult() throws {
        let xml = """
            <DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <Deleted><Key>a</Key></Deleted>
              <Error><Key>b&amp;c</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
            </DeleteResult>
            """
        let result = try S3XML.deleteResult(Data(xml.utf8))
        #expect(result.deleted == ["a"])
        #expect(result.failed == [S3DeleteFailure(key: "b&c", code: "AccessDenied", message: "Access Denied")])
    }

    @Test func requestBodiesEscapeKeys() throws {
        let body = String(decoding: S3XML.deleteRequest(["a&b", "<c>", "d\"e'"]), as: UTF8.self)
        #expect(body.contains("<Key>a&amp;b</Key><Key>") == false)
        #expect(body.contains("<Object><Key>a&amp;b</Key></Object><Object><Key>&lt;c&gt;</Key></Object><Object><Key>d&quot;e&apos;</Key></Object>"))
        #expect(body.contains("<Quiet>true</Quiet>"))
        let complete = String(decoding: S3XML.completeRequest([(1, "abc"), (2, "def")]), as: UTF8.self)
        #expect(complete.contains("<Part><PartNumber>1</PartNumber><ETag>\"abc\"</ETag></Part><Part><PartNumber>2</PartNumber>"))
    }

    @Test func completeAndInitiate() throws {
        #expect(try S3XML.uploadId(Data("<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>XYZ</UploadId></InitiateMultipartUploadResult>".utf8)) == "XYZ")
        let late = try S3XML.completeResult(Data("<Error><Code>InternalError</Code><Message>later</Message></Error>".utf8))
        #expect(late.error?.code == "InternalError")
        let ok = try S3XML.completeResult(Data("<CompleteMultipartUploadResult><ETag>\"x-3\"</ETag></CompleteMultipartUploadResult>".utf8))
        #expect(ok.etag == "x-3" && ok.error == nil)
    }

    @Test func errorClassificationAndExitKinds() {
        #expect(S3Error.classify(status: 403, s3Code: "InvalidAccessKeyId") == .invalidCredentials)
        #expect(S3Error.classify(status: 403, s3Code: "SignatureDoesNotMatch") == .signatureMismatch)
        #expect(S3Error.classify(status: 403, s3Code: nil) == .accessDenied)
        #expect(S3Error.classify(status: 404, s3Code: "NoSuchBucket") == .noSuchBucket)
        #expect(S3Error.classify(status: 404, s3Code: "NoSuchKey") == .noSuchKey)
        #expect(S3Error.classify(status: 412, s3Code: nil) == .preconditionFailed)
        #expect(S3Error.classify(status: 503, s3Code: "SlowDown") == .slowDown)
        #expect(S3Error.classify(status: 502, s3Code: nil) == .server)
        #expect(S3Error.classify(status: 400, s3Code: "InvalidArgument") == .other)
        let kinds: [(S3Error.Code, TSBackupError.Kind)] = [
            (.unreachable, .connection), (.invalidCredentials, .permission), (.signatureMismatch, .permission),
            (.accessDenied, .permission), (.noSuchBucket, .notFound), (.noSuchKey, .failed), (.preconditionFailed, .failed),
            (.slowDown, .failed), (.server, .failed), (.other, .failed),
        ]
        for (code, kind) in kinds {
            let mapped = S3Error(code: code, status: 403, key: "k", operation: "GetObject", message: "m").tsBackupError(endpoint: "http://127.0.0.1:1", bucket: "b")
            #expect(mapped.kind == kind, "\(code)")
            #expect(!mapped.message.contains("\n"))
        }
        #expect(TSBackupError.Kind.permission.exitCode == 3 && TSBackupError.Kind.connection.exitCode == 2 && TSBackupError.Kind.notFound.exitCode == 4)
    }

    @Test func retryPolicy() {
        let policy = S3RetryPolicy(maxAttempts: 5, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        #expect(policy.delayCap(afterAttempt: 1) == .milliseconds(100))
        #expect(policy.delayCap(afterAttempt: 3) == .milliseconds(400))
        #expect(policy.delayCap(afterAttempt: 10) == .seconds(1))
        for attempt in 1...8 {
            let d = policy.delay(afterAttempt: attempt)
            #expect(d >= .zero && d <= policy.delayCap(afterAttempt: attempt))
        }
        #expect(S3RetryPolicy.isRetryable(status: 503, s3Code: "SlowDown"))
        #expect(S3RetryPolicy.isRetryable(status: 500, s3Code: nil))
        #expect(S3RetryPolicy.isRetryable(status: 429, s3Code: nil))
        #expect(S3RetryPolicy.isRetryable(status: 400, s3Code: "RequestTimeout"))
        #expect(!S3RetryPolicy.isRetryable(status: 403, s3Code: "SignatureDoesNotMatch"))
        #expect(!S3RetryPolicy.isRetryable(status: 404, s3Code: "NoSuchKey"))
        #expect(S3RetryPolicy(maxAttempts: 0).maxAttempts == 1)
    }

    @Test func partSizes() {
        let mib: Int64 = 1 << 20
        #expect(S3Client.partSize(forObjectSize: 0) == 8 * mib)
        #expect(S3Client.partSize(forObjectSize: 100 * mib) == 8 * mib)
        #expect(S3Client.partSize(forObjectSize: 80_000 * mib) == 8 * mib) // exactly 10,000 parts
        #expect(S3Client.partSize(forObjectSize: 80_000 * mib + 1) == 9 * mib)
        let fiveTiB = S3Client.MultipartLimits.maxObjectSize
        let big = S3Client.partSize(forObjectSize: fiveTiB)
        #expect(big % mib == 0)
        #expect((fiveTiB + big - 1) / big <= 10_000)
        #expect(big == 525 * mib)
        #expect(S3Client.partSize(forObjectSize: 100 * mib, minimum: 16 * mib) == 16 * mib)
        for size: Int64 in [1, 5 * mib, 1 << 30, 1 << 40, 3 * (1 << 40) + 12345] {
            let part = S3Client.partSize(forObjectSize: size)
            #expect((size + part - 1) / part <= 10_000 && part >= 8 * mib && part <= S3Client.MultipartLimits.maxPartSize)
        }
    }

    @Test func concurrencyFitsTheMemoryBudget() {
        var options = S3Client.Options()
        options.concurrency = 4
        options.memoryBudget = 128 << 20
        #expect(S3Client.effectiveConcurrency(options: options, partSize: 8 << 20) == 4)
        #expect(S3Client.effectiveConcurrency(options: options, partSize: 64 << 20) == 2)
        #expect(S3Client.effectiveConcurrency(options: options, partSize: 525 << 20) == 1)
    }

    @Test("the client-wide memory budget makes a transfer wait until bytes are released")
    func memoryBudget() async throws {
        let budget = S3MemoryBudget(limit: 10)
        await budget.acquire(6)
        await budget.acquire(4)
        let waiter = Task { try await budget.withBytes(5) { await budget.bytesInUse } }
        // Wait for the waiter to queue (a state); the bound is a hang guard of ten minutes, not a
        // count of yields, which a loaded machine running hundreds of tests at once could exhaust.
        let deadline = ContinuousClock.now + .seconds(600)
        while await budget.waitingCount == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(await budget.waitingCount == 1, "a 5-byte request must wait while 10 of 10 are held")
        await budget.release(4)
        #expect(await budget.waitingCount == 1, "4 free bytes are not enough for 5")
        await budget.release(6)
        #expect(try await waiter.value == 5)
        #expect(await budget.bytesInUse == 0)
        // A request larger than the whole budget waits for all of it instead of forever.
        #expect(try await budget.withBytes(1_000) { await budget.bytesInUse } == 10)
    }

    @Test func urlDecoding() {
        #expect(S3XML.urlDecode("a+b%2Bc%20d%E2%82%AC") == "a b+c d€")
        #expect(S3XML.urlDecode("bad%zz%4") == "bad%zz%4")
    }
}

import Foundation
import Testing
@testable import TSBackup

@Suite("Repository URLs and entry paths")
struct RepositoryURLTests {
    @Test("local paths and file: URLs name local directories")
    func localForms() throws {
        #expect(try RepositoryURL.parse("/var/backups/ts") == .local(path: "/var/backups/ts"))
        #expect(try RepositoryURL.parse("/var/backups/ts/") == .local(path: "/var/backups/ts"))
        #expect(try RepositoryURL.parse("/var/backups/./a/../ts") == .local(path: "/var/backups/ts"))
        #expect(try RepositoryURL.parse("file:///var/backups/ts") == .local(path: "/var/backups/ts"))
        #expect(try RepositoryURL.parse("file://localhost/var/backups/ts") == .local(path: "/var/backups/ts"))
        #expect(try RepositoryURL.parse("file:///var/my%20backups") == .local(path: "/var/my backups"))
        let relative = try RepositoryURL.parse("repo")
        #expect(relative == .local(path: FileManager.default.currentDirectoryPath + "/repo"))
    }

    @Test("s3:// URLs name a bucket and a prefix")
    func s3Forms() throws {
        #expect(try RepositoryURL.parse("s3://my-bucket") == .s3(bucket: "my-bucket", prefix: ""))
        #expect(try RepositoryURL.parse("s3://my-bucket/") == .s3(bucket: "my-bucket", prefix: ""))
        #expect(try RepositoryURL.parse("s3://my-bucket/prod/db1/") == .s3(bucket: "my-bucket", prefix: "prod/db1"))
        #expect(try RepositoryURL.parse("S3://my.bucket.1//a//b") == .s3(bucket: "my.bucket.1", prefix: "a/b"))
        #expect(RepositoryURL.s3(bucket: "b12", prefix: "x/y").description == "s3://b12/x/y")
    }

    @Test("anything else is a usage error", arguments: [
        "", "   ", "http://example.com/repo", "gs://bucket/x", "azure://c", "file://otherhost/path",
        "s3://", "s3://ab", "s3://Upper", "s3://-bucket", "s3://bucket-", "s3://a..b",
        "s3://bucket/../x", "s3://bucket/a/./b", "s3://bucket/x?versionId=1",
        "s3://\(String(repeating: "a", count: 64))",
    ])
    func rejected(_ text: String) {
        #expect {
            try RepositoryURL.parse(text)
        } throws: { error in
            (error as? TSBackupError)?.kind == .usage
        }
    }

    /// `s3://b/x /` gave the prefix "x ", whose description `s3://b/x ` parses (trimmed) to the
    /// prefix "x": another place. Such prefixes, and control characters, are refused.
    @Test("an s3 prefix ending in white space or holding control characters is refused", arguments: [
        "s3://bucket/x /", "s3://bucket/a/b\u{3000}/", "s3://bucket/a\nb", "s3://bucket/a\u{0}b", "s3://bucket/a\u{7f}",
    ])
    func s3PrefixWhiteSpace(_ text: String) throws {
        #expect(throws: TSBackupError.self) { try RepositoryURL.parse(text) }
        do {
            _ = try RepositoryURL.parse(text)
        } catch let error as TSBackupError {
            #expect(error.kind == .usage && error.message.contains("white space or hold control characters"))
        }
        // What stays accepted: white space inside, and every accepted URL's description names it again.
        for good in ["s3://bucket/a b/c", "s3://bucket/ x", "s3://bucket/x/ "] {
            let url = try RepositoryURL.parse(good)
            #expect(try RepositoryURL.parse(url.description) == url, "\(good)")
        }
    }

    @Test("manifest paths stay inside their entry")
    func confinement() throws {
        for good in ["roles.sql", "dump/toc.dat", "dump/4123.dat.gz", "data/00001.copy.zst", "a..b/c.."] {
            #expect(try EntryPath.confined(good, entry: "X") == good)
        }
        for bad in ["", "/etc/passwd", "../other/roles.sql", "dump/../../x", "./roles.sql", "dump//toc.dat",
                    "dump/", "..", "a/..", "a\\..\\b", "a\0b"] {
            #expect(throws: TSBackupError.self, "\(bad)") { try EntryPath.confined(bad, entry: "X") }
        }
        let files = [BackupManifest.FileEntry(path: "ok", bytes: 1, sha256: ""), BackupManifest.FileEntry(path: "../x", bytes: 1, sha256: "")]
        #expect(throws: TSBackupError.self) { try EntryPath.confine(files, entry: "X") }
    }

    @Test("ids are unique within a second")
    func uniqueIDs() {
        #expect(LocalRepository.uniqueID("20261126T231500Z", taken: []) == "20261126T231500Z")
        #expect(LocalRepository.uniqueID("20261126T231500Z", taken: ["20261126T231500Z", "20261126T231500Z-2"]) == "20261126T231500Z-3")
        #expect(LocalRepository.baseID(Date(timeIntervalSince1970: 0)) == "19700101T000000Z")
    }
}

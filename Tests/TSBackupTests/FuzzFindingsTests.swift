import Crypto
import Foundation
import Testing
@testable import TSBackup

/// Inputs libFuzzer runs (scripts/fuzz.sh) that once crashed tsbackup, kept in Fuzz/corpus as
/// `regression-*`: here they go through the library as the command line reads them.
@Suite("inputs found while fuzzing")
struct FuzzFindingsTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardizedFileURL

    static func regressions(_ target: String) throws -> [(name: String, data: Data)] {
        let directory = corpus.appendingPathComponent(target)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("regression-") }.sorted()
        return try names.map { ($0, try Data(contentsOf: directory.appendingPathComponent($0))) }
    }

    /// A manifest is whatever the repository holds: sizes and counts of 2^63-1 made the totals
    /// that `list`, `show` and verify print overflow and trap. They now stop at Int64.max.
    @Test func manifestTotalsDoNotOverflow() throws {
        let inputs = try Self.regressions("manifest")
        #expect(inputs.count >= 3)
        for (name, data) in inputs {
            let entry = RepositoryEntry.decoding(id: "20261127T121821Z", manifest: data, location: "/repo/backups/20261127T121821Z")
            let manifest = try #require(entry.manifest, "\(name) decodes as a database backup's manifest")
            #expect(entry.state == .complete && entry.manifestUnchecked, "\(name) is a legacy manifest")
            let summary = manifest.summary
            #expect(!manifest.completionLine.isEmpty && !manifest.renderReport().isEmpty)
            switch name {
            case "regression-file-bytes-overflow.json":
                #expect(manifest.totalFileBytes == .max && summary.bytes == .max)
            case "regression-row-count-overflow.json":
                #expect(manifest.totalRows == .max && summary.rows == .max)
            case "regression-chunk-count-overflow.json":
                #expect(summary.chunks == .max)
            default:
                Issue.record("a manifest regression input without an expectation: \(name)")
            }
        }
        #expect([Int64.max, 1].saturatingSum { $0 } == .max)
        #expect([Int64.min, -1, 5].saturatingSum { $0 } == .min + 5)
        #expect([3, 4].saturatingSum { $0 } == 7)
    }

    /// An encrypted object's size is what the store reports (an S3 listing's <Size>, a
    /// Content-Length): a negative one made the segment arithmetic overflow and trap before the
    /// object was refused. Every size too small for a header and a tag is now refused as truncated.
    @Test func negativeObjectSizeIsRefused() throws {
        let inputs = try Self.regressions("encryption")
        #expect(inputs.count >= 1)
        for (name, data) in inputs {
            // The harness reads the claimed size from the input's first 8 bytes when it is this short.
            let bits = (Array(data.prefix(8)) + [UInt8](repeating: 0, count: 8)).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let claimed = Int64(bitPattern: bits)
            #expect(claimed < 0, "\(name)")
            #expect(ObjectFormat.Geometry(segmentSize: 1 << 20, ciphertextSize: claimed) == nil, "\(name)")
        }
        for size: Int64 in [.min, -1, 0, 43, 44, 59] {
            #expect(ObjectFormat.Geometry(segmentSize: 4096, ciphertextSize: size) == nil, "\(size)")
        }
        // The smallest object, an empty one: a header and one tag.
        #expect(ObjectFormat.Geometry(segmentSize: 4096, ciphertextSize: 60)?.plaintextSize == 0)
        // Through the decryptor, as a download of an object whose listed size is negative.
        let encryption = RepositoryEncryption(masterKey: SymmetricKey(size: .bits256), segmentSize: 1 << 20)
        let sealed = try encryption.encrypt(Data("abc".utf8), name: "backups/x/manifest.json")
        #expect(throws: EncryptionError.objectRejected(name: "backups/x/manifest.json", problem: .truncated)) {
            _ = try encryption.makeDecryptor(name: "backups/x/manifest.json", header: sealed.prefix(ObjectFormat.headerSize), ciphertextSize: .min)
        }
    }

    /// A stored script of nothing but comments made the statement splitter scan every token so
    /// far for each new one (36 kB took seconds, 120 kB a minute). The flag that replaced the scan
    /// must still give each statement the line it starts on.
    @Test func commentsOnlyScriptSplitsAndKeepsLines() throws {
        let inputs = try Self.regressions("sql")
        #expect(inputs.count >= 1)
        for (name, data) in inputs {
            let script = String(decoding: data, as: UTF8.self)
            let statements = SQLScript.split(script)
            #expect(statements.map(\.text) == ["CREATE ROLE x"], "\(name)")
            #expect(statements.first?.line == 3, "\(name)")
            let roles = try RoleScript(parsing: script)
            #expect(roles.statements(for: "x") == ["CREATE ROLE \(SQLIdentifier.quote("x"))"])
        }
        let mixed = SQLScript.split("/* a */ -- b\n\nSELECT 1; /* c */\n\\restrict k\n  -- d\nSELECT\n2;")
        #expect(mixed.map(\.line) == [3, 4, 6])
        #expect(mixed.map(\.text) == ["SELECT 1", "\\restrict k", "SELECT\n2"])
    }

    /// S3 response bodies that crashed Foundation's XMLParser are malformed responses.
    @Test func s3BodiesAreRefusedNotACrash() throws {
        let inputs = try Self.regressions("s3xml")
        #expect(inputs.count >= 4)
        for (name, data) in inputs {
            #expect(!XMLElementNode.isPlainDocument(data), "\(name)")
            #expect(S3XML.error(data) == nil, "\(name)")
            #expect(throws: S3Error.self, "\(name)") { try S3XML.listObjectsV2(data) }
        }
    }
}

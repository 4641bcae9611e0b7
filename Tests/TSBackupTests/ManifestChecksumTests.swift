import Foundation
import Testing
@testable import TSBackup

/// A manifest-shaped value: nested objects, arrays, numbers and text that a flip can change
/// without breaking the JSON.
private struct Sample: Codable, Equatable {
    struct File: Codable, Equatable {
        var path: String
        var bytes: Int64
        var sha256: String
    }
    var formatVersion = 1
    var kind = "database"
    var id = "20261127T090000Z"
    var label: String? = "nightly é"
    var rowCount: Int64 = 123_456
    var files = [File(path: "dump/toc.dat", bytes: 4096, sha256: String(repeating: "ab", count: 32)),
                 File(path: "roles.sql", bytes: 17, sha256: String(repeating: "01", count: 32))]
    var warnings: [String] = []

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case kind, id, label
        case rowCount = "row_count"
        case files, warnings
    }
}

@Suite("a manifest's own checksum")
struct ManifestChecksumTests {
    @Test("a stamped manifest checks, decodes to the same value, and its canonical text is the plain encoding")
    func roundTrip() throws {
        let stored = try ManifestChecksum.stored(Sample())
        let text = String(decoding: stored, as: UTF8.self)
        #expect(text.hasPrefix("{\n  \"manifest_sha256\" : \""))
        #expect(text.contains("\"manifest_sha256_copy\" : \""))
        guard case .checked(let content) = ManifestChecksum.open(stored) else {
            Issue.record("a freshly stamped manifest must check")
            return
        }
        #expect(content == Data((try JSONOutput.encode(Sample()) + "\n").utf8))
        // Readers that know nothing of the checksum (older tsbackup) still decode the stored text.
        #expect(try JSONOutput.decode(Sample.self, from: stored) == Sample())
    }

    @Test("every single-bit flip at every byte of the manifest is detected")
    func everyFlip() throws {
        let stored = try ManifestChecksum.stored(Sample())
        var missed: [String] = []
        for offset in 0..<stored.count {
            for bit in 0..<8 {
                var damaged = stored
                damaged[offset] ^= UInt8(1 << bit)
                switch ManifestChecksum.open(damaged) {
                case .corrupt: continue
                case .checked, .legacy: missed.append("offset \(offset) bit \(bit)")
                }
            }
        }
        #expect(missed.isEmpty, "undetected flips: \(missed.prefix(10))")
    }

    @Test("every truncation is refused: by the checksum, or (losing both lines) as JSON that does not decode")
    func everyTruncation() throws {
        let stored = try ManifestChecksum.stored(Sample())
        for length in 0..<stored.count {
            let cut = stored.prefix(length)
            switch ManifestChecksum.open(Data(cut)) {
            case .corrupt: continue
            case .checked: Issue.record("truncation to \(length) bytes checked")
            case .legacy(let content):
                #expect((try? JSONOutput.decode(Sample.self, from: content)) == nil, "truncation to \(length) bytes still decodes")
            }
        }
    }

    @Test("a manifest written before the checksum is legacy, not corrupt; one naming the checksum key without its lines is corrupt")
    func legacy() throws {
        let plain = Data((try JSONOutput.encode(Sample()) + "\n").utf8)
        #expect(ManifestChecksum.open(plain) == .legacy(content: plain))
        // One damaged line but the other intact: never taken for a legacy manifest.
        var text = String(decoding: try ManifestChecksum.stored(Sample()), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"manifest_sha256\" :", with: "\"manifest_sha257\" :")
        guard case .corrupt = ManifestChecksum.open(Data(text.utf8)) else {
            Issue.record("a renamed checksum key must be corrupt")
            return
        }
    }

    @Test("an entry whose manifest fails its checksum is never complete and names manifest.json")
    func entryState() throws {
        var stored = try ManifestChecksum.stored(Sample())
        // A digit of the row count: still JSON, still decodes.
        let range = try #require(stored.range(of: Data("123456".utf8)))
        stored[range.lowerBound] = UInt8(ascii: "9")
        let entry = RepositoryEntry.decoding(id: "20261127T090000Z", manifest: stored, location: "/nowhere")
        #expect(entry.state == .incomplete)
        #expect(entry.problem?.contains("backups/20261127T090000Z/manifest.json is corrupt") == true)
        // Garbage that does not decode is corrupt too, not an interrupted run.
        let garbage = RepositoryEntry.decoding(id: "x", manifest: Data("{\"kind\": 1".utf8), location: "/nowhere")
        #expect(garbage.state == .incomplete && garbage.problem != nil)
    }
}

// libFuzzer target: an archived WAL object as wal-fetch, recover and base-backup read it from a
// repository (WALObjectFormat: header, zstd payload, size and SHA-256 checks), the long page
// header wal-push reads from a segment (ClusterIdentity.segmentHeader) and WAL file names
// (WALFileName, WALPosition) as a listing of the archive gives them.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWAL(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = FuzzInput.data(bytes, count)
    let raw = Array(data)
    if let header = try? WALObjectFormat.header(of: data) {
        guard header.compression <= 1, (0...(1 << 30)).contains(header.plainSize), header.sha256.count == 32 else {
            FuzzInput.violated("a WAL object header out of range: \(header)")
        }
        // Round trip: the fields and the reserved bytes are the header's 52 bytes.
        var again = Array("TSBWAL01".utf8) + [header.compression] + raw[9..<12]
        again += (0..<8).map { UInt8(truncatingIfNeeded: UInt64(header.plainSize) >> (56 - 8 * $0)) } + header.sha256
        guard again == Array(raw[0..<52]) else { FuzzInput.violated("a WAL object header does not re-encode to its bytes") }
    }
    if let (header, plain) = try? WALObjectFormat.decode(data) {
        // What decode returns is what the header promised, by an independent check.
        guard Int64(plain.count) == header.plainSize, FileSystem.sha256(of: plain) == FileSystem.hex(header.sha256) else {
            FuzzInput.violated("decode returned content its header does not describe")
        }
        // And what wal-push would store for it decodes to the same bytes.
        if plain.count <= 1 << 16 {
            guard let stored = try? WALObjectFormat.encode(plain, sha256: header.sha256), let (_, back) = try? WALObjectFormat.decode(stored), back == plain else {
                FuzzInput.violated("a decoded WAL file does not survive encode and decode")
            }
        }
    }
    if let page = ClusterIdentity.segmentHeader(data) {
        // Read the little-endian fields again, byte by byte.
        func le(_ at: Int, _ n: Int) -> UInt64 { (0..<n).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(raw[at + $1]) } }
        guard raw.count >= 40, le(2, 2) & 2 != 0, UInt64(page.magic) == le(0, 2), UInt64(page.timeline) == le(4, 4),
              page.pageAddress == le(8, 8), page.systemIdentifier == le(24, 8), UInt64(page.segmentSize) == le(32, 4),
              UInt64(page.blockSize) == le(36, 4) else {
            FuzzInput.violated("the segment's long page header was misread")
        }
    }
    let text = String(decoding: data, as: UTF8.self)
    for line in text.split(whereSeparator: \.isNewline).prefix(64) {
        if let name = WALFileName(String(line)) {
            guard WALFileName(name.name) == name else { FuzzInput.violated("the WAL file name \(name.name) does not parse back") }
            _ = name.description
        }
        if let position = WALPosition(String(line)) {
            guard WALPosition(position.description) == position else { FuzzInput.violated("the WAL position \(position) does not parse back") }
        }
    }
    return 0
}

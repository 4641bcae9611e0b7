// libFuzzer target: `pg_restore --list` output, parsed into an archive's table of contents
// (ArchiveContents) and used as restore and verify use it: the TimescaleDB completeness check,
// the owners, the progress counter's data-file map.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTOC(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let listing = FuzzInput.text(bytes, count)
    let contents = ArchiveContents(listing: listing)
    _ = contents.owners
    let chunks = contents.items.filter { $0.schema == "_timescaledb_internal" }.map { "\($0.schema).\($0.name)" }
    _ = contents.missingTimescaleEntries(chunks: chunks + ["_timescaledb_internal._hyper_1_1_chunk"], timescaleInstalled: true)
    // Directory archives name data files by dump id ("4029.dat.gz"); the listing's ids stand in for them.
    let files = contents.items.map { (path: "dump/\($0.dumpID).dat.gz", bytes: Int64(truncatingIfNeeded: $0.line.utf8.count)) }
    let counter = RestoreProgressCounter(contents: contents, dataBytes: RestoreProgressCounter.dataBytes(files: files))
    for item in contents.items {
        counter.apply(.dataStarted(table: "\(item.schema).\(item.name)"), parallel: false)
        counter.apply(.finished(dumpID: item.dumpID, type: item.type), parallel: true)
        counter.apply(.object, parallel: false)
    }
    counter.complete(objects: contents.items.count)
    let snapshot = counter.snapshot
    if snapshot.objectsDone > snapshot.objectsTotal { FuzzInput.violated("more objects done than listed") }
    return 0
}

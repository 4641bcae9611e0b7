// libFuzzer target: the child processes' standard error that tsbackup reads to decide what
// happened: pg_dump's (StderrCollector: errors, warnings, a vanished chunk, progress) and
// pg_restore's (PgRestoreLog events).
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStderr(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = FuzzInput.text(bytes, count)
    // Lines as the process runner hands them over (split on newlines, one call per line).
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var collector = StderrCollector()
    let tableBytes: [String: Int64] = ["public.conditions": 1 << 20, "_timescaledb_internal._hyper_1_1_chunk": 4096]
    for line in lines { _ = collector.take(line, tableBytes: tableBytes) }
    if collector.tablesDumped < 0 || collector.bytesDumped < 0 { FuzzInput.violated("negative progress") }
    for line in lines {
        for event in PgRestoreLog.events(in: line) {
            if case .problem(let message) = event, message != line { FuzzInput.violated("a problem line was altered") }
        }
    }
    return 0
}

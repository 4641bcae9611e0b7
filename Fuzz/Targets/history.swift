// libFuzzer target: a timeline history file (TTTTTTTT.history) as recover reads it from the
// WAL archive, TimelineHistory's parser and the choice of timeline per segment it drives.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHistory(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = FuzzInput.text(bytes, count)
    if let history = TimelineHistory(timeline: 7, text: text) {
        // One ancestor per line that is neither blank nor a comment.
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard history.ancestors.count == lines.count else {
            FuzzInput.violated("\(lines.count) history lines gave \(history.ancestors.count) ancestors")
        }
        // Round trip: the ancestors written the way PostgreSQL writes them parse to the same history.
        let rendered = history.ancestors.map { "\($0.timeline)\t\(String($0.switchpoint >> 32, radix: 16, uppercase: true))/\(String($0.switchpoint & 0xFFFF_FFFF, radix: 16, uppercase: true))\tno recovery target specified" }
        guard TimelineHistory(timeline: 7, text: rendered.joined(separator: "\n") + "\n") == history else {
            FuzzInput.violated("a parsed history does not survive being written again")
        }
        // Every segment is read from the history's own timeline or one of its ancestors,
        // whatever the order of the switchpoints a hostile file gives.
        let allowed = Set(history.ancestors.map(\.timeline) + [7])
        var probes: [UInt64] = [0, 1, UInt64.max]
        for ancestor in history.ancestors.prefix(16) {
            for size in [Int64(1 << 20), 16 << 20, 1 << 30] {
                let n = ancestor.switchpoint / UInt64(size)
                probes += [n, n &+ 1, n &- 1]
            }
        }
        for n in probes {
            for size in [Int64(1 << 20), 16 << 20, 1 << 30] where !allowed.contains(history.timeline(forSegment: n, segmentSize: size)) {
                FuzzInput.violated("segment \(n) chose a timeline outside the history")
            }
        }
    }
    for word in text.split(whereSeparator: { $0.isWhitespace }).prefix(64) {
        if let lsn = TimelineHistory.parseLSN(String(word)) {
            let again = String(lsn >> 32, radix: 16) + "/" + String(lsn & 0xFFFF_FFFF, radix: 16)
            guard TimelineHistory.parseLSN(again) == lsn else { FuzzInput.violated("the LSN \(word) does not parse back") }
        }
    }
    return 0
}

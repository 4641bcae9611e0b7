import Foundation

extension WALArchive {
    /// The history of `timeline` as archived (timeline 1 has none); nil when a history file that
    /// should exist is missing or unreadable.
    public func history(of timeline: UInt32, in repository: any Repository) async throws -> TimelineHistory? {
        guard timeline > 1 else { return TimelineHistory(root: timeline) }
        guard let stored = try await repository.readArchiveObject(.wal(systemIdentifier: systemIdentifier, file: .history(timeline))) else { return nil }
        guard let (_, plain) = try? WALObjectFormat.decode(stored) else { return nil }
        return TimelineHistory(timeline: timeline, text: String(decoding: plain, as: UTF8.self))
    }

    /// The segments a recovery along `history` needs from segment number `from` through
    /// `through` (inclusive) that the archive lacks, each on the timeline it must come from.
    public func missingSegments(from: UInt64, through: UInt64, along history: TimelineHistory) -> [WALFileName] {
        guard from <= through else { return [] }
        var have: [UInt32: Set<UInt64>] = [:]
        for line in timelines { have[line.timeline] = Set(line.segments) }
        return (from...through).compactMap { n in
            let tli = history.timeline(forSegment: n, segmentSize: segmentSize)
            return have[tli]?.contains(n) == true ? nil : WALFileName(timeline: tli, segmentNumber: n, segmentSize: segmentSize)
        }
    }
}

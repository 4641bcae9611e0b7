import Foundation

/// What the repository's WAL archive holds, as far as recovery windows need it: per timeline,
/// the segments present and when each was archived (an upper bound for the commit times in it).
public struct WALArchiveState: Sendable {
    public struct Segment: Sendable, Equatable {
        public var number: UInt64
        public var archivedAt: Date?
        public init(number: UInt64, archivedAt: Date?) {
            self.number = number
            self.archivedAt = archivedAt
        }
    }

    /// Segments per timeline, sorted by number.
    public var timelines: [Int: [Segment]]
    /// For each timeline with a history file: its parent and the switch point.
    public var parents: [Int: (parent: Int, switchPoint: WALPosition)]
    /// False when the archive could not be listed: windows are then not checked against it.
    public var known: Bool

    public init(timelines: [Int: [Segment]], parents: [Int: (parent: Int, switchPoint: WALPosition)] = [:], known: Bool = true) {
        self.timelines = timelines
        self.parents = parents
        self.known = known
    }

    static let unknown = WALArchiveState(timelines: [:], known: false)
}

/// Where recovery can go: for each base backup whose WAL is archived up to its stop point, from
/// its end to the last segment reachable without a gap (following later timelines that branch
/// off the path, as `recovery_target_timeline = 'latest'` does).
public struct RecoverableWindow: Sendable {
    public struct Span: Sendable, Equatable {
        public var base: String
        public var fromTime: Date
        public var fromLSN: WALPosition
        /// Nil when the archive's times are unknown.
        public var toTime: Date?
        public var toLSN: WALPosition?
        public var timeline: Int
        /// The first segment missing after the reachable run, when a later one exists.
        public var gapAt: String?
    }

    public var spans: [Span]
    /// Base backups whose own WAL (start to stop) is not all archived.
    public var unusable: [String]
    let bases: [BaseBackupManifest]

    public init(bases: [BaseBackupManifest], archive: WALArchiveState) {
        self.bases = bases
        var spans: [Span] = []
        var unusable: [String] = []
        for base in bases.sorted(by: { $0.stopTime < $1.stopTime }) {
            guard let start = WALPosition(base.startLSN), let stop = WALPosition(base.stopLSN) else { unusable.append(base.id); continue }
            guard archive.known else {
                spans.append(Span(base: base.id, fromTime: base.stopTime, fromLSN: stop, toTime: nil, toLSN: nil, timeline: base.timeline))
                continue
            }
            // Walk the base's timeline, then any child timeline branching off within the run.
            var timeline = base.timeline
            var segment = start.segmentNumber
            var lastPresent: WALArchiveState.Segment?
            var gap: String?
            while true {
                let present = Dictionary((archive.timelines[timeline] ?? []).map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
                var end: WALArchiveState.Segment?
                while let found = present[segment] {
                    end = found
                    segment += 1
                }
                if let end { lastPresent = end }
                // A newer timeline that branched off this one inside the run continues it.
                let children = archive.parents.filter { $0.value.parent == timeline && $0.value.switchPoint.segmentNumber <= segment }
                    .sorted { $0.key > $1.key }
                if let child = children.first, child.key > timeline {
                    timeline = child.key
                    segment = child.value.switchPoint.segmentNumber
                    continue
                }
                if (archive.timelines[timeline] ?? []).contains(where: { $0.number > segment }) {
                    gap = WALPosition.segmentName(timeline: timeline, segment: segment)
                }
                break
            }
            let reachedEnd = segment // first segment not reachable
            guard reachedEnd > stop.segmentNumber || (lastPresent != nil && timeline != base.timeline) else {
                unusable.append(base.id)
                continue
            }
            spans.append(Span(base: base.id, fromTime: base.stopTime, fromLSN: stop, toTime: lastPresent?.archivedAt,
                              toLSN: WALPosition(reachedEnd * WALPosition.segmentSize), timeline: timeline, gapAt: gap))
        }
        self.spans = spans
        self.unusable = unusable
    }

    /// "2026-11-27 09:30:00 to 2026-11-27 09:45:10 (base 20261127T093000Z); ..." for messages.
    public var description: String {
        guard !spans.isEmpty else { return "none (no base backup has its WAL archived)" }
        return spans.map { span in
            "\(Recover.timestamp(span.fromTime)) to \(span.toTime.map(Recover.timestamp) ?? "the end of the archive") (LSN \(span.fromLSN) to \(span.toLSN?.description ?? "?"), base backup \(span.base)\(span.gapAt.map { ", WAL missing from \($0) on" } ?? ""))"
        }.joined(separator: "; ")
    }

    /// The base backup to recover `target` from, or a refusal naming the window.
    public func choose(_ target: Recover.Target) throws -> BaseBackupManifest {
        func refuse(_ why: String) -> TSBackupError {
            TSBackupError(.precondition, "Cannot recover to \(target.description): \(why). The recoverable window is \(description). Choose a target inside it\(unusable.isEmpty ? "" : " (base backups \(unusable.joined(separator: ", ")) lack archived WAL and cannot be used)").")
        }
        let candidates: [Span]
        switch target {
        case .latest:
            candidates = spans
        case .time(let time):
            let before = spans.filter { $0.fromTime <= time }
            guard !before.isEmpty else { throw refuse("it is before the end of the oldest usable base backup") }
            candidates = before.filter { span in span.toTime.map { time <= $0 } ?? true }
            guard !candidates.isEmpty else {
                throw refuse(before.last?.gapAt != nil ? "the WAL from the base backup to that time has a gap" : "it is after the last archived WAL")
            }
        case .lsn(let lsn):
            let before = spans.filter { $0.fromLSN <= lsn }
            guard !before.isEmpty else { throw refuse("it is before the end of the oldest usable base backup") }
            candidates = before.filter { span in span.toLSN.map { lsn < $0 } ?? true }
            guard !candidates.isEmpty else {
                throw refuse(before.last?.gapAt != nil ? "the WAL from the base backup to that position has a gap" : "it is after the last archived WAL")
            }
        }
        guard let span = candidates.max(by: { $0.fromTime < $1.fromTime }), let base = bases.first(where: { $0.id == span.base }) else {
            throw refuse("no base backup has its WAL archived")
        }
        return base
    }
}

extension WALArchiveState {
    /// The repository's WAL archive. Until the WAL namespace is readable here, recovery windows
    /// are bounded by base backups only and replay itself finds a missing segment.
    static func read(_ repository: any Repository, bases: [BaseBackupManifest]) async throws -> WALArchiveState {
        .unknown
    }
}

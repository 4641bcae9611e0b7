import Foundation

/// What a repository's WAL archive holds, per timeline: for `tsbackup list`, for recover (is the
/// WAL from a base backup to a target all there?) and for expire (which segments may go).
public struct WALArchive: Sendable {
    /// One timeline's archived files.
    public struct Timeline: Sendable, Equatable {
        public var timeline: UInt32
        /// Segment numbers (XLogSegNo) of complete segments, ascending.
        public var segments: [UInt64]
        /// Runs of consecutive segments, ascending.
        public var ranges: [ClosedRange<UInt64>]
        /// Segment numbers missing between the first and the last archived segment, as runs.
        public var gaps: [ClosedRange<UInt64>]
        /// `.partial`, `.backup` and `.history` files of this timeline.
        public var otherFiles: [WALFileName]
        /// Stored bytes of every object of the timeline.
        public var storedBytes: Int64

        /// The first and last archived segment names, nil when the timeline has none.
        public func firstSegment(segmentSize: Int64) -> WALFileName? {
            segments.first.map { WALFileName(timeline: timeline, segmentNumber: $0, segmentSize: segmentSize) }
        }
        public func lastSegment(segmentSize: Int64) -> WALFileName? {
            segments.last.map { WALFileName(timeline: timeline, segmentNumber: $0, segmentSize: segmentSize) }
        }
    }

    public let marker: WALArchiveMarker
    public let systemIdentifier: UInt64
    /// Bytes per segment (the marker's, else 16 MB).
    public var segmentSize: Int64 { marker.segmentSize }
    /// Every timeline with archived files, ascending.
    public let timelines: [Timeline]
    /// The `.history` files archived (timeline switches), ascending.
    public let historyFiles: [WALFileName]

    public init(marker: WALArchiveMarker, objects: [ArchiveObjectInfo]) {
        self.marker = marker
        let system = marker.system ?? 0
        systemIdentifier = system
        var byTimeline: [UInt32: [(WALFileName, Int64)]] = [:]
        for info in objects {
            guard case .wal(let owner, let file) = info.object, owner == system else { continue }
            byTimeline[file.timeline, default: []].append((file, info.storedBytes))
        }
        let size = marker.segmentSize
        timelines = byTimeline.keys.sorted().map { tli in
            let files = byTimeline[tli]!
            let segments = files.filter { $0.0.isSegment }.map { $0.0.segmentNumber(segmentSize: size) }.sorted()
            let ranges = Self.runs(segments)
            return Timeline(timeline: tli, segments: segments, ranges: ranges, gaps: Self.gaps(between: ranges),
                            otherFiles: files.filter { !$0.0.isSegment }.map(\.0).sorted(),
                            storedBytes: files.reduce(0) { $0 + $1.1 })
        }
        historyFiles = objects.compactMap { info -> WALFileName? in
            guard case .wal(let owner, let file) = info.object, owner == system, file.kind == .history else { return nil }
            return file
        }.sorted()
    }

    /// The archive of `repository`, or nil when it has none (nothing was ever pushed).
    public static func load(_ repository: any Repository) async throws -> WALArchive? {
        guard let marker = try await WALArchiveMarker.read(repository), let system = marker.system else { return nil }
        let objects = try await repository.listArchiveObjects(.cluster(systemIdentifier: system))
        return WALArchive(marker: marker, objects: objects)
    }

    public func timeline(_ tli: UInt32) -> Timeline? { timelines.first { $0.timeline == tli } }

    /// Stored bytes of the whole archive.
    public var storedBytes: Int64 { timelines.reduce(0) { $0 + $1.storedBytes } }

    /// The segments of `from`'s timeline from `from` through `to` (inclusive) that the archive
    /// lacks; empty when every one is there. Both must be segments of one timeline.
    public func missingSegments(from: WALFileName, through to: WALFileName) -> [WALFileName] {
        precondition(from.timeline == to.timeline, "one timeline at a time")
        let have = Set(timeline(from.timeline)?.segments ?? [])
        let low = from.segmentNumber(segmentSize: segmentSize), high = to.segmentNumber(segmentSize: segmentSize)
        guard low <= high else { return [] }
        return (low...high).filter { !have.contains($0) }.map { WALFileName(timeline: from.timeline, segmentNumber: $0, segmentSize: segmentSize) }
    }

    /// Whether every segment from `from` through `to` of one timeline is archived.
    public func hasEverySegment(from: WALFileName, through to: WALFileName) -> Bool {
        missingSegments(from: from, through: to).isEmpty
    }

    /// The segments, partial segments and backup files (of every timeline) that lie before
    /// `oldest`'s position, i.e. what a recovery from a base backup starting in `oldest` never
    /// reads. History files are kept (they are tiny and recovery reads them for every timeline).
    public func objectsBefore(_ oldest: WALFileName) -> [ArchiveObject] {
        let boundary = oldest.segmentNumber(segmentSize: segmentSize)
        return timelines.flatMap { line -> [ArchiveObject] in
            let segments = line.segments.filter { $0 < boundary }.map { WALFileName(timeline: line.timeline, segmentNumber: $0, segmentSize: segmentSize) }
            let others = line.otherFiles.filter { $0.kind != .history && $0.segmentNumber(segmentSize: segmentSize) < boundary }
            return (segments + others).map { .wal(systemIdentifier: systemIdentifier, file: $0) }
        }
    }

    /// Deletes what ``objectsBefore(_:)`` names (for expire); returns the files deleted.
    @discardableResult
    public func deleteSegments(before oldest: WALFileName, in repository: any Repository) async throws -> [WALFileName] {
        let doomed = objectsBefore(oldest)
        try await repository.deleteArchiveObjects(doomed)
        return doomed.compactMap { object in
            if case .wal(_, let file) = object { return file }
            return nil
        }
    }

    /// Consecutive runs of ascending numbers.
    static func runs(_ sorted: [UInt64]) -> [ClosedRange<UInt64>] {
        var result: [ClosedRange<UInt64>] = []
        for n in sorted {
            if let last = result.last, n == last.upperBound + 1 {
                result[result.count - 1] = last.lowerBound...n
            } else if let last = result.last, n <= last.upperBound {
                continue
            } else {
                result.append(n...n)
            }
        }
        return result
    }

    /// The holes between consecutive runs.
    static func gaps(between ranges: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        zip(ranges, ranges.dropFirst()).map { ($0.upperBound + 1)...($1.lowerBound - 1) }
    }
}

extension WALArchive {
    /// What `tsbackup list --json` can show of the archive: per timeline the first and last
    /// segment, the ranges and the gaps as segment names.
    public struct Summary: Codable, Sendable, Equatable {
        public struct Line: Codable, Sendable, Equatable {
            public var timeline: UInt32
            public var firstSegment: String?
            public var lastSegment: String?
            public var segments: Int
            /// Runs of consecutive archived segments, "FIRST-LAST".
            public var ranges: [String]
            /// Runs of missing segments between the first and the last, "FIRST-LAST".
            public var gaps: [String]
            public var storedBytes: Int64

            enum CodingKeys: String, CodingKey {
                case timeline, segments, ranges, gaps
                case firstSegment = "first_segment"
                case lastSegment = "last_segment"
                case storedBytes = "stored_bytes"
            }
        }

        public var systemIdentifier: String
        public var walSegmentSize: Int64
        public var timelines: [Line]
        public var historyFiles: [String]
        public var storedBytes: Int64

        enum CodingKeys: String, CodingKey {
            case timelines
            case systemIdentifier = "system_identifier"
            case walSegmentSize = "wal_segment_size"
            case historyFiles = "history_files"
            case storedBytes = "stored_bytes"
        }
    }

    public var summary: Summary {
        let size = segmentSize
        func name(_ tli: UInt32, _ n: UInt64) -> String { WALFileName(timeline: tli, segmentNumber: n, segmentSize: size).name }
        func runs(_ tli: UInt32, _ ranges: [ClosedRange<UInt64>]) -> [String] {
            ranges.map { $0.lowerBound == $0.upperBound ? name(tli, $0.lowerBound) : name(tli, $0.lowerBound) + "-" + name(tli, $0.upperBound) }
        }
        return Summary(
            systemIdentifier: String(systemIdentifier), walSegmentSize: size,
            timelines: timelines.map { line in
                Summary.Line(timeline: line.timeline, firstSegment: line.firstSegment(segmentSize: size)?.name,
                             lastSegment: line.lastSegment(segmentSize: size)?.name, segments: line.segments.count,
                             ranges: runs(line.timeline, line.ranges), gaps: runs(line.timeline, line.gaps), storedBytes: line.storedBytes)
            },
            historyFiles: historyFiles.map(\.name), storedBytes: storedBytes)
    }
}

import Foundation

/// A timeline's ancestry, from its `TTTTTTTT.history` file: each line is a parent timeline and
/// the WAL position (LSN) where the next timeline branched off it ("1\t0/3000158\treason").
public struct TimelineHistory: Sendable, Equatable {
    public struct Switch: Sendable, Equatable {
        /// The ancestor timeline.
        public var timeline: UInt32
        /// Where it ended: the next timeline starts at this LSN.
        public var switchpoint: UInt64
    }

    /// The timeline the history belongs to.
    public var timeline: UInt32
    /// Its ancestors, oldest first.
    public var ancestors: [Switch]

    /// Parses a history file; nil when a line is not `<timeline> <X/Y> ...` (comments and blank lines are skipped).
    public init?(timeline: UInt32, text: String) {
        self.timeline = timeline
        ancestors = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count >= 2, let parent = UInt32(fields[0]), let lsn = Self.parseLSN(String(fields[1])) else { return nil }
            ancestors.append(Switch(timeline: parent, switchpoint: lsn))
        }
    }

    /// A timeline without ancestors (timeline 1, or one whose history is unknown).
    public init(root timeline: UInt32) {
        self.timeline = timeline
        ancestors = []
    }

    /// `X/Y` as PostgreSQL prints an LSN.
    public static func parseLSN(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt32(parts[0], radix: 16), let low = UInt32(parts[1], radix: 16) else { return nil }
        return UInt64(high) << 32 | UInt64(low)
    }

    /// The timeline PostgreSQL reads segment `segmentNumber` from when it recovers along this
    /// history: the newest timeline that had begun by that segment (the segment holding a
    /// switchpoint is read from the new timeline, which starts with a copy of it).
    public func timeline(forSegment segmentNumber: UInt64, segmentSize: Int64) -> UInt32 {
        var chosen = timeline
        var begin: UInt64 = 0  // where ancestors[i].timeline begins
        for ancestor in ancestors {
            if segmentNumber >= begin { chosen = ancestor.timeline }
            begin = ancestor.switchpoint / UInt64(segmentSize)  // where the next one begins
        }
        if segmentNumber >= begin { chosen = timeline }
        return chosen
    }
}

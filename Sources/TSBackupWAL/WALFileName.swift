#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// WAL naming in one place: ``WALFileName`` (what PostgreSQL calls the files it archives) does
/// all segment arithmetic, for any segment size; ``WALPosition`` is only a location in WAL and
/// asks WALFileName which segment holds it.

/// A file name PostgreSQL gives to what it archives (`%f`), parsed.
///
/// - segment: `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number split in two)
/// - partial segment: the same followed by `.partial` (written at promotion)
/// - history: `TTTTTTTT.history`
/// - backup label: a segment name followed by `.OOOOOOOO.backup` (the offset of the backup's start)
///
/// Anything else is refused, which also keeps names free of `/` and `..`.
public struct WALFileName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case segment
        case partial
        case history
        /// A backup history file; `offset` is the start position inside the segment.
        case backup(offset: UInt32)
    }

    /// PostgreSQL's default segment size (16 MB), used where no archive recorded another.
    public static let defaultSegmentSize: Int64 = 16 << 20

    /// The timeline the name encodes.
    public var timeline: UInt32
    /// The two segment-number words of the name (0 for a history file). Their meaning depends on
    /// the segment size: see ``segmentNumber(segmentSize:)``.
    public var high: UInt32
    public var low: UInt32
    public var kind: Kind

    public init(timeline: UInt32, high: UInt32, low: UInt32, kind: Kind) {
        self.timeline = timeline
        self.high = high
        self.low = low
        self.kind = kind
    }

    /// The segment on `timeline` numbered `segmentNumber` (XLogSegNo) for `segmentSize`-byte segments.
    public init(timeline: UInt32, segmentNumber: UInt64, segmentSize: Int64) {
        let perWord = WALFileName.segmentsPerWord(segmentSize)
        self.init(timeline: timeline, high: UInt32(segmentNumber / perWord), low: UInt32(segmentNumber % perWord), kind: .segment)
    }

    /// A history file's name: `TTTTTTTT.history`.
    public static func history(_ timeline: UInt32) -> WALFileName {
        WALFileName(timeline: timeline, high: 0, low: 0, kind: .history)
    }

    /// Parses `%f`; nil when it is not a name PostgreSQL archives.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        func hex(_ range: Range<Int>) -> UInt32? {
            guard range.upperBound <= bytes.count else { return nil }
            var value: UInt32 = 0
            for b in bytes[range] {
                let digit: UInt32
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
                default: return nil  // PostgreSQL writes upper-case hex only
                }
                value = value << 4 | digit
            }
            return value
        }
        if bytes.count == 16, text.hasSuffix(".history"), let tli = hex(0..<8) {
            self.init(timeline: tli, high: 0, low: 0, kind: .history)
            return
        }
        guard bytes.count >= 24, let tli = hex(0..<8), let high = hex(8..<16), let low = hex(16..<24) else { return nil }
        let rest = String(decoding: bytes[24...], as: UTF8.self)
        switch rest {
        case "": self.init(timeline: tli, high: high, low: low, kind: .segment)
        case ".partial": self.init(timeline: tli, high: high, low: low, kind: .partial)
        default:
            let tail = Array(rest.utf8)
            guard tail.count == 16, rest.hasPrefix("."), rest.hasSuffix(".backup"), let offset = hex(25..<33) else { return nil }
            self.init(timeline: tli, high: high, low: low, kind: .backup(offset: offset))
        }
        guard timeline != 0 else { return nil }
    }

    /// The name as PostgreSQL writes it.
    public var name: String {
        switch kind {
        case .history: return Self.hex8(timeline) + ".history"
        case .segment: return segmentPart
        case .partial: return segmentPart + ".partial"
        case .backup(let offset): return segmentPart + "." + Self.hex8(offset) + ".backup"
        }
    }

    public var description: String { name }

    private var segmentPart: String { Self.hex8(timeline) + Self.hex8(high) + Self.hex8(low) }

    /// Whether this names a (complete) WAL segment.
    public var isSegment: Bool { kind == .segment }

    /// XLogSegNo: the segment's number counted from the start of WAL (for segments, partial
    /// segments and backup files).
    public func segmentNumber(segmentSize: Int64) -> UInt64 {
        UInt64(high) * Self.segmentsPerWord(segmentSize) + UInt64(low)
    }

    /// The segment of the same timeline `count` segments later.
    public func advanced(by count: Int64, segmentSize: Int64) -> WALFileName {
        WALFileName(timeline: timeline, segmentNumber: UInt64(Int64(segmentNumber(segmentSize: segmentSize)) + count), segmentSize: segmentSize)
    }

    /// The segment holding byte position `lsn` of WAL on `timeline`.
    public static func segment(containing lsn: UInt64, timeline: UInt32, segmentSize: Int64) -> WALFileName {
        WALFileName(timeline: timeline, segmentNumber: lsn / UInt64(segmentSize), segmentSize: segmentSize)
    }

    /// Segments per value of the name's middle word: 2^32 bytes of WAL / segment size (256 for 16 MB).
    package static func segmentsPerWord(_ segmentSize: Int64) -> UInt64 {
        UInt64(0x1_0000_0000) / UInt64(segmentSize)
    }

    /// Whether `size` is a segment size PostgreSQL allows (a power of two from 1 MB to 1 GB).
    public static func isValidSegmentSize(_ size: Int64) -> Bool {
        size >= 1 << 20 && size <= 1 << 30 && size & (size - 1) == 0
    }

    package static func hex8(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    /// Name order is PostgreSQL's order: timeline, then position, then kind.
    public static func < (a: WALFileName, b: WALFileName) -> Bool { a.name < b.name }
}

/// A WAL location (`XXXXXXXX/XXXXXXXX`, an LSN), comparable. Which segment holds it, and that
/// segment's name, come from ``WALFileName``.
public struct WALPosition: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// Parses `0/3000028`; nil when malformed.
    public init?(_ text: String) {
        // Blanks around it are trimmed (as CharacterSet.whitespaces would; not line breaks).
        let blank = { (c: Character) in c.isWhitespace && !c.isNewline }
        let parts = text.drop(while: blank).reversed().drop(while: blank).reversed().split(separator: "/").map { String($0) }
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16),
              high <= UInt64(UInt32.max), low <= UInt64(UInt32.max) else { return nil }
        value = high << 32 | low
    }

    /// The first location of segment `number` (XLogSegNo).
    public init(startOfSegment number: UInt64, segmentSize: Int64 = WALFileName.defaultSegmentSize) {
        value = number * UInt64(segmentSize)
    }

    public var description: String {
        String(UInt32(value >> 32), radix: 16, uppercase: true) + "/" + String(UInt32(value & 0xFFFF_FFFF), radix: 16, uppercase: true)
    }

    /// The number (XLogSegNo) of the segment holding this location.
    public func segmentNumber(segmentSize: Int64 = WALFileName.defaultSegmentSize) -> UInt64 {
        value / UInt64(segmentSize)
    }

    /// The segment holding this location on `timeline` (`000000010000000000000003`).
    public func segment(timeline: Int, segmentSize: Int64 = WALFileName.defaultSegmentSize) -> WALFileName {
        WALFileName.segment(containing: value, timeline: UInt32(timeline), segmentSize: segmentSize)
    }

    public static func < (a: WALPosition, b: WALPosition) -> Bool { a.value < b.value }
}

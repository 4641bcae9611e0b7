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
    /// The archive's segment size (segment numbers and positions are converted with it).
    public var segmentSize: Int64

    public init(timelines: [Int: [Segment]], parents: [Int: (parent: Int, switchPoint: WALPosition)] = [:], known: Bool = true,
                segmentSize: Int64 = WALFileName.defaultSegmentSize) {
        self.timelines = timelines
        self.parents = parents
        self.known = known
        self.segmentSize = segmentSize
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
        /// When the last archived transaction reachable from the base backup committed; nil when
        /// not known (then replay itself finds the end).
        public var toTime: Date?
        /// The last reachable segment (on `timeline`).
        public var lastSegment: UInt64?
        public var toLSN: WALPosition?
        public var timeline: Int
        /// The first segment missing after the reachable run, when a later one exists.
        public var gapAt: String?
    }

    public internal(set) var spans: [Span]
    /// Base backups whose own WAL (start to stop) is not all archived.
    public var unusable: [String]
    let bases: [BaseBackupManifest]

    /// Fills in each span's end time from the archived WAL itself (pg_waldump).
    mutating func readEndTimes(repository: any Repository, archive: WALArchive, bin: String) async {
        for index in spans.indices {
            guard let last = spans[index].lastSegment else { continue }
            spans[index].toTime = await ArchivedCommitTime.last(in: repository, archive: archive, timeline: spans[index].timeline,
                                                                before: last + 1, bin: bin)
        }
    }

    public init(bases: [BaseBackupManifest], archive: WALArchiveState) {
        self.bases = bases
        var spans: [Span] = []
        var unusable: [String] = []
        for base in bases.sorted(by: { $0.stopTime < $1.stopTime }) {
            guard let start = WALPosition(base.startLSN), let stop = WALPosition(base.stopLSN) else { unusable.append(base.id); continue }
            guard archive.known else {
                spans.append(Span(base: base.id, fromTime: base.stopTime, fromLSN: stop, toTime: nil, lastSegment: nil, toLSN: nil, timeline: base.timeline))
                continue
            }
            // Walk the base's timeline, then any child timeline branching off within the run.
            var timeline = base.timeline
            let size = archive.segmentSize
            var segment = start.segmentNumber(segmentSize: size)
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
                let children = archive.parents.filter { $0.value.parent == timeline && $0.value.switchPoint.segmentNumber(segmentSize: size) <= segment }
                    .sorted { $0.key > $1.key }
                if let child = children.first, child.key > timeline {
                    timeline = child.key
                    segment = child.value.switchPoint.segmentNumber(segmentSize: size)
                    continue
                }
                if (archive.timelines[timeline] ?? []).contains(where: { $0.number > segment }) {
                    gap = WALFileName(timeline: UInt32(timeline), segmentNumber: segment, segmentSize: size).name
                }
                break
            }
            let reachedEnd = segment // first segment not reachable
            guard reachedEnd > stop.segmentNumber(segmentSize: size) || (lastPresent != nil && timeline != base.timeline) else {
                unusable.append(base.id)
                continue
            }
            spans.append(Span(base: base.id, fromTime: base.stopTime, fromLSN: stop, toTime: lastPresent?.archivedAt,
                              lastSegment: reachedEnd > 0 ? reachedEnd - 1 : nil,
                              toLSN: WALPosition(startOfSegment: reachedEnd, segmentSize: size), timeline: timeline, gapAt: gap))
        }
        self.spans = spans
        self.unusable = unusable
    }

    /// "2026-11-27 09:30:00 to 2026-11-27 09:45:10 (base 20261127T093000Z); ..." for messages.
    public var description: String {
        guard !spans.isEmpty else { return "none (no base backup has its WAL archived)" }
        return spans.map { span in
            "\(Recover.timestamp(span.fromTime)) to \(span.toTime.map { "just before " + Recover.timestamp($0) } ?? "the end of the archive") (LSN \(span.fromLSN) to \(span.toLSN?.description ?? "?"), base backup \(span.base)\(span.gapAt.map { ", WAL missing from \($0) on" } ?? ""))"
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
            // A commit after the target must be archived: replay stops there.
            candidates = before.filter { span in span.toTime.map { time < $0 } ?? true }
            guard !candidates.isEmpty else {
                throw refuse(before.last?.gapAt != nil ? "the WAL from the base backup to that time has a gap" : "it is not before the last transaction in the archived WAL")
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
    /// The repository's WAL archive for the base backups' cluster: segments per timeline and,
    /// from the archived `.history` files, each timeline's parent and switch point.
    static func read(_ repository: any Repository, bases: [BaseBackupManifest]) async throws -> (WALArchiveState, WALArchive?) {
        guard let archive = try await WALArchive.load(repository) else { return (WALArchiveState(timelines: [:]), nil) }
        var timelines: [Int: [Segment]] = [:]
        for line in archive.timelines {
            timelines[Int(line.timeline)] = line.segments.map { Segment(number: $0, archivedAt: nil) }
        }
        var parents: [Int: (parent: Int, switchPoint: WALPosition)] = [:]
        for history in archive.historyFiles {
            guard let data = try await repository.readArchiveObject(.wal(systemIdentifier: archive.systemIdentifier, file: history)),
                  let plain = try? WALObjectFormat.decode(data).1,
                  let parsed = parseHistory(String(decoding: plain, as: UTF8.self)) else { continue }
            parents[Int(history.timeline)] = parsed
        }
        return (WALArchiveState(timelines: timelines, parents: parents, segmentSize: archive.segmentSize), archive)
    }

    /// The last line of a timeline history file: "1\t0/3000000\tbefore 2026-..." names the parent
    /// timeline and where the new one branched off.
    static func parseHistory(_ text: String) -> (parent: Int, switchPoint: WALPosition)? {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard let last = lines.last else { return nil }
        let fields = last.split(whereSeparator: { $0 == "\t" || $0 == " " })
        guard fields.count >= 2, let parent = Int(fields[0]), let lsn = WALPosition(String(fields[1])) else { return nil }
        return (parent, lsn)
    }
}

/// When the last transaction in a stretch of archived WAL committed: a time target must lie
/// before it, because PostgreSQL stops replay at the first commit past the target and refuses
/// to promote when the archive ends first. Read with pg_waldump from the segment (fetched and
/// checked like wal-fetch does), looking back a few segments when one holds no commit.
enum ArchivedCommitTime {
    static func last(in repository: any Repository, archive: WALArchive, timeline: Int, before segment: UInt64, bin: String) async -> Date? {
        guard segment > 0 else { return nil }
        let directory = NSTemporaryDirectory() + "tsbackup-waldump-\(UUID().uuidString.prefix(8))"
        guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)) != nil else { return nil }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var number = segment - 1
        for _ in 0..<4 {
            let file = WALFileName(timeline: UInt32(timeline), segmentNumber: number, segmentSize: archive.segmentSize)
            let path = directory + "/" + file.name
            guard case .restored = try? await WALFetch.run(name: file.name, destination: path, repository: repository) else { return nil }
            let result = try? await ProcessRunner.run(bin + "/pg_waldump", ["--rmgr=Transaction", path])
            try? FileManager.default.removeItem(atPath: path)
            if let time = lastCommit(inWaldump: result?.standardOutput ?? "") { return time }
            guard number > 0 else { return nil }
            number -= 1
        }
        return nil
    }

    /// "desc: COMMIT 2026-11-27 09:30:00.512345 UTC" (also ABORT): the last one's time.
    static func lastCommit(inWaldump output: String) -> Date? {
        var last: Date?
        for line in output.split(separator: "\n") {
            guard let range = line.range(of: "desc: COMMIT ") ?? line.range(of: "desc: ABORT ") else { continue }
            let rest = line[range.upperBound...]
            guard let utc = rest.range(of: " UTC") else { continue }
            if let date = RecoveryVerification.parseLogTime(String(rest[..<utc.lowerBound]) + "+00") { last = date }
        }
        return last
    }
}

extension RecoverableWindow {
    /// The window of `repository`: its base backups (of the archive's cluster) against its WAL
    /// archive; with `withTimes`, each span's end time read from the archived WAL.
    public static func read(_ repository: any Repository, bases: [BaseBackupManifest], withTimes: Bool) async throws -> RecoverableWindow {
        let (state, archive) = try await WALArchiveState.read(repository, bases: bases)
        let own = archive.map { archive in bases.filter { $0.systemIdentifier == String(archive.systemIdentifier) } } ?? bases
        var window = RecoverableWindow(bases: own, archive: state)
        window.unusable += bases.filter { base in !own.contains { $0.id == base.id } }.map(\.id)
        if withTimes, let archive, let major = own.last?.server.majorVersion {
            await window.readEndTimes(repository: repository, archive: archive, bin: "/usr/lib/postgresql/\(major)/bin")
        }
        return window
    }
}

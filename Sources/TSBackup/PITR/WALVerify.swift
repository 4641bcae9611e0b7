import Crypto
import Foundation

/// `tsbackup verify --wal`: every object of a repository's WAL archive read back whole and
/// checked, as pgBackRest's `verify` checks its archive.
///
/// wal-fetch checks what recovery needs at the moment it needs it: zstd's frame checksum and the
/// size, and the header's SHA-256 only for objects without a frame checksum (docs/pitr.md). A
/// damaged object is then found only when a recovery reaches it, too late. This reads every object
/// through the same path as wal-fetch (the repository's reader: a local file or one GetObject,
/// decrypted and authenticated in an encrypted repository; then ``WALObjectFormat/Decoder``, which
/// decompresses and checks the frame checksum, that exactly one frame was stored, and the size),
/// and in addition always recomputes the SHA-256 of the content against the header's, so a damaged
/// SHA-256 field is found too. Then what the content says about itself:
///
/// - a segment or `.partial` segment: its first page's long header names this archive's cluster
///   (system identifier), PostgreSQL's page magic as the archive recorded it, the archive's
///   segment size (also the content's size), and the position its name stands for
///   (`xlp_pageaddr`, so a segment stored under another segment's name is found), on the name's
///   timeline or an ancestor (a new timeline's first segment starts as a copy of its parent's);
/// - a `.history` file parses, and names only older timelines;
/// - a `.backup` file parses (start and stop locations, label).
///
/// Missing objects: segments between the first and the last of a timeline (gaps), and the
/// segments from start to stop of every complete base backup. Each problem names its object.
///
/// Code on the reading side only (the object format and decoder stay in TSBackupWAL).
public enum WALVerify {
    public struct Report: Codable, Sendable {
        public var ok: Bool
        public var repository: String
        public var systemIdentifier: String
        public var objectsChecked: Int
        public var segmentsChecked: Int
        public var storedBytes: Int64
        /// Bytes after decompression: what was hashed.
        public var plainBytes: Int64
        public var problems: [Problem]

        enum CodingKeys: String, CodingKey {
            case ok, repository, problems
            case systemIdentifier = "system_identifier"
            case objectsChecked = "objects_checked"
            case segmentsChecked = "segments_checked"
            case storedBytes = "stored_bytes"
            case plainBytes = "plain_bytes"
        }
    }

    /// One damaged, foreign or missing object.
    public struct Problem: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            /// The object does not authenticate, decompress or match its checksums or size.
            case corrupt
            /// It is intact but its content is not what its name and place say (another
            /// cluster, another position, another segment size, an unparsable history).
            case identity
            /// An object that should be there is not.
            case missing
        }

        public var kind: Kind
        /// The WAL file (for a run of missing segments, the first of them).
        public var file: String
        /// The object's repository-relative name (`wal/<system>/<timeline>/<file>.zst`).
        public var object: String
        public var detail: String

        public var description: String { "\(object): \(detail)" }
    }

    /// Objects read at a time: one GetObject each on S3, where latency dominates.
    public static let defaultConcurrency = 4

    public static func run(repository: any Repository, concurrency: Int = defaultConcurrency) async throws -> Report {
        guard let archive = try await WALArchive.load(repository) else {
            throw TSBackupError(.notFound, "\(repository.location) holds no WAL archive (no \(ArchiveLayout.markerName)): nothing was ever archived into it. Check --repo, or set archive_command to `tsbackup wal-push %p --repo \(repository.location)`.")
        }
        let system = archive.systemIdentifier
        let files = archive.timelines.flatMap { line in
            line.segments.map { WALFileName(timeline: line.timeline, segmentNumber: $0, segmentSize: archive.segmentSize) } + line.otherFiles
        }.sorted()
        var report = Report(ok: true, repository: repository.location, systemIdentifier: String(system), objectsChecked: 0,
                            segmentsChecked: 0, storedBytes: archive.storedBytes, plainBytes: 0, problems: [])
        var found: [(WALFileName, Problem?)] = []
        try await withThrowingTaskGroup(of: (WALFileName, Int64, Problem?).self) { group in
            var next = files.makeIterator()
            func add() -> Bool {
                guard let file = next.next() else { return false }
                group.addTask { try await check(file, archive: archive, repository: repository) }
                return true
            }
            for _ in 0..<max(1, concurrency) where !add() { break }
            while let (file, plain, problem) = try await group.next() {
                report.objectsChecked += 1
                if file.kind == .segment || file.kind == .partial { report.segmentsChecked += 1 }
                report.plainBytes += plain
                found.append((file, problem))
                _ = add()
            }
        }
        report.problems = found.sorted { $0.0 < $1.0 }.compactMap(\.1) + missing(archive, bases: try await Recover.baseBackups(repository).map(\.1))
        report.ok = report.problems.isEmpty
        return report
    }

    static func objectName(_ system: UInt64, _ file: WALFileName) -> String {
        ArchiveLayout.name(of: .wal(systemIdentifier: system, file: file))
    }

    /// Reads one object whole and checks it; returns the plain bytes read and the problem, if any.
    /// Errors that are not about the object (the store unreachable, permission) end the run.
    static func check(_ file: WALFileName, archive: WALArchive, repository: any Repository) async throws -> (WALFileName, Int64, Problem?) {
        let system = archive.systemIdentifier
        let name = objectName(system, file)
        func problem(_ kind: Problem.Kind, _ detail: String) -> Problem { Problem(kind: kind, file: file.name, object: name, detail: detail) }
        let isSegment = file.kind == .segment || file.kind == .partial
        let decoder = WALObjectFormat.Decoder()
        var hasher = SHA256()
        var plainBytes: Int64 = 0
        var firstPage = Data()
        var text = Data()
        let header: WALObjectFormat.Header
        do {
            let present = try await repository.readArchiveObject(.wal(systemIdentifier: system, file: file)) { stored in
                try decoder.update(stored) { plain in
                    hasher.update(bufferPointer: plain)
                    plainBytes += Int64(plain.count)
                    if isSegment {
                        if firstPage.count < 40 { firstPage.append(contentsOf: plain.prefix(40 - firstPage.count)) }
                    } else if text.count < 1 << 20 {
                        text.append(contentsOf: plain.prefix((1 << 20) - text.count))
                    }
                }
            }
            // Listed a moment ago: deleted since (expire), or the listing is stale.
            guard present else { return (file, 0, problem(.missing, "it was listed but could not be read: it is gone (deleted since the listing?)")) }
            header = try decoder.finish()
        } catch let error as WALObjectError {
            return (file, plainBytes, problem(.corrupt, "corrupt: \(error.reason)"))
        } catch let error as TSBackupError where error.kind == .connection || error.kind == .permission {
            throw error
        } catch let error as TSBackupError {
            return (file, plainBytes, problem(.corrupt, "cannot be read: \(error.message)"))
        } catch {
            // Decryption and authentication failures of an encrypted repository.
            return (file, plainBytes, problem(.corrupt, "cannot be read: \(error)"))
        }
        // The decoder confirmed frame checksum and size; the header's own SHA-256 field is checked
        // here for every object (wal-fetch skips it when the frame checksum is there).
        guard Array(hasher.finalize()) == header.sha256 else {
            return (file, plainBytes, problem(.corrupt, "corrupt: the SHA-256 recorded in its header differs from its content's (the content itself passed zstd's frame checksum)"))
        }
        let identity: String?
        switch file.kind {
        case .segment, .partial:
            identity = segmentIdentity(file, firstPage: firstPage, plainSize: header.plainSize, archive: archive)
        case .history:
            identity = historyIdentity(file, text: text)
        case .backup:
            identity = BackupHistoryFile.parse(String(decoding: text, as: UTF8.self)) == nil
                ? "its content is not a backup history file (no LABEL, START and STOP WAL LOCATION, START TIMELINE)" : nil
        }
        return (file, plainBytes, identity.map { problem(.identity, $0) })
    }

    /// What is wrong with a segment's first page, or nil: it must name this cluster, the archive's
    /// page magic and segment size, and the position and (an ancestor of) the timeline of its name.
    static func segmentIdentity(_ file: WALFileName, firstPage: Data, plainSize: Int64, archive: WALArchive) -> String? {
        let size = archive.segmentSize
        guard plainSize == size else {
            return "it holds \(plainSize) bytes; the archive's segments have \(size)"
        }
        guard let page = ClusterIdentity.segmentHeader(firstPage) else {
            return "its first page has no long page header, so it is not the start of a WAL segment"
        }
        if page.systemIdentifier != archive.systemIdentifier {
            return "it belongs to another cluster (system identifier \(page.systemIdentifier), the archive's is \(archive.systemIdentifier))"
        }
        if let recorded = archive.marker.walPageMagic, let magic = UInt16(recorded, radix: 16), page.magic != magic {
            return "its page magic is \(String(page.magic, radix: 16, uppercase: true)), the archive's is \(recorded) (another PostgreSQL major version?)"
        }
        if Int64(page.segmentSize) != size {
            return "its page header says segments of \(page.segmentSize) bytes, the archive's have \(size)"
        }
        let expected = file.segmentNumber(segmentSize: size) * UInt64(size)
        if page.pageAddress != expected {
            let holds = WALFileName(timeline: page.timeline, segmentNumber: page.pageAddress / UInt64(size), segmentSize: size)
            return "it holds the WAL at \(WALPosition(page.pageAddress)) (segment \(holds.name)), not at \(WALPosition(expected)) as its name says"
        }
        if page.timeline > file.timeline {
            return "its first page is on timeline \(page.timeline), after its name's timeline \(file.timeline)"
        }
        return nil
    }

    static func historyIdentity(_ file: WALFileName, text: Data) -> String? {
        guard let history = TimelineHistory(timeline: file.timeline, text: String(decoding: text, as: UTF8.self)) else {
            return "its content is not a timeline history (lines of parent timeline and switch position)"
        }
        if let later = history.ancestors.first(where: { $0.timeline >= file.timeline }) {
            return "it names timeline \(later.timeline) as an ancestor of timeline \(file.timeline)"
        }
        return nil
    }

    /// Gaps between a timeline's first and last segment, and segments a complete base backup
    /// needs (start through stop) that are not archived.
    static func missing(_ archive: WALArchive, bases: [BaseBackupManifest]) -> [Problem] {
        let size = archive.segmentSize
        var problems: [Problem] = []
        var reported = Set<WALFileName>()
        func name(_ tli: UInt32, _ n: UInt64) -> WALFileName { WALFileName(timeline: tli, segmentNumber: n, segmentSize: size) }
        for line in archive.timelines {
            for gap in line.gaps {
                let first = name(line.timeline, gap.lowerBound), last = name(line.timeline, gap.upperBound)
                let count = gap.upperBound - gap.lowerBound + 1
                (gap.lowerBound...gap.upperBound).forEach { reported.insert(name(line.timeline, $0)) }
                problems.append(Problem(kind: .missing, file: first.name, object: objectName(archive.systemIdentifier, first),
                                        detail: count == 1 ? "missing: segment \(first.name) of timeline \(line.timeline) is not archived (a gap: recovery cannot replay across it)"
                                                           : "missing: segments \(first.name) through \(last.name) of timeline \(line.timeline) (\(count)) are not archived (a gap: recovery cannot replay across it)"))
            }
        }
        for base in bases {
            guard let start = WALFileName(base.startSegment), let stop = WALFileName(base.stopSegment), start.timeline == stop.timeline else { continue }
            let absent = archive.missingSegments(from: start, through: stop).filter { !reported.contains($0) }
            guard let first = absent.first else { continue }
            absent.forEach { reported.insert($0) }
            problems.append(Problem(kind: .missing, file: first.name, object: objectName(archive.systemIdentifier, first),
                                    detail: "missing: \(absent.count == 1 ? "segment \(first.name)" : "segments \(absent.map(\.name).joined(separator: ", "))"), which base backup \(base.id) needs to be consistent (\(start.name) through \(stop.name)), \(absent.count == 1 ? "is" : "are") not archived: it cannot be recovered"))
        }
        return problems
    }
}

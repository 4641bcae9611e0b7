import Foundation

/// What `list` shows of the WAL archive: per timeline the segment ranges and gaps, then the
/// recoverable window of the base backups against it.
public enum ArchiveListing {
    public static func lines(_ repository: any Repository, entries: [RepositoryEntry]) async throws -> [String] {
        guard let archive = try await WALArchive.load(repository) else { return [] }
        let size = archive.segmentSize
        func name(_ tli: UInt32, _ n: UInt64) -> String { WALFileName(timeline: tli, segmentNumber: n, segmentSize: size).name }
        var lines = ["", "WAL archive of cluster \(archive.systemIdentifier) (\(ByteCount.format(archive.storedBytes))):"]
        for line in archive.timelines {
            let ranges = line.ranges.map { "\(name(line.timeline, $0.lowerBound))-\(name(line.timeline, $0.upperBound).suffix(8))" }
            let gaps = line.gaps.map { "\(name(line.timeline, $0.lowerBound))\($0.count > 1 ? "-" + name(line.timeline, $0.upperBound).suffix(8) : "")" }
            lines.append("  timeline \(line.timeline): \(line.segments.count) segments \(ranges.isEmpty ? "(none)" : ranges.joined(separator: ", "))\(gaps.isEmpty ? "" : "; GAPS: \(gaps.joined(separator: ", "))")")
        }
        let bases = entries.compactMap { $0.state == .complete ? $0.base : nil }
        if !bases.isEmpty {
            let window = try await RecoverableWindow.read(repository, bases: bases, withTimes: true)
            lines.append("  recoverable: \(window.description)")
        }
        return lines
    }
}

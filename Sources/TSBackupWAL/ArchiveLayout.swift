#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An object of the WAL archive, named by what it is, never by a path: the repository decides
/// where it lives (``ArchiveLayout``), so use cases never build keys.
public enum ArchiveObject: Sendable, Hashable, CustomStringConvertible {
    /// `wal/archive.json`: which cluster (system identifier) the archive belongs to.
    case walMarker
    /// A file PostgreSQL archives (a segment, `.partial` segment, `.history` or `.backup` file) of
    /// the cluster with `systemIdentifier`.
    case wal(systemIdentifier: UInt64, file: WALFileName)

    public var description: String { ArchiveLayout.name(of: self) }
}

/// Where the namespaces beside `backups/` keep their objects, relative to the repository's root.
///
/// ```
/// wal/archive.json                                    the archive marker (system identifier, segment size)
/// wal/<system identifier>/<timeline, 8 hex>/<file>.zst  one object per archived file
/// ```
///
/// The same relative name is the local path under the repository directory, the S3 key under
/// the repository's prefix, and the name an encrypted object is bound to.
public enum ArchiveLayout {
    public static let walNamespace = "wal"
    package static let markerName = "wal/archive.json"
    package static let objectSuffix = ".zst"

    /// The repository-relative name of `object`.
    public static func name(of object: ArchiveObject) -> String {
        switch object {
        case .walMarker:
            return markerName
        case .wal(let system, let file):
            return "\(walNamespace)/\(system)/\(WALFileName.hex8(file.timeline))/\(file.name)\(objectSuffix)"
        }
    }

    /// The prefix every object of `scope` starts with.
    package static func prefix(of scope: ArchiveScope) -> String {
        switch scope {
        case .cluster(let system): return "\(walNamespace)/\(system)/"
        case .timeline(let system, let timeline): return "\(walNamespace)/\(system)/\(WALFileName.hex8(timeline))/"
        }
    }

    /// The object a relative name stands for; nil for names tsbackup does not write (temporary
    /// files, strangers), which listings skip.
    package static func object(named name: String) -> ArchiveObject? {
        if name == markerName { return .walMarker }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == walNamespace, let system = UInt64(parts[1]), String(system) == parts[1],
              parts[3].hasSuffix(objectSuffix),
              let file = WALFileName(String(parts[3].dropLast(objectSuffix.count))),
              WALFileName.hex8(file.timeline) == parts[2] else { return nil }
        return .wal(systemIdentifier: system, file: file)
    }
}

/// Which archive objects a listing covers.
public enum ArchiveScope: Sendable, Hashable {
    /// Every object of one cluster.
    case cluster(systemIdentifier: UInt64)
    /// The objects of one timeline of one cluster.
    case timeline(systemIdentifier: UInt64, timeline: UInt32)
}

/// What a create-only put found.
public enum ArchivePutOutcome: Sendable, Equatable {
    /// The object did not exist and now holds the data.
    case created
    /// An object of that name exists already; nothing was written.
    case exists
}


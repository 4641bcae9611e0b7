#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Which cluster a WAL file belongs to, read cheaply from the file itself or from the data
/// directory, without connecting to the server.
public enum ClusterIdentity {
    /// XLOG_PAGE_MAGIC of PostgreSQL 15 (access/xlog_internal.h).
    public static let pageMagic15: UInt16 = 0xD110
    package static let longHeaderFlag: UInt16 = 0x0002

    /// What the first page of a WAL segment says: `XLogLongPageHeaderData` is the 24-byte
    /// (MAXALIGNed) `XLogPageHeaderData` (xlp_magic u16 @0, xlp_info u16 @2, xlp_tli u32 @4,
    /// xlp_pageaddr u64 @8, xlp_rem_len u32 @16), then xlp_sysid u64 @24, xlp_seg_size u32 @32,
    /// xlp_xlog_blcksz u32 @36, all in the machine's (little-endian) byte order.
    public struct SegmentHeader: Sendable, Equatable {
        public var magic: UInt16
        public var timeline: UInt32
        public var pageAddress: UInt64
        public var systemIdentifier: UInt64
        public var segmentSize: UInt32
        public var blockSize: UInt32
    }

    /// The long page header at the start of `segment`, or nil when it has none (not a segment,
    /// or one PostgreSQL has not written yet).
    public static func segmentHeader(_ segment: Data) -> SegmentHeader? {
        guard segment.count >= 40 else { return nil }
        return segment.withUnsafeBytes { raw -> SegmentHeader? in
            func u16(_ at: Int) -> UInt16 { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)) }
            func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
            func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
            guard u16(2) & longHeaderFlag != 0 else { return nil }
            return SegmentHeader(magic: u16(0), timeline: u32(4), pageAddress: u64(8),
                                 systemIdentifier: u64(24), segmentSize: u32(32), blockSize: u32(36))
        }
    }

    /// The system identifier in `global/pg_control` of the data directory `directory`: the first
    /// field of ControlFileData (uint64 system_identifier).
    public static func controlFileSystemIdentifier(dataDirectory directory: String) -> UInt64? {
        let path = directory + "/global/pg_control"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { pread(fd, $0.baseAddress, 8, 0) }
        guard n == 8 else { return nil }
        return UInt64(littleEndian: value)
    }
}

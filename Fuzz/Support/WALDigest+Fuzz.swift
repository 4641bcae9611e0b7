import Foundation

/// The fuzz build's stand-in for TSBackupWAL's `WALDigest` (which imports swift-crypto): the
/// same digests through the plain SHA-256 of `FileSystem+Fuzz.swift`.
enum WALDigest {
    static func sha256(_ data: Data) -> [UInt8] {
        let hex = Array(FileSystem.sha256(of: data).utf8)
        func nibble(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : c - 48 }
        return stride(from: 0, to: hex.count, by: 2).map { nibble(hex[$0]) << 4 | nibble(hex[$0 + 1]) }
    }

    static func hex(_ bytes: [UInt8]) -> String { FileSystem.hex(bytes) }
}

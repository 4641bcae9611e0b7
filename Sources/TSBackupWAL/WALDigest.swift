import Crypto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// SHA-256 for the WAL object format, in a file of its own: the fuzz build compiles the format
/// (WALObjectFormat.swift) without swift-crypto and stands in a plain SHA-256 for this one
/// (Fuzz/Support/WALDigest+Fuzz.swift).
package enum WALDigest {
    /// The SHA-256 of `data` (BoringSSL's, which uses the CPU's SHA extensions where it has them).
    package static func sha256(_ data: Data) -> [UInt8] {
        Array(SHA256.hash(data: data))
    }

    /// The SHA-256 of `bytes`.
    package static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }

    /// Lowercase hex, as digests are shown.
    package static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension WALDigest {
    /// A SHA-256 fed in pieces.
    package struct Hasher {
        private var inner = SHA256()

        package init() {}

        package mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bufferPointer: bytes) }

        package func finalize() -> [UInt8] { Array(inner.finalize()) }
    }
}

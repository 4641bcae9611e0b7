import Foundation

/// A small deterministic generator (SplitMix64), so failures reproduce: the unit tests' one
/// source of random numbers and bytes.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` bytes, one per number.
    mutating func data(_ count: Int) -> Data {
        var bytes = [UInt8](repeating: 0, count: count)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: next()) }
        return Data(bytes)
    }

    mutating func int(_ range: Range<Int64>) -> Int64 {
        range.lowerBound + Int64(next() % UInt64(range.count))
    }
}

import Foundation

/// What every harness does with libFuzzer's input: the bytes as `Data`, and as text the way
/// tsbackup turns bytes into text (`String(decoding:as:)`, invalid UTF-8 repaired, never refused).
enum FuzzInput {
    static func data(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Data {
        guard let bytes, count > 0 else { return Data() }
        return Data(bytes: bytes, count: count)
    }

    static func text(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> String {
        String(decoding: data(bytes, count), as: UTF8.self)
    }

    /// Stops the run with a finding libFuzzer records (it catches the trap like any crash).
    static func violated(_ what: @autoclosure () -> String) -> Never {
        fatalError("invariant violated: \(what())")
    }
}

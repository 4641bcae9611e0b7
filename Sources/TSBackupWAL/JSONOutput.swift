#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The JSON tsbackup prints and stores: pretty, keys sorted, so output diffs cleanly.
public enum JSONOutput {
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encodeData(value), as: UTF8.self)
    }

    /// The same encoding as bytes, without the copy into a String (a large manifest's text is
    /// megabytes).
    public static func encodeData<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: data)
    }
}

public enum TSBackupVersion {
    public static let current = "0.1.0"
}

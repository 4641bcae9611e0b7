import Foundation
import PostgresNIO

/// ``TableContent``'s hash in parts: the count and the two sums add up, so parts of a table
/// (batches of chunks, each read by its own session on one snapshot) can be measured in
/// parallel and combined into exactly the hash ``TableContent/measure(_:table:hash:)`` gives
/// for the whole.
struct ContentParts: Sendable {
    var count: Int64
    /// Decimal integers as PostgreSQL prints numeric.
    var high: String
    var low: String

    static let zero = ContentParts(count: 0, high: "0", low: "0")

    /// Measures the rows `rowsQuery` returns. `rowsQuery` must yield the table's own row type
    /// (every column, in order), so `t::text` reads as it does for the table.
    static func measure(_ session: DatabaseSession, rowsQuery: String, purpose: String) async throws -> ContentParts {
        let (count, high, low) = try await session.row(
            PostgresQuery(unsafeSQL: """
            SELECT count(*),
                   coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8::numeric), 0)::text,
                   coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::int8::numeric), 0)::text
            FROM (SELECT md5(t::text) AS h FROM (\(rowsQuery)) t) rows
            """), as: (Int64, String, String).self, purpose: purpose)
        return ContentParts(count: count, high: high, low: low)
    }

    /// The `v1:` hash of these figures: the table's, when they are the whole table's.
    var hash: String { "v1:" + FileSystem.sha256(of: Data("\(count):\(high):\(low)".utf8)) }

    /// The parts added up by the server (numeric arithmetic is exact there), as the `v1:` hash.
    static func combine(_ parts: [ContentParts], session: DatabaseSession) async throws -> (Int64, String) {
        let all = parts.isEmpty ? [zero] : parts
        let (high, low) = try await session.row(
            PostgresQuery(unsafeSQL: "SELECT (\(all.map { "\($0.high)::numeric" }.joined(separator: " + ")))::text, (\(all.map { "\($0.low)::numeric" }.joined(separator: " + ")))::text"),
            as: (String, String).self, purpose: "adding up the content hash")
        let sum = ContentParts(count: all.reduce(0) { $0 + $1.count }, high: high, low: low)
        return (sum.count, sum.hash)
    }
}

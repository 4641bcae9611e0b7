import Foundation

/// Columns padded to their widest cell, for the readable reports.
public struct TextTable {
    public var header: [String]?
    public var rows: [[String]] = []
    public var indent: String

    public init(header: [String]? = nil, indent: String = "  ") {
        self.header = header
        self.indent = indent
    }

    public mutating func add(_ row: [String]) { rows.append(row) }

    public func render() -> String {
        let all = (header.map { [$0] } ?? []) + rows
        let columns = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in all {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        return all.map { row in
            let cells = row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }
            return indent + cells.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

public enum ByteCount {
    /// 1536 -> "1.5 kB", in the binary units PostgreSQL's pg_size_pretty uses.
    public static func format(_ bytes: Int64) -> String {
        let units = ["bytes", "kB", "MB", "GB", "TB", "PB"]
        var value = Double(bytes)
        var unit = 0
        while abs(value) >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) bytes" }
        return String(format: value >= 100 ? "%.0f" : "%.1f", value) + " " + units[unit]
    }
}

extension Bool {
    var yesNo: String { self ? "yes" : "no" }
}

extension String {
    /// The text on one line, cut to `limit` characters, for embedding in a message.
    func singleLine(limit: Int) -> String {
        let joined = split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        return joined.count > limit ? String(joined.prefix(limit)) + "…" : joined
    }

    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}

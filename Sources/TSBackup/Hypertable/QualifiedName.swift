import Foundation

/// "schema.name" as given on the command line: unquoted parts fold to lower case as in SQL,
/// double-quoted parts are taken as written; no schema means public.
enum QualifiedName {
    static func parse(_ text: String, option: String) throws -> (schema: String, name: String) {
        var parts: [String] = [""]
        var inQuotes = false
        var chars = Array(text.trimmingCharacters(in: .whitespaces))[...]
        while let c = chars.popFirst() {
            if c == "\"" {
                if inQuotes, chars.first == "\"" { parts[parts.count - 1].append("\""); chars.removeFirst(); continue }
                inQuotes.toggle()
            } else if c == "." && !inQuotes {
                parts.append("")
            } else {
                parts[parts.count - 1] += inQuotes ? String(c) : String(c).lowercased()
            }
        }
        guard !inQuotes, (1...2).contains(parts.count), !parts.contains(where: \.isEmpty) else {
            throw TSBackupError(.usage, "\(option) \(text) is not a table name; give SCHEMA.NAME (e.g. public.conditions), with double quotes around parts that have capitals or dots.")
        }
        return parts.count == 1 ? ("public", parts[0]) : (parts[0], parts[1])
    }
}

import Foundation

/// The table of contents of a pg_dump archive, as `pg_restore --list` prints it.
public struct ArchiveContents: Sendable {
    public struct Item: Sendable, Equatable {
        public var dumpID: Int
        /// "TABLE DATA", "SEQUENCE SET", "EXTENSION", "TABLE", "FK CONSTRAINT", ...
        public var type: String
        public var schema: String
        public var name: String
        /// The owning role, for object types that have one.
        public var owner: String?
        /// The line as printed, for `pg_restore -L` lists.
        public var line: String
    }

    public var items: [Item]
    /// Header lines, e.g. "; Dumped from database version: 15.20 (...)".
    public var header: [String: String]

    static let knownTypes = [
        "TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL", "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW", "TABLE ATTACH", "INDEX ATTACH", "SCHEMA", "EXTENSION", "COMMENT", "TABLE", "SEQUENCE",
        "INDEX", "CONSTRAINT", "TRIGGER", "VIEW", "FUNCTION", "PROCEDURE", "TYPE", "DOMAIN", "ACL", "DEFAULT", "RULE",
        "POLICY", "ROW SECURITY", "STATISTICS", "AGGREGATE", "CAST", "COLLATION", "PUBLICATION", "EVENT TRIGGER",
    ]

    /// Types whose list line ends with the owning role.
    static let ownedTypes: Set<String> = ["TABLE", "TABLE DATA", "SEQUENCE", "VIEW", "MATERIALIZED VIEW", "FUNCTION", "PROCEDURE",
                                          "SCHEMA", "TYPE", "DOMAIN", "AGGREGATE"]

    /// Parses `pg_restore --list` output.
    public init(listing: String) {
        var items: [Item] = []
        var header: [String: String] = [:]
        for raw in listing.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = String(raw)
            if line.hasPrefix(";") {
                let text = line.dropFirst().trimmingPrefix(while: { $0 == " " })
                if let colon = text.firstIndex(of: ":") {
                    header[String(text[..<colon]).trimmingCharacters(in: .whitespaces)] =
                        String(text[text.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                }
                continue
            }
            // "<id>; <tableoid> <oid> <TYPE> <schema> <name> <owner>"
            guard let semicolon = line.firstIndex(of: ";"), let id = Int(line[..<semicolon]) else { continue }
            let fields = line[line.index(after: semicolon)...].split(separator: " ", maxSplits: 2)
            guard fields.count == 3 else { continue }
            let rest = String(fields[2])
            guard let type = Self.knownTypes.first(where: { rest.hasPrefix($0 + " ") }) else { continue }
            let words = rest.dropFirst(type.count + 1).split(separator: " ")
            guard words.count >= 2 else { continue }
            let owner = Self.ownedTypes.contains(type) && words.count >= 3 ? String(words[words.count - 1]) : nil
            items.append(Item(dumpID: id, type: type, schema: String(words[0]), name: String(words[1]), owner: owner, line: line))
        }
        self.items = items
        self.header = header
    }

    /// Every role that owns an object in the archive.
    public var owners: Set<String> { Set(items.compactMap(\.owner)) }

    public func contains(type: String, schema: String, name: String) -> Bool {
        items.contains { $0.type == type && $0.schema == schema && $0.name == name }
    }

    /// TimescaleDB catalog tables whose data every restorable dump carries.
    public static let requiredCatalogData = [
        ("_timescaledb_catalog", "hypertable"), ("_timescaledb_catalog", "dimension"),
        ("_timescaledb_catalog", "dimension_slice"), ("_timescaledb_catalog", "chunk"),
        ("_timescaledb_catalog", "chunk_constraint"), ("_timescaledb_catalog", "metadata"),
        ("_timescaledb_config", "bgw_job"),
    ]

    /// What is missing for a restorable TimescaleDB archive: the extension, the catalog data, and
    /// one TABLE and TABLE DATA entry per chunk ("schema.name"). Empty when complete.
    public func missingTimescaleEntries(chunks: [String], timescaleInstalled: Bool) -> [String] {
        var missing: [String] = []
        guard timescaleInstalled else { return [] }
        if !items.contains(where: { $0.type == "EXTENSION" && $0.name == "timescaledb" }) {
            missing.append("EXTENSION timescaledb")
        }
        for (schema, name) in Self.requiredCatalogData where !contains(type: "TABLE DATA", schema: schema, name: name) {
            missing.append("TABLE DATA \(schema).\(name)")
        }
        let tables = Set(items.filter { $0.type == "TABLE" }.map { "\($0.schema).\($0.name)" })
        let data = Set(items.filter { $0.type == "TABLE DATA" }.map { "\($0.schema).\($0.name)" })
        for chunk in chunks {
            if !tables.contains(chunk) { missing.append("TABLE \(chunk)") }
            if !data.contains(chunk) { missing.append("TABLE DATA \(chunk)") }
        }
        return missing
    }
}

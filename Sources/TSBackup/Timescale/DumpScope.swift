import Foundation
import PostgresNIO

/// Which tables a backup leaves out, after refusing every choice that would silently lose
/// hypertable data.
///
/// `pg_dump -t hypertable` dumps an empty root table (the rows live in chunks), excluding a chunk
/// or `_timescaledb_internal` leaves catalog rows pointing at missing tables, and excluding a
/// catalog schema loses the hypertables themselves. Plain tables may be left out.
public struct DumpScope: Sendable, Equatable {
    /// pg_dump `--exclude-table` patterns, as given.
    public var excludedTablePatterns: [String] = []
    /// pg_dump `--exclude-schema` patterns, as given.
    public var excludedSchemaPatterns: [String] = []
    /// "schema.name" of every plain table left out by those patterns.
    public var excludedTables: Set<String> = []

    public init() {}

    public var pgDumpArguments: [String] {
        excludedTablePatterns.map { "--exclude-table=\($0)" } + excludedSchemaPatterns.map { "--exclude-schema=\($0)" }
    }

    /// Checks the requested filters against the database; throws a usage error that explains the
    /// data loss and points to the single-hypertable export for anything unsafe.
    public static func resolve(session: DatabaseSession, tables: [String], excludeTables: [String], excludeSchemas: [String]) async throws -> DumpScope {
        var scope = DumpScope()
        // The default: the whole database, nothing to check (and no round trip).
        if tables.isEmpty && excludeTables.isEmpty && excludeSchemas.isEmpty { return scope }
        let timescale = try await session.value(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", as: Bool.self)
        for pattern in tables {
            let matches = try await relations(matching: pattern, session: session, timescale: timescale)
            if let hypertable = matches.first(where: { $0.kind != .plain }) {
                throw unsafe(option: "--table", pattern: pattern, relation: hypertable)
            }
            throw TSBackupError(.usage, "--table \(pattern): tsbackup backs up whole databases, because a TimescaleDB database is only restorable as a whole (catalog, chunks and hypertables belong together). Leave out --table; to copy one hypertable use `tsbackup export-hypertable`, and for one plain table plain `pg_dump -t` is enough.")
        }
        for pattern in excludeTables {
            let matches = try await relations(matching: pattern, session: session, timescale: timescale)
            guard !matches.isEmpty else {
                throw TSBackupError(.usage, "--exclude-table \(pattern) matches no table in this database. Check the pattern (schema.name, * and ? as wildcards).")
            }
            if let unsafeMatch = matches.first(where: { $0.kind != .plain }) {
                throw unsafe(option: "--exclude-table", pattern: pattern, relation: unsafeMatch)
            }
            scope.excludedTablePatterns.append(pattern)
            scope.excludedTables.formUnion(matches.map(\.qualifiedName))
        }
        for pattern in excludeSchemas {
            let regex = regex(forPattern: pattern, schemaOnly: true)
            let schemas = try await session.rows(
                "SELECT nspname::text FROM pg_namespace WHERE nspname ~ \(regex.name)", as: String.self)
            guard !schemas.isEmpty else {
                throw TSBackupError(.usage, "--exclude-schema \(pattern) matches no schema in this database. Check the pattern.")
            }
            if let internalSchema = schemas.first(where: { $0.hasPrefix("_timescaledb") || $0.hasPrefix("timescaledb_") }) {
                throw TSBackupError(.usage, "--exclude-schema \(pattern) would leave out \(internalSchema), a TimescaleDB schema: the restored database would list chunks or hypertables that do not exist, and queries fail (\"relation ... not found\"). tsbackup refuses it; back up the whole database, or copy single hypertables with `tsbackup export-hypertable`.")
            }
            let contents = try await relations(inSchemas: schemas, session: session, timescale: timescale)
            if let unsafeMatch = contents.first(where: { $0.kind != .plain }) {
                throw unsafe(option: "--exclude-schema", pattern: pattern, relation: unsafeMatch)
            }
            scope.excludedSchemaPatterns.append(pattern)
            scope.excludedTables.formUnion(contents.map(\.qualifiedName))
        }
        try await refuseDanglingForeignKeys(scope, session: session)
        return scope
    }

    /// A table left out while a kept table's foreign key references it would make the restore
    /// fail at that constraint (and, on a hypertable, on every chunk's copy of it).
    static func refuseDanglingForeignKeys(_ scope: DumpScope, session: DatabaseSession) async throws {
        guard !scope.excludedTables.isEmpty else { return }
        let references = try await session.rows(
            """
            SELECT format('%s.%s', rn.nspname, r.relname), format('%s.%s', tn.nspname, t.relname), c.conname::text
            FROM pg_constraint c
            JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
            JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
            WHERE c.contype = 'f' AND tn.nspname NOT LIKE '\\_timescaledb\\_%'
            """, as: (String, String, String).self, purpose: "checking foreign keys of excluded tables")
        if let dangling = references.first(where: { scope.excludedTables.contains($0.0) && !scope.excludedTables.contains($0.1) }) {
            throw TSBackupError(.usage, "\(dangling.0) cannot be left out: the foreign key \(dangling.2) of \(dangling.1), which the backup keeps, references it, so a restore would fail at that constraint. Keep \(dangling.0) in the backup, or leave out \(dangling.1) too if it is a plain table.")
        }
    }

    struct Relation {
        enum Kind { case plain, hypertable, chunk, timescaleInternal }
        var schema: String
        var name: String
        var kind: Kind
        var qualifiedName: String { "\(schema).\(name)" }
    }

    static func unsafe(option: String, pattern: String, relation: Relation) -> TSBackupError {
        let what: String
        switch relation.kind {
        case .hypertable:
            what = "the hypertable \(relation.qualifiedName): its rows live in chunk tables, so filtering it dumps an empty root table (or leaves chunks without their hypertable), which pg_dump does silently"
        case .chunk:
            what = "the chunk \(relation.qualifiedName) of a hypertable: the restored catalog would point at a missing table and queries on the hypertable fail"
        case .timescaleInternal, .plain:
            what = "\(relation.qualifiedName), part of TimescaleDB's own catalog: the restore would not know its hypertables"
        }
        return TSBackupError(.usage, "\(option) \(pattern) would affect \(what). tsbackup refuses options that lose hypertable data. Back up the whole database, or use `tsbackup export-hypertable` to copy one hypertable (with its chunks and settings) on its own.")
    }

    static func relations(matching pattern: String, session: DatabaseSession, timescale: Bool) async throws -> [Relation] {
        let regex = regex(forPattern: pattern, schemaOnly: false)
        let schemaCondition = regex.schema.map { "n.nspname ~ \(SQLLiteral.quote($0))" }
            ?? "n.nspname = ANY (current_schemas(false))"
        return try await classify(condition: "\(schemaCondition) AND c.relname ~ \(SQLLiteral.quote(regex.name))",
                                  session: session, timescale: timescale)
    }

    static func relations(inSchemas schemas: [String], session: DatabaseSession, timescale: Bool) async throws -> [Relation] {
        let list = schemas.map { "\(SQLLiteral.quote($0))" }.joined(separator: ", ")
        return try await classify(condition: "n.nspname IN (\(list))", session: session, timescale: timescale)
    }

    static func classify(condition: String, session: DatabaseSession, timescale: Bool) async throws -> [Relation] {
        let kind = timescale
            ? """
              CASE WHEN EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h WHERE h.schema_name = n.nspname AND h.table_name = c.relname) THEN 'hypertable'
                   WHEN EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname) THEN 'chunk'
                   WHEN n.nspname LIKE '\\_timescaledb\\_%' OR n.nspname LIKE 'timescaledb\\_%' THEN 'internal'
                   ELSE 'plain' END
              """
            : "'plain'"
        return try await session.rows(
            PostgresQuery(unsafeSQL: """
            SELECT n.nspname::text, c.relname::text, \(kind)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm', 'f', 'v') AND \(condition) ORDER BY 1, 2
            """), as: (String, String, String).self, purpose: "checking table filters"
        ).map { row in
            let kind: Relation.Kind = switch row.2 {
            case "hypertable": .hypertable
            case "chunk": .chunk
            case "internal": .timescaleInternal
            default: .plain
            }
            return Relation(schema: row.0, name: row.1, kind: kind)
        }
    }

    /// psql/pg_dump pattern rules: an unquoted dot separates schema and name, `*` and `?` are
    /// wildcards, unquoted letters fold to lower case, double quotes keep text as is.
    static func regex(forPattern pattern: String, schemaOnly: Bool) -> (schema: String?, name: String) {
        var parts: [String] = [""]
        var inQuotes = false
        var chars = Array(pattern)[...]
        while let c = chars.first {
            chars = chars.dropFirst()
            switch c {
            case "\"":
                if inQuotes, chars.first == "\"" { parts[parts.count - 1] += "\""; chars = chars.dropFirst() } else { inQuotes.toggle() }
            case "." where !inQuotes && !schemaOnly:
                parts.append("")
            case "*" where !inQuotes:
                parts[parts.count - 1] += ".*"
            case "?" where !inQuotes:
                parts[parts.count - 1] += "."
            default:
                let text = inQuotes ? String(c) : String(c).lowercased()
                parts[parts.count - 1] += NSRegularExpressionEscape(text)
            }
        }
        let anchored = parts.map { "^(\($0))$" }
        if anchored.count >= 2 { return (anchored[anchored.count - 2], anchored[anchored.count - 1]) }
        return (nil, anchored[0])
    }

    private static func NSRegularExpressionEscape(_ text: String) -> String {
        let special = Set("\\^$.|+()[]{}*?")
        return text.map { special.contains($0) ? "\\\($0)" : String($0) }.joined()
    }
}

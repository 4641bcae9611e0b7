import Foundation

/// Decides whether a stored hypertable definition (an export's schema.sql, from
/// `pg_dump --schema-only --table`) holds only what import-hypertable expects, before the import
/// runs any of it.
///
/// The definition comes from the repository, and whoever can write an unencrypted repository can
/// write it. So every statement is read with ``SQLScript`` (PostgreSQL's quoting rules), must be
/// of a kind pg_dump writes for one table (CREATE TABLE, ALTER TABLE, CREATE INDEX, CREATE
/// TRIGGER, sequences, COMMENT, GRANT/REVOKE, policies, statistics), must fit the pg_dump object
/// it sits under, and must act on the exported table or on a sequence or index the definition
/// itself creates. A `DO` block, `CREATE FUNCTION`, a rule, `COPY`, or a statement on another
/// table refuses the whole import, naming the statement.
///
/// Not checked: the expressions inside an accepted statement (a CHECK constraint or column
/// default may call any function the target already has, with the importing role's rights).
enum DefinitionPolicy {
    /// The statement kinds (leading words) each pg_dump object type may hold.
    static let kinds: [String: [[String]]] = [
        "TABLE": [["create", "table"], ["create", "unlogged", "table"], ["alter", "table"]],
        "SEQUENCE": [["create", "sequence"], ["alter", "sequence"], ["alter", "table"]],
        "SEQUENCE OWNED BY": [["alter", "sequence"]],
        "DEFAULT": [["alter", "table"]],
        "CONSTRAINT": [["alter", "table"]],
        "FK CONSTRAINT": [["alter", "table"]],
        "CHECK CONSTRAINT": [["alter", "table"]],
        "ROW SECURITY": [["alter", "table"]],
        "INDEX": [["create", "index"], ["create", "unique", "index"]],
        "TRIGGER": [["create", "trigger"], ["create", "constraint", "trigger"]],
        "COMMENT": [["comment", "on"]],
        "ACL": [["grant"], ["revoke"]],
        "POLICY": [["create", "policy"]],
        "STATISTICS": [["create", "statistics"], ["alter", "statistics"]],
    ]

    /// Throws naming the first statement of `text` the importer would not expect.
    static func check(_ text: String, table: (schema: String, name: String), file: String, id: String) throws {
        func refuse(_ statement: String, line: Int?, object: TableDefinition.Object?, _ reason: String) -> TSBackupError {
            let place = [line.map { "line \($0)" }, object.map { "object \"\($0.name)\" (\($0.type))" }].compactMap { $0 }.joined(separator: ", ")
            return TSBackupError(.failed, "The definition \(file) of export \(id) holds\(place.isEmpty ? "" : " at \(place)") `\(statement)`: \(reason). import-hypertable runs only the statements pg_dump writes for one table, so it refused the import before running anything on the target. The repository may have been changed by someone else: check it, and export the hypertable again.")
        }
        // 1. The whole file as PostgreSQL would read it: the preamble's SET lines and pg_dump's
        //    \restrict lines, then statements of the known kinds only.
        let statements = SQLScript.split(text)
        let created = createdNames(statements)
        let allowed = Set(kinds.values.joined())
        for statement in statements {
            if statement.isMetaCommand {
                let command = statement.tokens[0].value.split(whereSeparator: \.isWhitespace).first ?? ""
                guard command == "\\restrict" || command == "\\unrestrict" else {
                    throw refuse(statement.excerpt(), line: statement.line, object: nil, "a psql meta-command")
                }
                continue
            }
            if isPreamble(statement) { continue }
            guard let kind = kind(of: statement), allowed.contains(kind) else {
                throw refuse(statement.excerpt(), line: statement.line, object: nil, "not a statement pg_dump writes for a table")
            }
            if let reason = problem(statement, kind: kind, table: table, created: created) {
                throw refuse(statement.excerpt(), line: statement.line, object: nil, reason)
            }
        }
        // 2. Each statement as the importer will send it, under the object it belongs to: one
        //    statement (however the importer split the text), of a kind that object may hold.
        for object in TableDefinition(pgDumpOutput: text).objects {
            guard let expected = kinds[object.type] else {
                throw refuse(object.statements.first.map { SQLScript.Statement(tokens: [], text: $0, line: 0).excerpt() } ?? "",
                             line: nil, object: object, "pg_dump object type \(object.type) is not part of a table's definition")
            }
            for sent in object.statements {
                let parsed = SQLScript.split(sent)
                guard parsed.count == 1, let statement = parsed.first else {
                    throw refuse(SQLScript.Statement(tokens: [], text: sent, line: 0).excerpt(), line: nil, object: object, "more than one statement where one is sent")
                }
                guard let kind = kind(of: statement), expected.contains(kind) else {
                    throw refuse(statement.excerpt(), line: nil, object: object, "not a statement of a \(object.type)")
                }
                if let reason = problem(statement, kind: kind, table: table, created: created) {
                    throw refuse(statement.excerpt(), line: nil, object: object, reason)
                }
            }
        }
    }

    /// `SET x = ...` and `SELECT pg_catalog.set_config('search_path', '', false)`: pg_dump's
    /// preamble, which the importer does not run.
    static func isPreamble(_ statement: SQLScript.Statement) -> Bool {
        let t = statement.tokens
        if statement.leadingWords(1) == ["set"], t.count >= 3, t[1].kind == .word {
            // A plain setting: no parentheses, so no function call hides in it.
            return !t.contains { $0.kind == .symbol && ($0.value == "(" || $0.value == ")") }
        }
        let values = t.map { $0.kind == .string ? "'\($0.value)'" : $0.value }
        return values == ["select", "pg_catalog", ".", "set_config", "(", "'search_path'", ",", "''", ",", "false", ")"]
    }

    /// The statement's kind as listed in ``kinds``, or nil.
    static func kind(of statement: SQLScript.Statement) -> [String]? {
        let words = statement.leadingWords(3)
        for length in [3, 2, 1] where words.count >= length {
            let prefix = Array(words.prefix(length))
            if kinds.values.contains(where: { $0.contains(prefix) }) { return prefix }
        }
        return nil
    }

    /// Sequences and indexes the definition creates itself (CREATE SEQUENCE, identity columns'
    /// SEQUENCE NAME, CREATE INDEX), as [schema, name]; statements may act on them too.
    static func createdNames(_ statements: [SQLScript.Statement]) -> Set<[String]> {
        var names = Set<[String]>()
        for statement in statements {
            let t = statement.tokens
            switch kind(of: statement) {
            case ["create", "sequence"]?:
                if let (name, _) = qualifiedName(t, from: skip(["if", "not", "exists"], in: t, from: 2)) { names.insert(name) }
            case ["create", "index"]?, ["create", "unique", "index"]?:
                let start = skip(["concurrently", "if", "not", "exists"], in: t, from: kind(of: statement)!.count)
                if let (name, _) = qualifiedName(t, from: start) {
                    // An index lives in its table's schema.
                    names.insert(name.count == 1 ? [subjectSchema(t) ?? "", name[0]] : name)
                }
            default:
                break
            }
            for i in t.indices.dropLast(2) where t[i].kind == .word && t[i].value == "sequence" && t[i + 1].kind == .word && t[i + 1].value == "name" {
                if let (name, _) = qualifiedName(t, from: i + 2) { names.insert(name) }
            }
        }
        return names
    }

    /// Why an accepted kind of statement still may not run, or nil.
    static func problem(_ statement: SQLScript.Statement, kind: [String], table: (schema: String, name: String),
                        created: Set<[String]>) -> String? {
        let t = statement.tokens
        let tableName = [table.schema, table.name]
        func isOurs(_ name: [String]) -> Bool { name == tableName || created.contains(name) }
        let subject: [String]?
        switch kind {
        case ["create", "table"], ["create", "unlogged", "table"]:
            // CREATE TABLE ... AS SELECT would run a query.
            if depthZero(t).contains(where: { $0.kind == .word && ["as", "execute"].contains($0.value) }) {
                return "a CREATE TABLE ... AS, which runs a query"
            }
            subject = qualifiedName(t, from: skip(["if", "not", "exists"], in: t, from: kind.count))?.name
            if subject != tableName { return "it creates a table other than \(table.schema).\(table.name)" }
            return nil
        case ["alter", "table"], ["alter", "sequence"], ["create", "sequence"], ["alter", "statistics"]:
            subject = qualifiedName(t, from: skip(["only", "if", "exists", "not"], in: t, from: kind.count))?.name
        case ["create", "index"], ["create", "unique", "index"], ["create", "trigger"], ["create", "constraint", "trigger"], ["create", "policy"]:
            subject = after("on", in: t, skipping: ["only"])
        case ["create", "statistics"]:
            subject = after("from", in: t, skipping: [])
        case ["grant"], ["revoke"]:
            subject = after("on", in: t, skipping: ["table", "sequence"])
            // GRANT ... ON TABLE ours, theirs TO ...: every object named must be ours, so the
            // one name must be followed by TO (FROM for REVOKE), not by a list.
            if let on = t.firstIndex(where: { $0.kind == .word && $0.value == "on" }),
               let (_, next) = qualifiedName(t, from: skip(["table", "sequence"], in: t, from: on + 1)),
               !(next < t.count && t[next].kind == .word && ["to", "from"].contains(t[next].value)) {
                return "it names more than one object, or something other than TO or FROM follows the object"
            }
        case ["comment", "on"]:
            guard t.count > 3, t[2].kind == .word else { return "a COMMENT on something unnamed" }
            switch t[2].value {
            case "table", "index", "sequence":
                subject = qualifiedName(t, from: 3)?.name
            case "column":
                subject = qualifiedName(t, from: 3).map { Array($0.name.prefix(2)) }
            case "constraint", "trigger", "policy":
                subject = after("on", in: t, skipping: ["domain"])
            default:
                return "a COMMENT on a \(t[2].text), not on the table or its parts"
            }
        default:
            return "not a statement pg_dump writes for a table"
        }
        guard let subject, isOurs(subject) else {
            return "it acts on \(subject.map { $0.joined(separator: ".") } ?? "an unnamed object"), not on \(table.schema).\(table.name) or what its definition creates"
        }
        return nil
    }

    // MARK: Token helpers

    /// Tokens outside parentheses and brackets.
    static func depthZero(_ tokens: [SQLScript.Token]) -> [SQLScript.Token] {
        var depth = 0
        var out: [SQLScript.Token] = []
        for token in tokens {
            if token.kind == .symbol, token.value == "(" || token.value == "[" { depth += 1; continue }
            if token.kind == .symbol, token.value == ")" || token.value == "]" { depth -= 1; continue }
            if depth == 0 { out.append(token) }
        }
        return out
    }

    /// The index after `from` and any of `words` that follow it.
    static func skip(_ words: Set<String>, in tokens: [SQLScript.Token], from: Int) -> Int {
        var i = from
        while i < tokens.count, tokens[i].kind == .word, words.contains(tokens[i].value) { i += 1 }
        return i
    }

    /// `name`, `schema.name` or `schema.table.column` at `i`: its parts and the index after it.
    static func qualifiedName(_ tokens: [SQLScript.Token], from i: Int) -> (name: [String], next: Int)? {
        var parts: [String] = []
        var j = i
        while j < tokens.count, tokens[j].kind == .word || tokens[j].kind == .quotedIdentifier {
            parts.append(tokens[j].value)
            j += 1
            guard j + 1 < tokens.count, tokens[j].kind == .symbol, tokens[j].value == "." else { break }
            j += 1
        }
        return parts.isEmpty ? nil : (parts, j)
    }

    /// The qualified name after the first depth-zero `keyword`, past any of `skipping`.
    static func after(_ keyword: String, in tokens: [SQLScript.Token], skipping: Set<String>) -> [String]? {
        var depth = 0
        for (i, token) in tokens.enumerated() {
            if token.kind == .symbol, token.value == "(" { depth += 1 }
            if token.kind == .symbol, token.value == ")" { depth -= 1 }
            if depth == 0, token.kind == .word, token.value == keyword {
                return qualifiedName(tokens, from: skip(skipping, in: tokens, from: i + 1))?.name
            }
        }
        return nil
    }

    /// The schema of the table a CREATE INDEX is on.
    static func subjectSchema(_ tokens: [SQLScript.Token]) -> String? {
        guard let name = after("on", in: tokens, skipping: ["only"]), name.count == 2 else { return nil }
        return name[0]
    }
}

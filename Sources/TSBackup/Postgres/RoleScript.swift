import Foundation

/// A backup's roles.sql (`pg_dumpall --roles-only --no-role-passwords`, or tsbackup's own
/// rebuild from pg_roles), read before `restore --create-roles` runs any of it.
///
/// The file comes from the repository, and whoever can write an unencrypted repository can write
/// it, so it is parsed rather than run: each statement must be one of the kinds these writers
/// produce, or the whole file is refused, naming the statement. Of those kinds only `CREATE ROLE
/// name` and `ALTER ROLE name WITH <attributes>` are ever executed, only for the roles being
/// created, and they are rebuilt from the parsed name and attributes (never passed on as
/// written), with a password refused.
struct RoleScript: Sendable, Equatable {
    /// Per role: the statements that define it, rebuilt, in the file's order.
    private(set) var definitions: [String: [String]] = [:]

    /// The attribute keywords of ALTER ROLE ... WITH that pg_dumpall writes.
    static let attributes: Set<String> = [
        "superuser", "nosuperuser", "inherit", "noinherit", "createrole", "nocreaterole", "createdb", "nocreatedb",
        "login", "nologin", "replication", "noreplication", "bypassrls", "nobypassrls",
    ]

    /// Parses `script`; throws naming the first statement that is not a role definition.
    init(parsing script: String, file: String = "roles.sql") throws {
        for statement in SQLScript.split(script) {
            if let refusal = Self.refusal(statement) {
                throw TSBackupError(.failed, "The backup's \(file) holds, at line \(statement.line), `\(statement.excerpt())`: \(refusal). tsbackup runs only CREATE ROLE and ALTER ROLE ... WITH statements from that file, so it refused the restore before running anything on the target. The repository may have been changed by someone else: check it, take a new backup, or create the roles yourself and restore without --create-roles.")
            }
            guard let (role, sql) = Self.definition(statement) else { continue }
            definitions[role, default: []].append(sql)
        }
    }

    /// Reads and parses `file` of the entry at `directory`; a missing file is an empty script.
    static func load(directory: String, file: String) throws -> RoleScript {
        let path = try EntryPath.resolve(file, in: directory)
        guard FileManager.default.fileExists(atPath: path) else { return try RoleScript(parsing: "", file: file) }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw FileSystem.ioError("read \(path)", underlying: error)
        }
        return try RoleScript(parsing: text, file: file)
    }

    /// The statements that create `role`, as tsbackup rebuilt them; empty when the file has none.
    func statements(for role: String) -> [String] {
        definitions[role] ?? []
    }

    /// Why `statement` is refused, or nil when it is a kind the role writers produce.
    static func refusal(_ statement: SQLScript.Statement) -> String? {
        let tokens = statement.tokens
        if statement.isMetaCommand {
            let command = tokens[0].value.split(whereSeparator: \.isWhitespace).first ?? ""
            return ["\\restrict", "\\unrestrict"].contains(command) ? nil : "a psql meta-command other than \\restrict"
        }
        let words = statement.leadingWords(2)
        switch words.first {
        case "set":
            // Session settings of the file's preamble: recognised, never run.
            return tokens.count >= 3 && isName(tokens[1]) ? nil : "not a plain SET"
        case "create" where words == ["create", "role"]:
            return tokens.count == 3 && isName(tokens[2]) ? nil : "a CREATE ROLE with more than a role name"
        case "alter" where words == ["alter", "role"]:
            guard tokens.count >= 4, isName(tokens[2]) else { return "not an ALTER ROLE of one role" }
            if tokens[3].kind == .word, tokens[3].value == "with" {
                return attributeRefusal(Array(tokens.dropFirst(4)))
            }
            // Per-role settings (ALTER ROLE r SET ..., ALTER ROLE r IN DATABASE d SET ...): recognised, never run.
            if tokens[3].kind == .word, ["set", "in", "reset"].contains(tokens[3].value) { return nil }
            return "an ALTER ROLE that is neither WITH attributes nor SET"
        case "comment" where statement.leadingWords(3) == ["comment", "on", "role"]:
            return tokens.count == 6 && isName(tokens[3]) && tokens[4].value == "is" && tokens[5].kind == .string
                ? nil : "a COMMENT ON ROLE with more than a comment"
        case "grant":
            // Role memberships: GRANT a, b TO c [WITH ADMIN OPTION] [GRANTED BY d]. Recognised, never run.
            let allowedWords: Set<String> = ["grant", "to", "with", "admin", "inherit", "set", "option", "true", "false", "granted", "by"]
            let plain = tokens.allSatisfy { token in
                token.kind == .quotedIdentifier || (token.kind == .symbol && token.value == ",")
                    || (token.kind == .word && (allowedWords.contains(token.value) || !reservedInGrant.contains(token.value)))
            }
            return plain && tokens.contains(where: { $0.kind == .word && $0.value == "to" }) ? nil : "a GRANT other than a role membership"
        default:
            return "not a role definition"
        }
    }

    /// Words that turn a GRANT into something other than a membership (`GRANT ... ON ...`).
    private static let reservedInGrant: Set<String> = ["on", "all", "privileges", "select", "insert", "update", "delete", "usage", "execute", "create", "connect", "temporary", "temp", "truncate", "references", "trigger", "maintain"]

    private static func isName(_ token: SQLScript.Token) -> Bool {
        token.kind == .word || token.kind == .quotedIdentifier
    }

    private static func attributeRefusal(_ tokens: [SQLScript.Token]) -> String? {
        var i = 0
        while i < tokens.count {
            let token = tokens[i]
            guard token.kind == .word else { return "an ALTER ROLE attribute that is not a keyword" }
            if attributes.contains(token.value) { i += 1; continue }
            switch token.value {
            case "password", "encrypted":
                return "an ALTER ROLE that sets a password (backups store roles without passwords)"
            case "connection":
                guard i + 2 < tokens.count, tokens[i + 1].value == "limit" else { return "CONNECTION without LIMIT" }
                var j = i + 2
                if j < tokens.count, tokens[j].kind == .symbol, tokens[j].value == "-" { j += 1 }
                guard j < tokens.count, tokens[j].kind == .number, Int(tokens[j].value) != nil else { return "a CONNECTION LIMIT that is not a number" }
                i = j + 1
            case "valid":
                guard i + 2 < tokens.count, tokens[i + 1].value == "until", tokens[i + 2].kind == .string else { return "a VALID UNTIL without a date" }
                i += 3
            default:
                return "an ALTER ROLE attribute tsbackup does not know (\(token.text))"
            }
        }
        return nil
    }

    /// The rebuilt statement when `statement` (already accepted) defines a role.
    private static func definition(_ statement: SQLScript.Statement) -> (role: String, sql: String)? {
        let tokens = statement.tokens
        guard !statement.isMetaCommand, tokens.count >= 3, isName(tokens[2]) else { return nil }
        let role = tokens[2].value
        switch statement.leadingWords(2) {
        case ["create", "role"]:
            return (role, "CREATE ROLE \(SQLIdentifier.quote(role))")
        case ["alter", "role"] where tokens.count >= 4 && tokens[3].kind == .word && tokens[3].value == "with":
            var parts: [String] = []
            var i = 4
            while i < tokens.count {
                let token = tokens[i]
                if attributes.contains(token.value) {
                    parts.append(token.value.uppercased()); i += 1
                } else if token.value == "connection" {
                    var j = i + 2
                    var number = ""
                    if tokens[j].value == "-" { number = "-"; j += 1 }
                    number += tokens[j].value
                    parts.append("CONNECTION LIMIT \(Int(number) ?? -1)")
                    i = j + 1
                } else if token.value == "valid" {
                    parts.append("VALID UNTIL \(SQLLiteral.quote(tokens[i + 2].value))")
                    i += 3
                } else {
                    i += 1
                }
            }
            return parts.isEmpty ? nil : (role, "ALTER ROLE \(SQLIdentifier.quote(role)) WITH \(parts.joined(separator: " "))")
        default:
            return nil
        }
    }
}

import Foundation

/// The one way tsbackup writes a name into SQL text: always double-quoted, inner quotes doubled.
///
/// Names come from manifests, and a repository that is not encrypted cannot be authenticated:
/// a schema called `x"; DROP DATABASE y; --` must stay one identifier. Quoting every name (never
/// "bare when it looks plain") keeps this function free of keyword lists, and quoting is all it
/// takes: inside a quoted identifier only `"` is special. Values go in as bind parameters where
/// the statement takes them; where it does not (utility statements, function arguments built
/// into SQL text) they go through ``SQLLiteral``.
public enum SQLIdentifier {
    /// `name` as a quoted identifier: `a"b` -> `"a""b"`.
    public static func quote(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `"schema"."name"`.
    public static func qualified(_ schema: String, _ name: String) -> String {
        quote(schema) + "." + quote(name)
    }
}

/// String constants in SQL text, for the statements that cannot take bind parameters.
public enum SQLLiteral {
    /// `value` as a string constant: `it's` -> `'it''s'`. A value with a backslash is written as
    /// an escape string (`E'a\\b'`), which reads the same whatever `standard_conforming_strings`
    /// the target's database sets.
    public static func quote(_ value: String) -> String {
        let quoted = value.replacingOccurrences(of: "'", with: "''")
        guard value.contains("\\") else { return "'" + quoted + "'" }
        return "E'" + quoted.replacingOccurrences(of: "\\", with: "\\\\") + "'"
    }
}

/// Quotes an SQL identifier; the same as ``SQLIdentifier/quote(_:)``, kept under this name for
/// the call sites that use it.
public func quoteIdentifier(_ name: String) -> String {
    SQLIdentifier.quote(name)
}

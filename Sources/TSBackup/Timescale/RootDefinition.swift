import Foundation
import PostgresNIO

/// The definition of a hypertable's root table, written by tsbackup from the system catalog for
/// the batched chunk path.
///
/// pg_dump cannot dump a root without locking all of its chunks (`LOCK TABLE` recurses to
/// inheritance children), so for hypertables past the lock limit the root's DDL is built here
/// with PostgreSQL's own deparsers (`format_type`, `pg_get_expr`, `pg_get_constraintdef`,
/// `pg_get_indexdef`, `pg_get_triggerdef`), with an empty `search_path` so every name is
/// qualified, as pg_dump does. Only a known subset is rebuilt: a root using anything else
/// (identity columns, owned sequences, row-level security, rules, column privileges, storage or
/// statistics settings, objects other than views that depend on it...) is ``Outcome/unsupported(_:)``
/// and stays with the main pg_dump. The restore compares the root's indexes, constraints and
/// foreign keys with the counts recorded at backup, so a missed object cannot pass unnoticed.
public struct RootDefinition: Codable, Sendable, Equatable {
    public var schema: String
    public var name: String
    /// Run before the chunks are created: the table, owner, CHECK constraints, comments, grants.
    public var preData: [String]
    /// Run after the data: PRIMARY KEY/UNIQUE/EXCLUDE constraints, indexes, triggers, foreign keys.
    public var postData: [String]

    enum CodingKeys: String, CodingKey {
        case schema, name
        case preData = "pre_data"
        case postData = "post_data"
    }

    enum Outcome {
        case supported(RootDefinition)
        case unsupported(String)
    }

    /// A pg_dump/psql pattern matching exactly `schema.name`.
    static func pattern(schema: String, name: String) -> String {
        quotePattern(schema) + "." + quotePattern(name)
    }

    /// Text matched literally inside a pattern: double quotes, with embedded quotes doubled.
    static func quotePattern(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Reads the root's definition in the session's transaction.
    static func read(_ session: DatabaseSession, schema: String, name: String) async throws -> Outcome {
        let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(name))"
        let oid = try await session.value("SELECT format('%I.%I', \(schema)::text, \(name)::text)::regclass::oid::int8",
                                          as: Int64.self, purpose: "finding the root table of \(schema).\(name)")
        if let reason = try await unsupportedFeature(session, oid: oid) {
            return .unsupported(reason)
        }
        // Deparse with every name qualified; restore the caller's search_path afterwards.
        let path = try await session.value("SELECT current_setting('search_path')", as: String.self)
        try await session.query("SELECT set_config('search_path', '', true)")
        do {
            let definition = try await deparse(session, oid: oid, qualified: qualified, schema: schema, name: name)
            try await session.query("SELECT set_config('search_path', \(path), true)")
            return .supported(definition)
        } catch {
            _ = try? await session.query("SELECT set_config('search_path', \(path), true)")
            throw error
        }
    }

    /// The first feature of the root that ``deparse`` does not rebuild, or nil.
    static func unsupportedFeature(_ session: DatabaseSession, oid: Int64) async throws -> String? {
        let checks: [(String, String)] = [
            ("it is not an ordinary logged heap table in the default tablespace, or has row-level security, rules or a non-default replica identity",
             """
             SELECT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = $1::oid AND (c.relkind <> 'r' OR c.relpersistence <> 'p' OR c.reloftype <> 0
                 OR c.relam <> (SELECT oid FROM pg_am WHERE amname = 'heap')
                 OR c.relrowsecurity OR c.relforcerowsecurity OR c.relhasrules OR c.reltablespace <> 0 OR c.relreplident <> 'd'))
             """),
            ("it inherits from another table",
             "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1::oid)"),
            // attoptions is left out: TimescaleDB keeps its own entries there, which pg_dump does not dump either.
            ("a column has an identity, a privilege, a storage, compression or statistics setting, or foreign-data options",
             """
             SELECT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND (a.attidentity <> '' OR a.attacl IS NOT NULL OR a.attstorage <> t.typstorage OR a.attcompression <> ''
                        OR a.attstattarget >= 0 OR a.attfdwoptions IS NOT NULL))
             """),
            ("a constraint is NOT VALID, deferrable or a NO INHERIT check, or a foreign key references it",
             """
             SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE (conrelid = $1::oid AND (NOT convalidated OR (connoinherit AND contype = 'c') OR condeferrable))
                                                        OR (confrelid = $1::oid AND contype = 'f'))
             """),
            ("an index is clustered, in a non-default tablespace or has statistics settings",
             """
             SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid = $1::oid AND (i.indisclustered OR c.reltablespace <> 0 OR NOT i.indisvalid OR i.indisreplident))
             """),
            ("a trigger is disabled or internal to a constraint",
             "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::oid AND NOT tgisinternal AND (tgenabled <> 'O' OR tgconstraint <> 0))"),
            ("its owner's own privileges were changed, or a privilege was granted by another role",
             """
             SELECT EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) x WHERE c.oid = $1::oid AND x.grantor <> c.relowner)
                 OR EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = $1::oid AND c.relacl IS NOT NULL
                              AND (SELECT count(*) FROM aclexplode(c.relacl) x WHERE x.grantee = c.relowner) <> 7)
             """),
            ("an object other than its chunks, indexes, constraints, triggers and views depends on it or its row type (e.g. an owned sequence, a policy, a publication, extended statistics, a function)",
             """
             SELECT EXISTS (SELECT 1 FROM pg_depend d
                 WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::oid)
                        OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = (SELECT reltype FROM pg_class WHERE oid = $1::oid)))
                   AND d.deptype <> 'i'
                   AND NOT (d.classid = 'pg_class'::regclass AND EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = d.objid AND inhparent = $1::oid))
                   AND NOT (d.classid = 'pg_class'::regclass AND EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = d.objid AND indrelid = $1::oid))
                   AND NOT (d.classid = 'pg_constraint'::regclass AND EXISTS (SELECT 1 FROM pg_constraint WHERE oid = d.objid AND conrelid = $1::oid))
                   AND NOT (d.classid = 'pg_trigger'::regclass AND EXISTS (SELECT 1 FROM pg_trigger WHERE oid = d.objid AND tgrelid = $1::oid))
                   AND NOT (d.classid = 'pg_attrdef'::regclass)
                   AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (
                            SELECT 1 FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = d.objid AND v.relkind = 'v'))
                   AND NOT (d.classid = 'pg_type'::regclass AND d.objid = (SELECT reltype FROM pg_class WHERE oid = $1::oid)))
             """),
            ("an index, constraint or trigger has a comment or a security label is set",
             """
             SELECT EXISTS (SELECT 1 FROM pg_description WHERE objoid IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1::oid)
                                                            OR objoid IN (SELECT oid FROM pg_constraint WHERE conrelid = $1::oid)
                                                            OR objoid IN (SELECT oid FROM pg_trigger WHERE tgrelid = $1::oid))
                 OR EXISTS (SELECT 1 FROM pg_seclabel WHERE objoid = $1::oid)
             """),
        ]
        for (reason, sql) in checks {
            var bindings = PostgresBindings()
            bindings.append(oid)
            let found = try await session.value(PostgresQuery(unsafeSQL: sql, binds: bindings), as: Bool.self,
                                                purpose: "checking whether tsbackup can rebuild a hypertable's root table")
            if found { return "root table: \(reason)" }
        }
        return nil
    }

    static func deparse(_ session: DatabaseSession, oid: Int64, qualified: String, schema: String, name: String) async throws -> RootDefinition {
        func statements(_ sql: String) async throws -> [String] {
            var bindings = PostgresBindings()
            bindings.append(oid)
            bindings.append(qualified)
            return try await session.values(PostgresQuery(unsafeSQL: sql, binds: bindings), as: String.self,
                                            purpose: "writing the definition of \(qualified)")
        }
        let create = try await statements(
            """
            SELECT format('CREATE TABLE %s (%s)%s', $2::text,
                     coalesce(string_agg(format('%I %s%s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                              THEN (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname) FROM pg_collation co
                                    JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) ELSE '' END,
                         CASE WHEN a.attgenerated = 's' THEN format(' GENERATED ALWAYS AS (%s) STORED', pg_get_expr(d.adbin, d.adrelid))
                              WHEN d.adbin IS NOT NULL THEN ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) ELSE '' END,
                         CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY a.attnum), ''),
                     (SELECT CASE WHEN c.reloptions IS NULL THEN '' ELSE ' WITH (' || array_to_string(c.reloptions, ', ') || ')' END
                      FROM pg_class c WHERE c.oid = $1::oid))
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
            """)
        let owner = try await statements(
            "SELECT format('ALTER TABLE %s OWNER TO %I', $2::text, pg_get_userbyid(relowner)) FROM pg_class WHERE oid = $1::oid")
        let checks = try await statements(
            """
            SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', $2::text, conname, pg_get_constraintdef(oid))
            FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'c' ORDER BY conname
            """)
        let comments = try await statements(
            """
            SELECT format('COMMENT ON TABLE %s IS %L', $2::text, description) FROM pg_description
            WHERE objoid = $1::oid AND classoid = 'pg_class'::regclass AND objsubid = 0
            UNION ALL
            SELECT format('COMMENT ON COLUMN %s.%I IS %L', $2::text, a.attname, d.description) FROM pg_description d
            JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
            WHERE d.objoid = $1::oid AND d.classoid = 'pg_class'::regclass AND d.objsubid > 0
            """)
        let grants = try await statements(
            """
            SELECT format('GRANT %s ON TABLE %s TO %s%s', x.privilege_type, $2::text,
                          CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END,
                          CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
            FROM pg_class c, aclexplode(c.relacl) x WHERE c.oid = $1::oid AND x.grantee <> c.relowner
            ORDER BY x.grantee, x.privilege_type
            """)
        let constraints = try await statements(
            """
            SELECT format('ALTER TABLE ONLY %s ADD CONSTRAINT %I %s', $2::text, conname, pg_get_constraintdef(oid))
            FROM pg_constraint WHERE conrelid = $1::oid AND contype IN ('p', 'u', 'x') ORDER BY conname
            """)
        let indexes = try await statements(
            """
            SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
            WHERE i.indrelid = $1::oid AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = $1::oid)
            ORDER BY i.indexrelid
            """)
        let triggers = try await statements(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::oid AND NOT tgisinternal ORDER BY tgname")
        let foreignKeys = try await statements(
            """
            SELECT format('ALTER TABLE ONLY %s ADD CONSTRAINT %I %s', $2::text, conname, pg_get_constraintdef(oid))
            FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'f' ORDER BY conname
            """)
        return RootDefinition(schema: schema, name: name, preData: create + owner + checks + comments + grants,
                              postData: constraints + indexes + triggers + foreignKeys)
    }
}

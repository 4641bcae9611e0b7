// libFuzzer target: SQL a repository stores and tsbackup runs on a restore target: roles.sql
// (RoleScript: only CREATE/ALTER ROLE for the roles being created) and a hypertable export's
// definition (DefinitionPolicy, then TableDefinition and the renaming import does), through
// both lexers (SQLScript, SQLText).
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSQL(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let script = FuzzInput.text(bytes, count)
    for statement in SQLScript.split(script) {
        _ = statement.leadingWords(3)
        _ = statement.excerpt()
    }
    if let roles = try? RoleScript(parsing: script) {
        for role in roles.definitions.keys { _ = roles.statements(for: role) }
    }
    let table = (schema: "public", name: "conditions")
    if (try? DefinitionPolicy.check(script, table: table, file: "definition.sql", id: "20261127T120000Z")) != nil {
        // Only a definition the policy lets through reaches the importer.
        let definition = TableDefinition(pgDumpOutput: script)
        let renamer = DefinitionRenamer(definition: definition, from: table, to: (schema: "other schema", name: "Renamed\"Table"))
        for object in definition.objects {
            _ = TableDefinition.isInsertBlocker(object)
            for statement in object.statements {
                _ = renamer.rewrite(statement)
            }
        }
        _ = TableDefinition.removing(from: script) { TableDefinition.isInsertBlocker($0) }
    }
    _ = SQLText.statements(script)
    _ = SQLText.qualifiedNames(after: "references", in: script)
    return 0
}

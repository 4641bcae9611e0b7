import Foundation
import PostgresNIO
import Testing
import TSBackup
import TSBackupSandbox

/// Rewrites a file of an entry and its hash in the manifest, as anyone who can write an
/// unencrypted repository can: afterwards the entry still verifies.
func tamper(entry directory: String, file: String, with text: String) throws {
    try text.write(toFile: directory + "/" + file, atomically: false, encoding: .utf8)
    let (hex, bytes) = try FileSystem.sha256(of: directory + "/" + file)
    let manifestPath = directory + "/manifest.json"
    let data = try Data(contentsOf: URL(fileURLWithPath: manifestPath))
    if var manifest = try? JSONOutput.decode(BackupManifest.self, from: data), manifest.kind != "hypertable" {
        let index = try #require(manifest.files.firstIndex { $0.path == file })
        manifest.files[index].sha256 = hex
        manifest.files[index].bytes = bytes
        try JSONOutput.encode(manifest).write(toFile: manifestPath, atomically: false, encoding: .utf8)
    } else {
        var manifest = try JSONOutput.decode(HypertableManifest.self, from: data)
        let index = try #require(manifest.files.firstIndex { $0.path == file })
        manifest.files[index].sha256 = hex
        manifest.files[index].bytes = bytes
        try JSONOutput.encode(manifest).write(toFile: manifestPath, atomically: false, encoding: .utf8)
    }
}

/// The sample database's public.events exported into a fresh scratch repository: the starting
/// point of every test that tampers with an export. The caller removes `scratch`.
struct ExportedEvents {
    let cluster: SandboxCluster
    /// The sample database public.events was exported from.
    let database: String
    let scratch: ScratchDirectory
    let repository: String
    let export: HypertableManifest
    /// The entry's directory in the repository.
    let entry: String

    init(_ prefix: String) async throws {
        let (cluster, database) = try await makeSampleDatabase(prefix)
        let scratch = try ScratchDirectory(prefix)
        let repository = scratch.path + "/repo"
        let (_, manifest) = try await exportHypertable(cluster, database, table: "public.events", repository: repository)
        let export = try #require(manifest)
        (self.cluster, self.database, self.scratch, self.repository, self.export) = (cluster, database, scratch, repository, export)
        entry = "\(repository)/backups/\(export.id)"
    }

    /// The definition file as stored.
    func definition() throws -> String {
        try String(contentsOfFile: entry + "/" + export.definitionFile, encoding: .utf8)
    }

    /// Stores the definition with `text` inserted right after its CREATE TABLE statement (inside
    /// the table's own object, where the importer would run it), the manifest vouching for it,
    /// as a writer of the repository could.
    func tamperDefinition(insertingAfterCreateTable text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let original = try definition()
        let create = try #require(original.range(of: "CREATE TABLE public.events"), sourceLocation: sourceLocation)
        let anchor = try #require(original.range(of: ");\n", range: create.upperBound..<original.endIndex), sourceLocation: sourceLocation)
        var tampered = original
        tampered.insert(contentsOf: text, at: anchor.upperBound)
        try tamper(entry: entry, file: export.definitionFile, with: tampered)
    }
}

@Suite("hostile repositories: what a writer of the repository can not do")
struct HostileRepositoryTests {
    @Test("a roles.sql with DROP DATABASE or COPY ... TO PROGRAM refuses restore --create-roles, naming it; nothing runs on the target", arguments: [
        "DROP DATABASE %VICTIM%;",
        "COPY (SELECT 1) TO PROGRAM 'touch %MARKER%';",
        "CREATE ROLE evil;\nALTER ROLE evil WITH LOGIN; DROP DATABASE %VICTIM%;",
        // A quote followed by a combining mark: one Character and no quote to the lexer tsbackup
        // had, which saw a SET with a long string; PostgreSQL reads SET ...; DROP DATABASE ...;
        "SET client_min_messages = '\u{301}'; DROP DATABASE %VICTIM%; --'",
    ])
    func tamperedRoles(_ payload: String) async throws {
        let backup = try await BackedUpDatabase.make("hostroles")
        defer { backup.scratch.remove() }
        let victim = uniqueDatabaseName("victim")
        try await backup.cluster.createDatabase(victim, timescaleDB: false)
        let marker = backup.scratch.path + "/pwned"
        let entry = "\(backup.repository)/backups/\(backup.id)"
        let original = try String(contentsOfFile: entry + "/roles.sql", encoding: .utf8)
        let injected = payload.replacingOccurrences(of: "%VICTIM%", with: victim).replacingOccurrences(of: "%MARKER%", with: marker)
        try tamper(entry: entry, file: "roles.sql", with: original + injected + "\n")

        // The manifest vouches for the new file: hashes alone cannot tell.
        let verify = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput)")

        let into = uniqueDatabaseName("hostile_into")
        let result = try await backup.restore(["--into", into, "--create-roles"])
        #expect(result.exitCode == 1, "\(result.standardError)")
        let named = injected.split(separator: "\n").last.map { String($0.dropLast()) } ?? ""
        let statement = named.contains("DROP DATABASE") ? "DROP DATABASE \(victim)" : named
        #expect(result.standardError.contains(statement), "\(result.standardError)")
        #expect(result.standardError.contains("roles.sql"))
        #expect(try await databaseExists(backup.cluster, victim))
        #expect(!(try await databaseExists(backup.cluster, into)))
        #expect(!FileManager.default.fileExists(atPath: marker))
        let evil = try await backup.cluster.withSuperuser {
            try await $0.value("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'", as: Int64.self)
        }
        #expect(evil == 0)
    }

    @Test("an export definition with CREATE FUNCTION or a DO block refuses the import, naming it; nothing runs on the target", arguments: [
        "CREATE FUNCTION public.pwn() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
        "DO $$ BEGIN EXECUTE 'CREATE TABLE public.pwned_marker ()'; END $$;",
        "ALTER TABLE public.devices OWNER TO pg_database_owner;",
    ])
    func tamperedDefinition(_ payload: String) async throws {
        let exported = try await ExportedEvents("hostdef")
        defer { exported.scratch.remove() }
        let (cluster, repository) = (exported.cluster, exported.repository)
        let export = exported.export
        try exported.tamperDefinition(insertingAfterCreateTable: "\n" + payload + "\n")
        let verify = try await CLI.run(["verify", export.id, "--repo", repository])
        #expect(verify.exitCode == 0, "\(verify.standardOutput)")

        let target = uniqueDatabaseName("hostdef_dst")
        try await cluster.createDatabase(target)
        try await cluster.withSuperuser(database: target) { try await $0.execute("CREATE TABLE public.devices (id int)") }
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 1, "\(imported.standardError)")
        #expect(imported.standardError.contains(String(payload.prefix(20))), "\(imported.standardError)")
        #expect(imported.standardError.contains(export.definitionFile))
        let (events, pwn, marker, devicesOwner) = try await cluster.withSuperuser(database: target) {
            try await $0.row("""
                SELECT to_regclass('public.events') IS NOT NULL, to_regprocedure('public.pwn()') IS NOT NULL,
                       to_regclass('public.pwned_marker') IS NOT NULL,
                       (SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'public.devices'::regclass)
                """, as: (Bool, Bool, Bool, String).self)
        }
        #expect(!events && !pwn && !marker)
        #expect(devicesOwner == SandboxCluster.superuser)
    }

    @Test("manifest names outside the entry are refused by verify, restore and import")
    func pathsOutsideTheEntry() async throws {
        let backup = try await BackedUpDatabase.make("hostpath")
        defer { backup.scratch.remove() }
        let entry = "\(backup.repository)/backups/\(backup.id)"
        let manifestPath = entry + "/manifest.json"
        let pristine = try Data(contentsOf: URL(fileURLWithPath: manifestPath))

        // ../../etc/hostname with its true hash: the self-vouching manifest would pass.
        var manifest = try JSONOutput.decode(BackupManifest.self, from: pristine)
        let (hex, bytes) = try FileSystem.sha256(of: "/etc/hostname")
        let depth = entry.split(separator: "/").count
        let escape = String(repeating: "../", count: depth) + "etc/hostname"
        var extra = try #require(manifest.files.first)
        extra.path = escape
        extra.bytes = bytes
        extra.sha256 = hex
        manifest.files.append(extra)
        try JSONOutput.encode(manifest).write(toFile: manifestPath, atomically: false, encoding: .utf8)
        let verify = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verify.exitCode == 1)
        #expect(verify.standardOutput.contains("leaves its directory"), "\(verify.standardOutput)")
        let into = uniqueDatabaseName("hostpath_into")
        let restore = try await backup.restore(["--into", into])
        #expect(restore.exitCode != 0)
        #expect(!(try await databaseExists(backup.cluster, into)))

        // roles.sql replaced by a symbolic link (hash of its target in the manifest).
        try pristine.write(to: URL(fileURLWithPath: manifestPath))
        try FileManager.default.removeItem(atPath: entry + "/roles.sql")
        try FileManager.default.createSymbolicLink(atPath: entry + "/roles.sql", withDestinationPath: "/etc/hostname")
        var linked = try JSONOutput.decode(BackupManifest.self, from: pristine)
        let index = try #require(linked.files.firstIndex { $0.path == "roles.sql" })
        linked.files[index].sha256 = hex
        linked.files[index].bytes = bytes
        try JSONOutput.encode(linked).write(toFile: manifestPath, atomically: false, encoding: .utf8)
        let verifyLink = try await CLI.run(["verify", backup.id, "--repo", backup.repository])
        #expect(verifyLink.exitCode == 1)
        #expect(verifyLink.standardOutput.contains("symbolic link"), "\(verifyLink.standardOutput)")
    }

    @Test("an export whose data file names a path outside the entry is refused by import")
    func exportPathOutsideTheEntry() async throws {
        let exported = try await ExportedEvents("hostxpath")
        defer { exported.scratch.remove() }
        let (cluster, repository, entry) = (exported.cluster, exported.repository, exported.entry)
        var export = exported.export
        // Move a data file out of the entry and point the manifest at it.
        let moved = try #require(export.dataFiles.first).path
        try FileManager.default.moveItem(atPath: entry + "/" + moved, toPath: exported.scratch.path + "/outside.copy")
        let outside = "../../../outside.copy"
        export.dataFiles[0].path = outside
        for i in export.files.indices where export.files[i].path == moved { export.files[i].path = outside }
        for i in (export.chunks ?? []).indices where export.chunks?[i].file == moved { export.chunks?[i].file = outside }
        try JSONOutput.encode(export).write(toFile: entry + "/manifest.json", atomically: false, encoding: .utf8)

        let target = uniqueDatabaseName("hostxpath_dst")
        try await cluster.createDatabase(target)
        let (imported, _) = try await importHypertable(cluster, export.id, into: target, repository: repository)
        #expect(imported.exitCode == 1, "\(imported.standardError)")
        #expect(imported.standardError.contains("leaves its directory"), "\(imported.standardError)")
        let left = try await cluster.withSuperuser(database: target) {
            try await $0.value("SELECT to_regclass('public.events') IS NOT NULL", as: Bool.self)
        }
        #expect(!left)
    }
}

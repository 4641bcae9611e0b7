import Foundation
import Testing
import TSBackup
import TSBackupSandbox

/// tsbackup reads its children's stderr; under a translated locale PostgreSQL's tools would
/// answer in German unless tsbackup runs them with LC_MESSAGES=C.
@Suite("child processes under a translated locale")
struct LocaleTests {
    static let german = ["LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"]
    static let pgDump = "/usr/lib/postgresql/15/bin/pg_dump"

    @Test("pg_dump speaks German under de_DE.UTF-8, and English in the environment tsbackup gives it")
    func pgDumpMessages() async throws {
        // Without tsbackup's rule: the locale exists (scripts/setup.sh) and the messages are German.
        let translated = try await ProcessRunner.run(Self.pgDump, ["--badoption"], environment: Self.german.mapValues { $0 })
        #expect(translated.exitCode == 1)
        #expect(translated.standardError.contains("Unbekannte Option"), "\(translated.standardError)")
        // The complete environment a child gets when tsbackup itself runs under that locale.
        var inherited = ProcessInfo.processInfo.environment
        inherited.merge(Self.german.merging(["LANGUAGE": "de"]) { $1 }) { $1 }
        let child = ChildEnvironment.resolved(inheriting: inherited)
        let english = try await ProcessRunner.run("/usr/bin/env", ["-i"] + child.map { "\($0.key)=\($0.value)" } + [Self.pgDump, "--badoption"],
                                                  environment: Self.german.mapValues { $0 })
        #expect(english.exitCode == 1)
        #expect(english.standardError.contains("unrecognized option"), "\(english.standardError)")
    }

    @Test("the vanished-chunk retry, which reads pg_dump's stderr, works when tsbackup runs under de_DE.UTF-8")
    func retryUnderGermanLocale() async throws {
        let (cluster, database) = try await makeSampleDatabase("locale")
        let scratch = try ScratchDirectory("locale")
        defer { scratch.remove() }
        let counter = scratch.path + "/attempts"
        let seen = scratch.path + "/first-attempt-stderr"
        // The first attempt reports a vanished chunk in the language the real pg_dump speaks in
        // this environment (German: "Fehler:", "Detail:", as pg_dump-15.mo translates them).
        let path = try scratch.fakePgDump("""
            n=$(cat '\(counter)' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '\(counter)'
            if [ "$n" -eq 1 ]; then
              \(Self.pgDump) --badoption > '\(seen)' 2>&1
              if grep -q 'Unbekannte Option' '\(seen)'; then
                echo 'pg_dump: Fehler: Anfrage fehlgeschlagen: ERROR:  relation "_timescaledb_internal._hyper_1_3_chunk" does not exist' >&2
                echo 'pg_dump: Detail: Anfrage war: LOCK TABLE _timescaledb_internal._hyper_1_3_chunk IN ACCESS SHARE MODE' >&2
              else
                echo 'pg_dump: error: query failed: ERROR:  relation "_timescaledb_internal._hyper_1_3_chunk" does not exist' >&2
                echo 'pg_dump: detail: Query was: LOCK TABLE _timescaledb_internal._hyper_1_3_chunk IN ACCESS SHARE MODE' >&2
              fi
              exit 1
            fi
            exec \(Self.pgDump) "$@"
            """)
        let repository = scratch.path + "/repo"
        let result = try await runBackup(cluster, database, repository: repository, environment: path.merging(Self.german) { $1 })
        #expect(result.exitCode == 0, "\(result.standardError)")
        #expect(try String(contentsOfFile: seen, encoding: .utf8).contains("unrecognized option"))
        let id = try JSONOutput.decode(BackupManifest.Summary.self, from: Data(result.standardOutput.utf8)).id
        let manifest = try backupManifest(repository, id)
        #expect(manifest.status == .complete)
        #expect(manifest.retries.count == 1)
        #expect(manifest.retries.first?.reason.contains("_hyper_1_3_chunk") == true)
    }
}

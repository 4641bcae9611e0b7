import Foundation
import Testing
import TSBackup

/// Tool lookups (`PostgresTools`): each binary's `--version` runs once per process and file, a
/// replaced file is asked again, a failed answer is not kept. Fake tools count their `--version`
/// runs in a file, so the assertions read what really ran.
@Suite("PostgreSQL tool lookup and its per-process cache")
struct ToolLookupTests {
    /// A directory holding one fake tool `name` that appends a line to `count` on each --version.
    struct FakeTool {
        let directory: String
        let name: String
        var path: String { directory + "/" + name }
        var countFile: String { directory + "/count" }
        var environment: [String: String] { ["PATH": directory] }

        init(_ name: String) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("tsbackup-tools-\(UUID().uuidString.prefix(8))").path
            self.name = name
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }

        /// Writes the script as a new file (a new inode, as a package upgrade does).
        func write(version: String, failFirst: Bool = false) throws {
            let fail = failFirst ? "[ \"$(wc -l < '\(countFile)')\" -eq 1 ] && exit 1" : ""
            let script = """
                #!/bin/sh
                if [ "$1" = "--version" ]; then
                  echo run >> '\(countFile)'
                  \(fail)
                  echo "\(name) (PostgreSQL) \(version)"; exit 0
                fi
                exit 0
                """
            try script.write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
        }

        var runs: Int {
            ((try? String(contentsOfFile: countFile, encoding: .utf8)) ?? "").split(separator: "\n").count
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    @Test("a tool's --version runs once per process, however often it is looked up")
    func runsOnce() async throws {
        let tool = try FakeTool("pgfake_once")
        defer { tool.remove() }
        try tool.write(version: "99.1")
        let first = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
        let second = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
        #expect(first.path.hasSuffix("/pgfake_once"))
        #expect(first.majorVersion == 99)
        #expect(first.version == "pgfake_once (PostgreSQL) 99.1")
        #expect(second == first)
        #expect(tool.runs == 1)
    }

    @Test("a prefetched lookup is the one a later locate uses")
    func prefetch() async throws {
        let tool = try FakeTool("pgfake_prefetch")
        defer { tool.remove() }
        try tool.write(version: "99.2")
        PostgresTools.prefetch([tool.name], environment: tool.environment)
        let found = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
        #expect(found.version == "pgfake_prefetch (PostgreSQL) 99.2")
        #expect(tool.runs == 1)
    }

    @Test("a file replaced in place (an upgrade) is asked again, and the new version is the one used")
    func replacedFile() async throws {
        let tool = try FakeTool("pgfake_upgrade")
        defer { tool.remove() }
        try tool.write(version: "99.3")
        #expect(try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment).version.hasSuffix("99.3"))
        try tool.write(version: "100.10")
        let upgraded = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
        #expect(upgraded.version == "pgfake_upgrade (PostgreSQL) 100.10")
        #expect(upgraded.majorVersion == 100)
        #expect(tool.runs == 2)
    }

    @Test("a failed --version is not kept: the next lookup asks again")
    func failureNotCached() async throws {
        let tool = try FakeTool("pgfake_flaky")
        defer { tool.remove() }
        try tool.write(version: "99.4", failFirst: true)
        do {
            _ = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
            Issue.record("the first lookup should have found no usable pgfake_flaky")
        } catch let error as TSBackupError {
            #expect(error.kind == .precondition)
            #expect(error.message.contains("pgfake_flaky from PostgreSQL 15 or newer"))
        }
        let found = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
        #expect(found.majorVersion == 99)
        #expect(tool.runs == 2)
    }

    @Test("too old a tool is refused with what was found, from the cached answer")
    func tooOld() async throws {
        let tool = try FakeTool("pgfake_old")
        defer { tool.remove() }
        try tool.write(version: "14.9")
        for _ in 0..<2 {
            do {
                _ = try await PostgresTools.locate(tool.name, minimumMajor: 15, environment: tool.environment)
                Issue.record("a 14.x tool was accepted for a 15 server")
            } catch let error as TSBackupError {
                #expect(error.kind == .precondition)
                #expect(error.message.contains("only \(tool.path) (14) was found"), "\(error.message)")
            }
        }
        #expect(tool.runs == 1)
    }
}

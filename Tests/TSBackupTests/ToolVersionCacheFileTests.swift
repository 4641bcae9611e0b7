import Foundation
import Testing
@testable import TSBackup

/// The tools' `--version` answers kept across processes (`PostgresTools.VersionCacheFile`). A new
/// `VersionCache` instance stands for a new process; the fake tools count their `--version` runs
/// in a file, so every assertion reads what really ran.
@Suite("PostgreSQL tool versions kept in a cache file across processes")
struct ToolVersionCacheFileTests {
    typealias FakeTool = ToolLookupTests.FakeTool

    /// A fake tool and a cache directory of its own.
    struct Setup {
        let tool: FakeTool
        var cacheHome: String { tool.directory + "/cache" }
        var environment: [String: String] { ["PATH": tool.directory, "XDG_CACHE_HOME": cacheHome] }
        var file: PostgresTools.VersionCacheFile { PostgresTools.VersionCacheFile(environment: environment)! }

        init(_ name: String) throws { tool = try FakeTool(name) }

        /// The tool as a new process would see it now, looked up with a fresh in-process cache.
        func lookupInNewProcess() async throws -> PostgresTool? {
            let candidate = try #require(PostgresTools.candidates(tool.name, environment: environment).first)
            return await PostgresTools.VersionCache().lookup(candidate, file: file).value
        }
    }

    @Test("the cache file's place: XDG_CACHE_HOME, else HOME/.cache, else none")
    func location() {
        #expect(PostgresTools.VersionCacheFile(environment: ["XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"])?.path == "/x/cache/tsbackup/tool-versions.json")
        #expect(PostgresTools.VersionCacheFile(environment: ["HOME": "/home/u"])?.path == "/home/u/.cache/tsbackup/tool-versions.json")
        // A relative XDG_CACHE_HOME is invalid by the XDG spec and ignored.
        #expect(PostgresTools.VersionCacheFile(environment: ["XDG_CACHE_HOME": "cache", "HOME": "/home/u"])?.path == "/home/u/.cache/tsbackup/tool-versions.json")
        #expect(PostgresTools.VersionCacheFile(environment: ["PATH": "/usr/bin"]) == nil)
    }

    @Test("a new process takes the kept answer without running --version; the file is 0600")
    func keptAcrossProcesses() async throws {
        let setup = try Setup("pgfake_kept")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.5")
        let first = try #require(try await setup.lookupInNewProcess())
        #expect(first.version == "pgfake_kept (PostgreSQL) 99.5" && first.majorVersion == 99)
        #expect(setup.tool.runs == 1)
        let attributes = try FileManager.default.attributesOfItem(atPath: setup.file.path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)

        let second = try await setup.lookupInNewProcess()
        #expect(second == first)
        #expect(setup.tool.runs == 1, "the second process ran --version although the answer was kept")
    }

    @Test("locate() of a process with XDG_CACHE_HOME writes the file a later process reads")
    func locateUsesTheFile() async throws {
        let setup = try Setup("pgfake_locate")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.6")
        let found = try await PostgresTools.locate(setup.tool.name, minimumMajor: 15, environment: setup.environment)
        #expect(found.majorVersion == 99)
        #expect(setup.file.read().map(\.version) == ["pgfake_locate (PostgreSQL) 99.6"])
        _ = try await setup.lookupInNewProcess()
        #expect(setup.tool.runs == 1)
    }

    @Test("a binary replaced in place (an upgrade) is asked again, and only its new answer is kept")
    func changedBinaryAskedAgain() async throws {
        let setup = try Setup("pgfake_upgraded")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.7")
        #expect(try await setup.lookupInNewProcess()?.majorVersion == 99)
        try setup.tool.write(version: "100.2")
        let upgraded = try #require(try await setup.lookupInNewProcess())
        #expect(upgraded.version == "pgfake_upgraded (PostgreSQL) 100.2" && upgraded.majorVersion == 100)
        #expect(setup.tool.runs == 2)
        #expect(setup.file.read().map(\.version) == ["pgfake_upgraded (PostgreSQL) 100.2"])
    }

    @Test("a corrupt cache file is ignored (the tool is asked) and replaced by a good one")
    func corruptFileIgnored() async throws {
        let setup = try Setup("pgfake_corrupt")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.8")
        try FileManager.default.createDirectory(atPath: setup.cacheHome + "/tsbackup", withIntermediateDirectories: true)
        for garbage in ["{\"format\": 1, \"tools\": [{\"path\": ", "\u{0}\u{1}binary", ""] {
            try Data(garbage.utf8).write(to: URL(fileURLWithPath: setup.file.path))
            chmod(setup.file.path, 0o600)
            #expect(setup.file.read().isEmpty)
        }
        let found = try await setup.lookupInNewProcess()
        #expect(found?.version == "pgfake_corrupt (PostgreSQL) 99.8")
        #expect(setup.tool.runs == 1)
        #expect(setup.file.read().count == 1)
    }

    @Test("a kept answer in a file others can write, or in another format, is not believed")
    func untrustedFileIgnored() async throws {
        let setup = try Setup("pgfake_untrusted")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.9")
        _ = try await setup.lookupInNewProcess()
        #expect(setup.tool.runs == 1)
        // A forged answer for exactly this file, in a file writable by others: ignored.
        let forged = try String(contentsOfFile: setup.file.path, encoding: .utf8).replacingOccurrences(of: "99.9", with: "98.9")
            .replacingOccurrences(of: "\"major_version\":99", with: "\"major_version\":98")
        try forged.write(toFile: setup.file.path, atomically: false, encoding: .utf8)
        chmod(setup.file.path, 0o666)
        #expect(try await setup.lookupInNewProcess()?.majorVersion == 99)
        #expect(setup.tool.runs == 2)
        // The same forged answer in a file of another format version: ignored as well.
        let otherFormat = forged.replacingOccurrences(of: "\"format\":1", with: "\"format\":2")
        #expect(otherFormat != forged)
        try FileManager.default.removeItem(atPath: setup.file.path)
        try otherFormat.write(toFile: setup.file.path, atomically: false, encoding: .utf8)
        chmod(setup.file.path, 0o600)
        #expect(try await setup.lookupInNewProcess()?.majorVersion == 99)
        #expect(setup.tool.runs == 3)
        // And the forged answer in a good file is what the cache would return: the two checks
        // above are what kept it out.
        try FileManager.default.removeItem(atPath: setup.file.path)
        try forged.write(toFile: setup.file.path, atomically: false, encoding: .utf8)
        chmod(setup.file.path, 0o600)
        #expect(try await setup.lookupInNewProcess()?.majorVersion == 98)
        #expect(setup.tool.runs == 3)
    }

    @Test("a failed --version is not kept in the file: the next process asks again")
    func failureNotKept() async throws {
        let setup = try Setup("pgfake_failing")
        defer { setup.tool.remove() }
        try setup.tool.write(version: "99.10", failFirst: true)
        #expect(try await setup.lookupInNewProcess() == nil)
        #expect(setup.file.read().isEmpty)
        #expect(try await setup.lookupInNewProcess()?.version == "pgfake_failing (PostgreSQL) 99.10")
        #expect(setup.tool.runs == 2)
        #expect(setup.file.read().count == 1)
    }
}

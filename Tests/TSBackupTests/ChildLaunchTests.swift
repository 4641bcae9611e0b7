import Foundation
import Testing
@testable import TSBackup

/// Children are started through setpriv with a parent-death signal (issue 14: no pg_restore or
/// pg_dump outlives a SIGKILLed tsbackup), except where a step must finish without tsbackup.
@Suite("child launch: parent-death signal through setpriv")
struct ChildLaunchTests {
    @Test func childrenGetAParentDeathSignal() async throws {
        try #require(ChildLaunch.setpriv != nil, "util-linux's setpriv is installed here")
        // The child's own view of its settings: `setpriv --dump` prints its parent-death signal.
        let wrapped = try await ProcessRunner.run("setpriv", ["--dump"])
        #expect(wrapped.succeeded, "\(wrapped.standardError)")
        #expect(wrapped.standardOutput.contains("Parent death signal: TERM"), "\(wrapped.standardOutput)")
        let plain = try await ProcessRunner.run("setpriv", ["--dump"], outlivesParent: true)
        #expect(plain.standardOutput.contains("Parent death signal: [none]"), "\(plain.standardOutput)")
    }

    @Test func unresolvableProgramsAreStartedAsTheyAre() async throws {
        #expect(ChildLaunch.resolve("no-such-tool-\(UUID().uuidString)", searchPath: "/usr/bin:/bin") == nil)
        #expect(ChildLaunch.resolve("sh", searchPath: "/nonexistent:/bin") == "/bin/sh")
        // A missing program still fails as a launch error (exit 5 territory), not as setpriv's exit 127.
        await #expect(throws: TSBackupError.self) { _ = try await ProcessRunner.run("/nonexistent/tool", []) }
    }
}

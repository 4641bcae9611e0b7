import Foundation
import Testing
@testable import TSBackup

@Suite("interrupted runs: the marker a restore or import leaves while it runs")
struct InterruptedRunsTests {
    @Test func markerRoundTrips() {
        let owner = InterruptedRuns.Owner(kind: .restore, backup: "20260101T000000Z-ab12", pid: 4242, host: "db-1", started: "2026-01-01T00:00:00Z")
        #expect(owner.comment == "tsbackup restore in progress: backup=20260101T000000Z-ab12 pid=4242 host=db-1 started=2026-01-01T00:00:00Z")
        #expect(InterruptedRuns.Owner.parse(owner.comment) == owner)
        let imported = InterruptedRuns.Owner(kind: .import, backup: "x", pid: 7, host: "h", started: "t")
        #expect(InterruptedRuns.Owner.parse(imported.comment) == imported)
    }

    @Test func otherCommentsAreNotMarkers() {
        for text in ["", "metrics of plant 4", "tsbackup restore in progress:", "tsbackup restore in progress: backup=a pid=x host=h started=t",
                     "tsbackup restore in progress: backup=a pid=1 host=h", "tsbackup restore in progress: junk", "TSBACKUP restore in progress: backup=a pid=1 host=h started=t"] {
            #expect(InterruptedRuns.Owner.parse(text) == nil, "\(text)")
        }
    }

    @Test func onlyAGoneProcessOnThisHostIsGone() {
        // This process runs: a service's concurrent restore is never taken for a leftover.
        #expect(!InterruptedRuns.Owner(kind: .restore, backup: "a", pid: getpid(), host: "h").isGone(thisHost: "h"))
        // pid 1 always runs.
        #expect(!InterruptedRuns.Owner(kind: .restore, backup: "a", pid: 1, host: "h").isGone(thisHost: "h"))
        // Another host: liveness cannot be told, so never gone.
        #expect(!InterruptedRuns.Owner(kind: .restore, backup: "a", pid: Int32.max - 1, host: "other").isGone(thisHost: "h"))
        // No such process here.
        #expect(InterruptedRuns.Owner(kind: .restore, backup: "a", pid: Int32.max - 1, host: "h").isGone(thisHost: "h"))
    }

    /// A private directory standing in for $TMPDIR.
    static func parent() throws -> String {
        let path = NSTemporaryDirectory() + "interrupted-runs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("the scratch sweep removes only directories whose owner provably no longer runs, and says so")
    func scratchSweep() throws {
        let parent = try Self.parent()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let prefix = "tsbackup-restore-"
        // A live owner: this process holds the lock (flock conflicts between two opens, even in one process).
        let live = try OwnedScratchDirectory(prefix: prefix, parent: parent)
        defer { live.remove() }
        #expect(FileManager.default.fileExists(atPath: live.path) && FileManager.default.fileExists(atPath: live.lockPath))
        // A dead owner: directory and lock file, nobody holds the lock (what SIGKILL leaves).
        let dead = parent + "/" + prefix + "dead"
        try FileManager.default.createDirectory(atPath: dead + "/sub", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dead + "/sub/rest.list", contents: Data("x".utf8))
        FileManager.default.createFile(atPath: dead + ".lock", contents: nil)
        // An older tsbackup's directory (no lock file): its owner cannot be proven gone.
        let legacy = parent + "/" + prefix + "legacy"
        try FileManager.default.createDirectory(atPath: legacy, withIntermediateDirectories: true)
        // A lock file whose owner died before making its directory.
        let stray = parent + "/" + prefix + "stray.lock"
        FileManager.default.createFile(atPath: stray, contents: nil)
        // Someone else's directory.
        try FileManager.default.createDirectory(atPath: parent + "/other-dir", withIntermediateDirectories: true)

        let messages = OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore")
        #expect(messages == ["Removed the scratch directory \(dead) of an interrupted restore (the process that made it no longer runs)."])
        #expect(!FileManager.default.fileExists(atPath: dead) && !FileManager.default.fileExists(atPath: dead + ".lock"))
        #expect(!FileManager.default.fileExists(atPath: stray))
        #expect(FileManager.default.fileExists(atPath: live.path) && FileManager.default.fileExists(atPath: live.lockPath))
        #expect(FileManager.default.fileExists(atPath: legacy) && FileManager.default.fileExists(atPath: parent + "/other-dir"))
        #expect(OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore").isEmpty, "nothing left to remove")

        live.remove()
        #expect(!FileManager.default.fileExists(atPath: live.path) && !FileManager.default.fileExists(atPath: live.lockPath))
    }

    @Test("a psql running a restore's CREATE DATABASE + marker pair on this host is seen in /proc")
    func localCreatorsFromProc() throws {
        let proc = try Self.parent()
        defer { try? FileManager.default.removeItem(atPath: proc) }
        func process(_ pid: String, _ argv: [String]) throws {
            try FileManager.default.createDirectory(atPath: proc + "/" + pid, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: proc + "/\(pid)/cmdline", contents: Data(argv.joined(separator: "\0").utf8 + [0]))
        }
        let marker = InterruptedRuns.Owner(kind: .restore, backup: "b", pid: 12, host: "h", started: "t").comment
        try process("100", ["/usr/lib/postgresql/15/bin/psql", "-X", "-c", "CREATE DATABASE \"x\" TEMPLATE template0", "-c", "COMMENT ON DATABASE \"x\" IS '\(marker)'"])
        try process("101", ["psql", "-c", "SELECT 1"])
        try process("102", ["grep", "COMMENT ON DATABASE \"x\" IS '\(marker)'"])
        try process("self", ["psql", "-c", "COMMENT ON DATABASE \"x\" IS '\(marker)'"])
        #expect(InterruptedRuns.localCreators(proc: proc) == 1)
        try process("103", ["/usr/bin/psql", "-c", "COMMENT ON DATABASE \"y\" IS '\(marker)'"])
        #expect(InterruptedRuns.localCreators(proc: proc) == 2)
    }
}

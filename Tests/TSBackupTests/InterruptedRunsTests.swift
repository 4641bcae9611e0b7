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
        _ = FileManager.default.createFile(atPath: dead + "/sub/rest.list", contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: dead + ".lock", contents: nil)
        // An older tsbackup's directory (no lock file): its owner cannot be proven gone.
        let legacy = parent + "/" + prefix + "legacy"
        try FileManager.default.createDirectory(atPath: legacy, withIntermediateDirectories: true)
        // A lock file whose owner died before making its directory.
        let stray = parent + "/" + prefix + "stray.lock"
        _ = FileManager.default.createFile(atPath: stray, contents: nil)
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

    @Test("an older tsbackup's lock-less scratch directory goes only when it is ours, named as we name them, and long unchanged")
    func legacyScratchSweep() throws {
        let parent = try Self.parent()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let prefix = "tsbackup-restore-"
        let fileManager = FileManager.default
        func directory(_ name: String, file: String? = "rest.list") throws -> String {
            let path = parent + "/" + name
            try fileManager.createDirectory(atPath: path, withIntermediateDirectories: true)
            if let file { _ = fileManager.createFile(atPath: path + "/" + file, contents: Data("x".utf8)) }
            return path
        }
        // What a restore before the lock files left: <prefix><UUID>, no lock file.
        let leftover = try directory(prefix + UUID().uuidString)
        try fileManager.createDirectory(atPath: leftover + "/sub", withIntermediateDirectories: true)
        _ = fileManager.createFile(atPath: leftover + "/sub/more.list", contents: Data("y".utf8))
        // Same name pattern, but a file in it changes "later" (in the future of the sweep's now).
        let busy = try directory(prefix + UUID().uuidString)
        // Not our name pattern: another kind of scratch directory, or someone else's.
        let other = try directory(prefix + "data-" + UUID().uuidString)
        let legacy = try directory(prefix + "legacy")
        let shortUUID = try directory(prefix + String(UUID().uuidString.dropLast()))
        // A symbolic link with our name pattern, to a directory that would qualify.
        let target = try directory("elsewhere")
        let link = parent + "/" + prefix + UUID().uuidString
        try fileManager.createSymbolicLink(atPath: link, withDestinationPath: target)

        let day: TimeInterval = 24 * 3600
        let later = Date().addingTimeInterval(8 * day)
        try fileManager.setAttributes([.modificationDate: later.addingTimeInterval(-3600)], ofItemAtPath: busy + "/rest.list")
        // Not given `legacyAfter`, nothing without a lock file is touched, however old.
        #expect(OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore", now: later).isEmpty)
        // Too recent for a 7-day rule (now: no time passed).
        #expect(OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore", legacyAfter: 7 * day).isEmpty)
        #expect(fileManager.fileExists(atPath: leftover))

        // Eight days on: only the leftover goes, and the sweep says so.
        let messages = OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore", legacyAfter: 7 * day, now: later)
        #expect(messages == ["Removed the scratch directory \(leftover) of an interrupted restore, left by an older tsbackup (it has no lock file and nothing in it changed for more than 168 hours)."])
        #expect(!fileManager.fileExists(atPath: leftover))
        for kept in [busy, other, legacy, shortUUID, target, busy + "/rest.list", target + "/rest.list"] {
            #expect(fileManager.fileExists(atPath: kept), "\(kept) is kept")
        }
        #expect((try? fileManager.destinationOfSymbolicLink(atPath: link)) == target, "the link is kept")

        // Another user's directory with our name pattern stays (checkable only as root, who can chown).
        if geteuid() == 0 {
            let foreign = try directory(prefix + UUID().uuidString)
            #expect(chown(foreign, 4242, 4242) == 0)
            #expect(OwnedScratchDirectory.sweep(prefix: prefix, parent: parent, what: "restore", legacyAfter: 7 * day, now: later).isEmpty)
            #expect(fileManager.fileExists(atPath: foreign))
        }
        #expect(OwnedScratchDirectory.isLegacyLeftover(name: URL(fileURLWithPath: busy).lastPathComponent, path: busy, prefix: prefix,
                                                       olderThan: later.addingTimeInterval(-7 * day)) == false)
        #expect(OwnedScratchDirectory.isLegacyLeftover(name: URL(fileURLWithPath: busy).lastPathComponent, path: busy, prefix: prefix,
                                                       olderThan: later.addingTimeInterval(day)) == true)
    }

    @Test("a psql running a restore's CREATE DATABASE + marker pair on this host is seen in /proc")
    func localCreatorsFromProc() throws {
        let proc = try Self.parent()
        defer { try? FileManager.default.removeItem(atPath: proc) }
        func process(_ pid: String, _ argv: [String]) throws {
            try FileManager.default.createDirectory(atPath: proc + "/" + pid, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: proc + "/\(pid)/cmdline", contents: Data(argv.joined(separator: "\0").utf8 + [0]))
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

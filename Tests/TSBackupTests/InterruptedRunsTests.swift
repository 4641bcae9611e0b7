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
}

import Foundation
import Testing
@testable import TSBackup

@Suite("PITR: positions, windows, expiry, log parsing")
struct PITRUnitTests {
    func base(_ id: String, start: String, stop: String, ended: TimeInterval, timeline: Int = 1) -> BaseBackupManifest {
        let date = Date(timeIntervalSince1970: ended)
        return BaseBackupManifest(
            id: id, label: nil, status: .complete, error: nil, startedAt: date, finishedAt: date, durationSeconds: 1,
            tsbackupVersion: "test", source: .init(host: "h", port: 5432, database: "postgres", user: "postgres"),
            server: .init(version: "15", versionNumber: 150000, majorVersion: 15),
            pgBasebackup: PostgresTool(path: "/x", version: "15", majorVersion: 15), systemIdentifier: "1", timeline: timeline,
            startLSN: start, stopLSN: stop,
            startSegment: WALPosition(start)!.segment(timeline: timeline).name, stopSegment: WALPosition(stop)!.segment(timeline: timeline).name,
            startTime: date, stopTime: date, compression: "zstd", archives: ["base.tar.zst"], databases: [], clusterBytes: 0,
            files: [], warnings: [])
    }

    @Test func positions() throws {
        let lsn = try #require(WALPosition("1/3000028"))
        #expect(lsn.description == "1/3000028")
        #expect(lsn.segment(timeline: 2).name == "000000020000000100000003")
        #expect(WALFileName("000000020000000100000003")?.segmentNumber(segmentSize: WALFileName.defaultSegmentSize) == 256 + 3)
        #expect(lsn.segmentNumber() == 256 + 3)
        // Other segment sizes: 64 MB segments, 64 per value of the middle word.
        #expect(lsn.segment(timeline: 1, segmentSize: 64 << 20).name == "000000010000000100000000")
        #expect(WALPosition(startOfSegment: 3).description == "0/3000000")
        #expect(WALPosition("nonsense") == nil && WALPosition("1/") == nil)
        #expect(WALPosition("0/FF")! < WALPosition("1/0")!)
    }

    @Test func backupHistoryFile() throws {
        let text = """
            START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
            STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)
            CHECKPOINT LOCATION: 0/2000060
            BACKUP METHOD: streamed
            BACKUP FROM: primary
            START TIME: 2026-11-27 09:30:00 UTC
            LABEL: tsbackup 20261127T093000Z ab12cd34
            START TIMELINE: 3
            STOP TIME: 2026-11-27 09:30:02 UTC
            STOP TIMELINE: 3
            """
        let parsed = try #require(BackupHistoryFile.parse(text))
        #expect(parsed.label == "tsbackup 20261127T093000Z ab12cd34")
        #expect(parsed.timeline == 3 && parsed.start.description == "0/2000028" && parsed.stop.description == "0/2000100")
        #expect(parsed.stopTime?.timeIntervalSince1970 == 1_795_771_802)
        #expect(BackupHistoryFile.parse("LABEL: x") == nil)
    }

    @Test func stopRecord() throws {
        let log = """
            2026-11-27 09:30:01.000 UTC [10] LOG:  starting point-in-time recovery to 2026-11-27 09:30:00+00
            2026-11-27 09:30:02.000 UTC [10] LOG:  recovery stopping before commit of transaction 745, time 2026-11-27 09:30:00.512345+00
            2026-11-27 09:30:02.100 UTC [10] LOG:  redo done at 0/3000100
            """
        let stop = try #require(RecoveryVerification.stopRecord(in: log))
        #expect(stop.before && stop.xid == 745)
        let time = try #require(stop.time)
        #expect(abs(time.timeIntervalSince1970 - 1_795_771_800.512345) < 0.001)
        #expect(RecoveryVerification.stopRecord(in: "LOG: redo done") == nil)
        // Targets keep their microseconds.
        #expect(Recover.timestamp(Date(timeIntervalSince1970: 1_795_771_800.512345)) == "2026-11-27 09:30:00.512345+00")
    }

    @Test("the window follows contiguous WAL; targets before, after and across a gap are refused naming it")
    func windows() throws {
        let seg = UInt64(WALFileName.defaultSegmentSize)
        let b1 = base("b1", start: "0/2000028", stop: "0/2000100", ended: 1000)
        let b2 = base("b2", start: "0/6000028", stop: "0/6000100", ended: 2000)
        func s(_ n: UInt64, _ t: TimeInterval) -> WALArchiveState.Segment { .init(number: n, archivedAt: Date(timeIntervalSince1970: t)) }
        // Segments 2,3 then a gap at 4, then 6,7.
        let archive = WALArchiveState(timelines: [1: [s(2, 1001), s(3, 1500), s(6, 2001), s(7, 2500)]])
        let window = RecoverableWindow(bases: [b1, b2], archive: archive)
        #expect(window.spans.count == 2)
        #expect(window.spans[0].gapAt == "000000010000000000000004")
        #expect(window.spans[0].toLSN == WALPosition(4 * seg))
        #expect(try window.choose(.time(Date(timeIntervalSince1970: 1200))).id == "b1")
        #expect(try window.choose(.time(Date(timeIntervalSince1970: 2400))).id == "b2")
        #expect(try window.choose(.latest).id == "b2")
        #expect(try window.choose(.lsn(WALPosition("0/3000000")!)).id == "b1")
        for target: Recover.Target in [.time(Date(timeIntervalSince1970: 500)), .time(Date(timeIntervalSince1970: 1700)),
                                        .time(Date(timeIntervalSince1970: 3000)), .lsn(WALPosition("0/5000000")!)] {
            #expect(throws: TSBackupError.self) { try window.choose(target) }
            do { _ = try window.choose(target) } catch let error as TSBackupError {
                #expect(error.kind == .precondition)
                #expect(error.message.contains("recoverable window is"))
            }
        }
        // A base backup whose own WAL is missing is unusable.
        let holes = RecoverableWindow(bases: [b1], archive: WALArchiveState(timelines: [1: [s(3, 1500)]]))
        #expect(holes.spans.isEmpty && holes.unusable == ["b1"])
        #expect(throws: TSBackupError.self) { try holes.choose(.latest) }
    }

    @Test("a later timeline that branches off within the run continues the window")
    func timelines() throws {
        let b1 = base("b1", start: "0/2000028", stop: "0/2000100", ended: 1000)
        func s(_ n: UInt64, _ t: TimeInterval) -> WALArchiveState.Segment { .init(number: n, archivedAt: Date(timeIntervalSince1970: t)) }
        let archive = WALArchiveState(timelines: [1: [s(2, 1001), s(3, 1500)], 2: [s(3, 1600), s(4, 1700), s(5, 1800)]],
                                      parents: [2: (parent: 1, switchPoint: WALPosition("0/3800000")!)])
        let window = RecoverableWindow(bases: [b1], archive: archive)
        #expect(window.spans.first?.timeline == 2)
        #expect(window.spans.first?.toLSN == WALPosition(6 * UInt64(WALFileName.defaultSegmentSize)))
        #expect(try window.choose(.time(Date(timeIntervalSince1970: 1750))).id == "b1")
    }

    @Test("expire keeps the newest N (never fewer than one) and honours --older-than")
    func expiry() {
        let now = Date(timeIntervalSince1970: 100_000)
        let bases = [base("a", start: "0/2000028", stop: "0/2000100", ended: 10_000),
                     base("b", start: "0/6000028", stop: "0/6000100", ended: 50_000),
                     base("c", start: "0/9000028", stop: "0/9000100", ended: 99_000)]
        #expect(Expire.plan(bases, keep: 1, olderThan: nil, now: now).delete.map(\.id) == ["a", "b"])
        #expect(Expire.plan(bases, keep: 2, olderThan: nil, now: now).delete.map(\.id) == ["a"])
        #expect(Expire.plan(bases, keep: 0, olderThan: nil, now: now).keep.map(\.id) == ["c"])
        #expect(Expire.plan(bases, keep: 1, olderThan: 60_000, now: now).delete.map(\.id) == ["a"])
        #expect(Expire.plan([], keep: 1, olderThan: nil, now: now).delete.isEmpty)
    }

    @Test("a recover report written before `warnings` existed still decodes, and the field round-trips")
    func recoverReportDecodesOlderJSON() throws {
        let old = #"{"ok":true,"base_backup":"b1","target":"latest","pgdata":"/d","port":5433,"connection":"host=x","steps":[],"checks":[],"server_running":true}"#
        let decoded = try JSONOutput.decode(Recover.Report.self, from: Data(old.utf8))
        #expect(decoded.ok && decoded.baseBackup == "b1" && decoded.port == 5433 && decoded.warnings.isEmpty)
        #expect(decoded.lastReplayedCommit == nil && decoded.timeline == nil)
        var report = decoded
        report.warnings = ["swept a killed recover's server"]
        let again = try JSONOutput.decode(Recover.Report.self, from: try JSONOutput.encodeData(report))
        #expect(again.warnings == report.warnings)
        let missing = #"{"ok":true,"target":"latest"}"#
        #expect(throws: DecodingError.self) { try JSONOutput.decode(Recover.Report.self, from: Data(missing.utf8)) }
    }
}

import Foundation
import PostgresNIO
import Synchronization
import Testing
import TSBackup
import TSBackupSandbox

/// A `recover` that is stopped must not leave the PostgreSQL server it started running unnoticed
/// (the kill campaign counted "killed recovers' servers" as leftovers, docs/reliability.md).
/// SIGTERM: the run stops its server and exits 1. SIGKILL: nothing runs, so the record it keeps in
/// `$TMPDIR` (held with flock) lets the next recover prove the server is that run's and stop it;
/// a server tsbackup cannot prove it started is never touched.
///
/// The run is held with its server up without any test seam: the archived object of the first
/// segment after the base backup is replaced by a FIFO, so the server's restore_command
/// (`wal-fetch`) blocks opening it and replay waits there, while recover waits for promotion. The
/// test then finds the recover by its command line. Opening the FIFO for writing releases the
/// fetch (it reads nothing, fails, and recovery ends at the end of the archive).
@Suite("killed recovers: SIGTERM stops the server the run started; after SIGKILL the next recover stops it", .serialized)
struct KilledRecoverTests {
    let faults = ServerFaultTests()

    /// Whether a `CLI.run` task has returned.
    final class Ended: Sendable {
        let flag = Mutex(false)
        func set() { flag.withLock { $0 = true } }
        var value: Bool { flag.withLock { $0 } }
    }

    /// The record directories in `tmp`.
    static func records(_ tmp: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).filter {
            $0.hasPrefix(RecoverServerGuard.recordPrefix) && !$0.hasSuffix(".lock")
        }
    }

    /// The postmaster's pid from `postmaster.pid`.
    static func postmaster(_ pgdata: String) throws -> Int32 {
        let text = try String(contentsOfFile: pgdata + "/postmaster.pid", encoding: .utf8)
        return try #require(Int32(text.split(separator: "\n").first.map(String.init) ?? ""))
    }

    /// Live processes whose arguments include every one of `arguments`.
    static func processes(with arguments: [String]) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter { pid in
            guard KilledRunTests.isAlive(pid), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let words = Set(data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
            return arguments.allSatisfy { words.contains($0) }
        }
    }

    /// Releases every wal-fetch blocked opening `fifo` (they read nothing and fail).
    static func release(_ fifo: String) {
        for _ in 0..<50 {
            let fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { return }  // ENXIO: nobody is waiting
            close(fd)
            usleep(20_000)
        }
    }

    /// Replaces the archived object of the first segment after `base` with a FIFO; returns its
    /// path and where the real object was put aside.
    func blockFirstSegment(after base: BaseBackupManifest, _ archiving: PITRCluster) throws -> (fifo: String, saved: String, segment: String) {
        let directory = "\(archiving.repo)/wal/\(base.systemIdentifier)/00000001"
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.count == 28 && $0.hasSuffix(".zst") }.sorted()
        let next = try #require(names.first { String($0.prefix(24)) > base.stopSegment }, "a segment archived after the base backup: \(names)")
        let fifo = directory + "/" + next
        let saved = archiving.scratch + "/" + next + ".saved"
        try FileManager.default.moveItem(atPath: fifo, toPath: saved)
        try #require(mkfifo(fifo, 0o666) == 0)
        chmod(fifo, 0o666)
        return (fifo, saved, String(next.prefix(24)))
    }

    /// Starts `recover --to-latest` into `recovered-<name>` and waits until its server is up and
    /// replay waits on the FIFO; returns the run, its data directory, the recover's pid and the postmaster's.
    func startBlocked(_ archiving: PITRCluster, _ name: String, segment: String, tmp: String) async throws -> (Task<ProcessResult, any Error>, String, Int32, Int32) {
        let pgdata = archiving.scratch + "/recovered-" + name
        let ended = Ended()
        let run = Task {
            defer { ended.set() }
            return try await archiving.recover(name, ["--to-latest"], extra: ["--archive-mode", "off"], environment: ["TMPDIR": tmp]).0
        }
        try await faults.waitUntil("recover \(name)'s server waiting for \(segment)") {
            ended.value || !Self.processes(with: ["wal-fetch", segment]).isEmpty
        }
        guard !ended.value else {
            let result = try await run.value
            Issue.record("recover \(name) ended before its server asked for \(segment) (exit \(result.exitCode.map(String.init) ?? "-")): \(result.standardError.prefix(600))")
            throw SandboxError("not blocked")
        }
        let owner = try #require(Self.processes(with: ["recover", pgdata]).first, "the running recover")
        let postmaster = try Self.postmaster(pgdata)
        #expect(KilledRunTests.isAlive(postmaster))
        return (run, pgdata, owner, postmaster)
    }

    @Test("SIGTERM: the run stops its server and exits 1; SIGKILL: the next recover stops it, and leaves a server it cannot prove alone")
    func killedRecovers() async throws {
        let archiving = try await PITRCluster.start()
        var fifo: String?
        do {
            let base = try await archiving.baseBackup()
            // Two segments after the base backup (a switch without new WAL switches nothing).
            for n in 1...2 {
                try await archiving.cluster.withSuperuser { try await $0.execute("CREATE TABLE after_base_\(n) AS SELECT generate_series(1, 1000) AS i") }
                try await archiving.switchAndWaitForArchive()
            }
            let tmp = archiving.scratch + "/tmp"
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            let blocked = try blockFirstSegment(after: base, archiving)
            fifo = blocked.fifo

            // SIGTERM while the server it started replays.
            let (term, termData, termOwner, termPostmaster) = try await startBlocked(archiving, "term", segment: blocked.segment, tmp: tmp)
            #expect(Self.records(tmp).count == 1, "the running recover keeps a record: \(Self.records(tmp))")
            #expect(kill(termOwner, SIGTERM) == 0)
            let terminated = try await term.value
            #expect(terminated.exitCode == 1, "\(terminated.standardOutput) \(terminated.standardError)")
            #expect(terminated.signal == nil, "the run handles SIGTERM instead of dying of it")
            #expect(terminated.standardError.contains("SIGTERM") && terminated.standardError.contains(termData), "\(terminated.standardError)")
            // pg_ctl stop -w returned before the run exited: the server had removed its pid file.
            #expect(!FileManager.default.fileExists(atPath: termData + "/postmaster.pid"), "the SIGTERMed recover left its server running")
            if !FileManager.default.fileExists(atPath: termData + "/postmaster.pid") {
                try await faults.waitUntil("the SIGTERMed recover's postmaster to end") { !KilledRunTests.isAlive(termPostmaster) }
            }
            #expect(Self.records(tmp).isEmpty, "the stopped server's record is removed")
            Self.release(blocked.fifo)

            // SIGKILL: nothing runs; the server and the record stay.
            let (killed, killData, killOwner, killPostmaster) = try await startBlocked(archiving, "kill", segment: blocked.segment, tmp: tmp)
            #expect(kill(killOwner, SIGKILL) == 0)
            _ = try? await killed.value
            try await faults.waitUntil("the killed recover to be gone") { !KilledRunTests.isAlive(killOwner) }
            #expect(KilledRunTests.isAlive(killPostmaster), "SIGKILL left the server running")
            // Its record names the server. The next recover must prove the server is that run's
            // even without the pid (a kill between pg_ctl start and recording it, which the kill
            // campaign hit): the pid and start time are taken out, the run id stays (it is in
            // the server's environment).
            let recordFile = tmp + "/" + (try #require(Self.records(tmp).first, "the killed run's record")) + "/server.json"
            var fields = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: recordFile))) as? [String: Any])
            #expect((fields["postmaster_pid"] as? NSNumber)?.int32Value == killPostmaster && fields["pgdata"] as? String == killData, "\(fields)")
            fields["postmaster_pid"] = nil
            fields["postmaster_start"] = nil
            try JSONSerialization.data(withJSONObject: fields).write(to: URL(fileURLWithPath: recordFile))
            // Replay goes on to the end of the archive (the server keeps running, same postmaster).
            Self.release(blocked.fifo)
            try FileManager.default.removeItem(atPath: blocked.fifo)
            try FileManager.default.moveItem(atPath: blocked.saved, toPath: blocked.fifo)
            fifo = nil

            // A record whose server tsbackup cannot prove it started: the source cluster's data
            // directory, its postmaster's pid, a run id its environment does not carry (a server
            // started by hand since). Its lock file is free, as a killed run's is.
            let foreign = tmp + "/" + RecoverServerGuard.recordPrefix + "by-hand"
            try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: foreign + ".lock", contents: Data())
            let source = try Self.postmaster(archiving.cluster.dataDirectory)
            let planted: [String: Any] = ["pgdata": archiving.cluster.dataDirectory, "bin": "/usr/lib/postgresql/15/bin", "port": archiving.cluster.port,
                                          "owner": 999_999, "run": "started-by-hand", "postmaster_pid": source, "postmaster_start": "1"]
            try JSONSerialization.data(withJSONObject: planted).write(to: URL(fileURLWithPath: foreign + "/server.json"))

            // The next recover stops the killed run's server, says so, and recovers.
            let (next, _, nextData) = try await archiving.recover("next", ["--to-latest"], extra: ["--stop-after", "--archive-mode", "off"], environment: ["TMPDIR": tmp])
            #expect(next.exitCode == 0, "\(next.standardOutput) \(next.standardError)")
            let report = try? JSONOutput.decode(Recover.Report.self, from: Data(next.standardOutput.utf8))
            #expect(report?.ok == true && report?.serverRunning == false, "\(next.standardOutput)")
            #expect(report?.warnings.count == 1, "one message, for the killed run's server: \(report?.warnings ?? [])")
            #expect(report?.warnings.first.map { $0.contains("pid \(killPostmaster)") && $0.contains(killData) } ?? false, "\(report?.warnings ?? [])")
            #expect(next.standardError.contains(killData), "said on stderr too: \(next.standardError)")
            #expect(!FileManager.default.fileExists(atPath: killData + "/postmaster.pid"), "the killed recover's server is still running")
            if !FileManager.default.fileExists(atPath: killData + "/postmaster.pid") {
                try await faults.waitUntil("the killed recover's postmaster to end") { !KilledRunTests.isAlive(killPostmaster) }
            }
            #expect(FileManager.default.fileExists(atPath: killData + "/PG_VERSION"), "the killed run's directory is kept for inspection")
            #expect(!FileManager.default.fileExists(atPath: nextData + "/postmaster.pid"))
            #expect(Self.records(tmp).isEmpty, "records of gone runs are removed: \(Self.records(tmp))")
            // The source cluster, named by a record it could not prove, was not touched.
            #expect(KilledRunTests.isAlive(source))
            let alive = try await archiving.cluster.withSuperuser { try await $0.value("SELECT 1", as: Int32.self) }
            #expect(alive == 1)
        } catch {
            if let fifo { Self.release(fifo) }
            await archiving.stop()
            throw error
        }
        if let fifo { Self.release(fifo) }
        await archiving.stop()
    }
}

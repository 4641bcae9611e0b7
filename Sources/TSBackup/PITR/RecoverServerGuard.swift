import Foundation
import Synchronization

/// The PostgreSQL server a `recover` starts, looked after so that a recover that is stopped never
/// leaves it running unnoticed.
///
/// - **SIGTERM, SIGINT** (``interrupt(signal:)``, called by the command's signal handler): the
///   server this run started is stopped (`pg_ctl stop -m fast`) before the process exits
///   non-zero. A signal that comes while the server is being started waits for the start to end,
///   then stops it; one that comes before is enough to keep the run from starting it at all.
/// - **SIGKILL** (nothing runs): before starting the server, the run writes a record,
///   `$TMPDIR/tsbackup-recover-<UUID>/server.json` (the data directory, port, a run id, and once
///   it is up the postmaster's pid and start time from `postmaster.pid`), and holds the lock file
///   beside it (``OwnedScratchDirectory``: `flock`, which the kernel releases when the process
///   dies). The server is started with `TSBACKUP_RECOVER_RUN=<run id>` in its environment. Every
///   recover first sweeps these records (``sweep(parent:)``): a record whose lock it can take
///   belongs to a run that no longer exists. If the server running in that directory carries the
///   run id in its environment (`/proc/PID/environ`; where that cannot be read, if it has the
///   recorded pid and start time), it is the one that run started, not one an operator started
///   since: it is stopped and the run says so. A server it cannot prove that run started is left
///   alone and named, with the command to stop it.
/// - A run that ends normally, with or without error, has told the user about the server (its
///   report, or its error) and hands it over (``handOver()``): the record goes, and nothing stops
///   the server later. With `--stop-after`, or after a failed verification, the run stopped it
///   itself (``stopped()``).
///
/// Never touches a server tsbackup did not start: only a data directory a recover laid down
/// (into an empty directory) and a postmaster whose pid and start time it recorded.
public final class RecoverServerGuard: Sendable {
    public static let recordPrefix = "tsbackup-recover-"
    static let recordFile = "server.json"

    enum Phase: Sendable, Equatable {
        /// No server yet.
        case idle
        /// `pg_ctl start` is running.
        case starting
        /// The server was started (or its start failed part-way: it may run).
        case started
        /// Stopped by this run, or handed over to the user: nothing to do on a signal.
        case done
    }

    struct State: Sendable {
        var phase: Phase = .idle
        var signal: Int32?
        var server: Server?
        var record: OwnedScratchDirectory?
    }

    /// What a record holds.
    struct Server: Codable, Sendable, Equatable {
        var pgdata: String
        var bin: String
        var port: Int
        /// The recover process.
        var owner: Int32
        /// Put in the server's environment as `TSBACKUP_RECOVER_RUN`: what proves a postmaster is
        /// this run's, even when the run was killed before it could record the pid.
        var run: String?
        /// From `postmaster.pid` once the server is up: its pid and start time (epoch seconds),
        /// which together tell this postmaster from a later one in the same directory.
        var postmasterPID: Int32?
        var postmasterStart: String?

        enum CodingKeys: String, CodingKey {
            case pgdata, bin, port, owner, run
            case postmasterPID = "postmaster_pid"
            case postmasterStart = "postmaster_start"
        }
    }

    private let state = Mutex(State())
    /// Where records live (`$TMPDIR`).
    let parent: String
    /// This run's id, in its record and its server's environment.
    let run = UUID().uuidString

    static let environmentVariable = "TSBACKUP_RECOVER_RUN"
    /// What the server is started with beside the run's own settings.
    var serverEnvironment: [String: String?] { [Self.environmentVariable: run] }

    public init(parent: String = FileManager.default.temporaryDirectory.path) {
        self.parent = parent
    }

    /// The signal that interrupted the run, if one did.
    public var signal: Int32? { state.withLock { $0.signal } }

    // MARK: The run's side

    /// Called before `pg_ctl start`: refuses to start when a signal came already, and writes the
    /// record first, so a SIGKILL at any later moment leaves it behind.
    func willStart(pgdata: String, bin: String, port: Int) throws {
        let record = try OwnedScratchDirectory(prefix: Self.recordPrefix, parent: parent)
        let server = Server(pgdata: pgdata, bin: bin, port: port, owner: getpid(), run: run)
        do {
            try Self.write(server, to: record.path)
        } catch {
            record.remove()
            throw error
        }
        let interrupted = state.withLock { state -> Int32? in
            if let signal = state.signal { return signal }
            state.phase = .starting
            state.server = server
            state.record = record
            return nil
        }
        if let interrupted {
            record.remove()
            throw TSBackupError(.failed, "recover was interrupted (\(Self.signalName(interrupted))) before it started the server; \(pgdata) is laid down but was never started. Remove it before recovering again.")
        }
    }

    /// Called when `pg_ctl start` returned (successfully or not): records the postmaster's pid and
    /// start time when its `postmaster.pid` is there.
    func didStart() {
        let (server, record) = state.withLock { state -> (Server?, OwnedScratchDirectory?) in
            state.phase = .started
            return (state.server, state.record)
        }
        guard var server, let record, let running = Self.postmasterFile(server.pgdata) else { return }
        server.postmasterPID = running.pid
        server.postmasterStart = running.start
        try? Self.write(server, to: record.path)
        state.withLock { $0.server = server }
    }

    /// The run stopped the server itself: nothing is left to do for it.
    func stopped() { finish() }

    /// The run ended and told the user about the server (its report or its error): the server is
    /// theirs now. Call after the output is out.
    public func handOver() { finish() }

    private func finish() {
        let record = state.withLock { state -> OwnedScratchDirectory? in
            state.phase = .done
            defer { state.record = nil }
            return state.record
        }
        record?.remove()
    }

    // MARK: Signals

    /// What to do on SIGTERM or SIGINT: stop the server this run started (waiting for a start in
    /// progress to end first). Returns the message to print before exiting non-zero. Only the
    /// first signal acts; later ones return nil.
    public func interrupt(signal: Int32) async -> String? {
        let first = state.withLock { state -> Bool in
            guard state.signal == nil else { return false }
            state.signal = signal
            return true
        }
        guard first else { return nil }
        // A start in progress ends quickly (pg_ctl -W does not wait for the server); hang guard only.
        let deadline = ContinuousClock.now + .seconds(300)
        while state.withLock({ $0.phase == .starting }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let (phase, server) = state.withLock { ($0.phase, $0.server) }
        let name = Self.signalName(signal)
        guard phase == .started || phase == .starting, let server else {
            return phase == .done
                ? "recover was interrupted (\(name)) after it had finished; nothing was stopped."
                : "recover was interrupted (\(name)) before it started a server; nothing runs. Whatever it laid down in the --pgdata directory is incomplete: remove it before recovering again."
        }
        do {
            try await ServerControl.stop(bin: server.bin, pgdata: server.pgdata)
            finish()
            return "recover was interrupted (\(name)): it stopped the PostgreSQL server it had started on port \(server.port) (pg_ctl stop -m fast) before reporting on it. \(server.pgdata) is kept for inspection; remove it before recovering again."
        } catch {
            // The record stays (its lock goes with this process): the next recover tries again.
            let reason = (error as? TSBackupError)?.message ?? "\(error)"
            return "recover was interrupted (\(name)) and could not stop the PostgreSQL server it had started in \(server.pgdata) (port \(server.port)): \(reason) Stop it with `pg_ctl -D \(server.pgdata) stop -m fast`; the next recover also tries."
        }
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        default: "signal \(signal)"
        }
    }

    // MARK: Records of killed runs

    /// Looks at the records of recovers that no longer run (their lock is free): stops the server
    /// such a run started when it still runs and is provably that one, names one it cannot prove,
    /// and removes the records. Returns a message per record that needed one.
    public static func sweep(parent: String = FileManager.default.temporaryDirectory.path) async -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        var messages: [String] = []
        for name in names.sorted() where name.hasPrefix(recordPrefix) && !name.hasSuffix(".lock") {
            let path = parent + "/" + name
            let descriptor = open(path + ".lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { continue }  // no lock file: not ours to judge
            defer { close(descriptor) }
            // Locked: that recover is alive. Replaced meanwhile: look again next time.
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0, OwnedScratchDirectory.isSameFile(descriptor, path + ".lock") else { continue }
            var keep = false
            if let data = FileManager.default.contents(atPath: path + "/" + recordFile),
               let server = try? JSONDecoder().decode(Server.self, from: data) {
                let (message, stopFailed) = await settle(server)
                if let message { messages.append(message) }
                keep = stopFailed
            }
            if !keep {
                try? FileManager.default.removeItem(atPath: path)
                unlink(path + ".lock")
            }
        }
        // Lock files whose directory is gone (a run killed between creating the two, or between
        // removing them), as OwnedScratchDirectory's sweep does.
        for name in names where name.hasPrefix(recordPrefix) && name.hasSuffix(".lock") {
            let lockPath = parent + "/" + name
            let directory = String(lockPath.dropLast(".lock".count))
            guard !FileManager.default.fileExists(atPath: directory) else { continue }
            let descriptor = open(lockPath, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { continue }
            defer { close(descriptor) }
            if flock(descriptor, LOCK_EX | LOCK_NB) == 0, OwnedScratchDirectory.isSameFile(descriptor, lockPath),
               !FileManager.default.fileExists(atPath: directory) {
                unlink(lockPath)
            }
        }
        return messages
    }

    /// One killed run's server: stopped when it is provably the one that run started.
    static func settle(_ server: Server) async -> (message: String?, stopFailed: Bool) {
        let who = "an interrupted recover (pid \(server.owner), which no longer runs)"
        let subject = "An" + who.dropFirst(2)
        guard let running = postmasterFile(server.pgdata), isAlive(running.pid) else {
            // No server: the directory (if any) is what the killed run laid down.
            guard FileManager.default.fileExists(atPath: server.pgdata) else { return (nil, false) }
            return ("\(subject) left the data directory \(server.pgdata); no server runs there. Remove it, or keep it for inspection.", false)
        }
        switch proof(server, running: running) {
        case .proven:
            break
        case .another:
            // Started again since (by hand, or by anything else): not the server that run started.
            return (nil, false)
        case .unknown:
            return ("\(subject) was starting a PostgreSQL server in \(server.pgdata) when it died; a server (pid \(running.pid)) runs there now, and tsbackup cannot prove that run started it, so it was left running. If it is not in use, stop it: pg_ctl -D \(server.pgdata) stop -m fast.", false)
        }
        let pid = running.pid
        do {
            try await ServerControl.stop(bin: server.bin, pgdata: server.pgdata)
            return ("Stopped the PostgreSQL server (pid \(pid), port \(server.port)) that \(who) had started in \(server.pgdata); that run ended before it reported on the server. The directory is kept: remove it, or start it with pg_ctl -D \(server.pgdata) start to inspect it.", false)
        } catch {
            let reason = (error as? TSBackupError)?.message ?? "\(error)"
            return ("The PostgreSQL server (pid \(pid), port \(server.port)) that \(who) had started in \(server.pgdata) could not be stopped: \(reason) Stop it with pg_ctl -D \(server.pgdata) stop -m fast.", true)
        }
    }

    enum Proof { case proven, another, unknown }

    /// Whether the postmaster running in the record's directory is the one the record's run
    /// started: its environment carries the run id (a server started any other way does not);
    /// where the environment cannot be read, its pid and start time are the recorded ones.
    static func proof(_ server: Server, running: (pid: Int32, start: String)) -> Proof {
        if let run = server.run, let environ = FileManager.default.contents(atPath: "/proc/\(running.pid)/environ") {
            let marker = Array("\(environmentVariable)=\(run)".utf8)
            return environ.split(separator: 0).contains { Array($0) == marker } ? .proven : .another
        }
        guard let pid = server.postmasterPID, let start = server.postmasterStart else { return .unknown }
        return running.pid == pid && running.start == start ? .proven : .another
    }

    // MARK: Files

    static func write(_ server: Server, to directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try FileSystem.writeAtomically(try encoder.encode(server), to: directory + "/" + recordFile)
    }

    /// The first and third lines of `postmaster.pid`: the postmaster's pid and its start time.
    static func postmasterFile(_ pgdata: String) -> (pid: Int32, start: String)? {
        guard let text = try? String(contentsOfFile: pgdata + "/postmaster.pid", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.count >= 3, let pid = Int32(lines[0]), pid > 0, !lines[2].isEmpty else { return nil }
        return (pid, lines[2])
    }

    /// A live process (EPERM: it exists, owned by another user; a zombie is not alive).
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }
}

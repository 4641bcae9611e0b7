import Foundation
import Synchronization
import Testing
@testable import TSBackup

/// Signals the EINTR test's handler took (a C handler may only reach globals).
private let interruptions = Atomic<Int>(0)

/// The one read/write loop (`SystemIO`) every file read and write goes through: whole buffers,
/// offsets, the end of a file, the caller's own error, and a read interrupted by a signal.
@Suite("SystemIO: read and write loops through EINTR and short counts, with the caller's error")
struct SystemIOTests {
    struct Failure: Error, Equatable { let code: Int32 }

    @Test("writes and reads whole buffers, at the position or at an offset; a short read only at the end")
    func wholeBuffers() throws {
        let path = NSTemporaryDirectory() + "systemio-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try data.withUnsafeBytes { try SystemIO.writeAll(fd, $0) { Failure(code: $0) } }
        // At an offset: the file position stays where the plain write left it.
        try [UInt8](repeating: 0xAB, count: 10).withUnsafeBytes { try SystemIO.writeAll(fd, $0, at: 100) { Failure(code: $0) } }
        #expect(lseek(fd, 0, SEEK_CUR) == 300_000)
        var expected = data
        expected.replaceSubrange(100..<110, with: [UInt8](repeating: 0xAB, count: 10))

        var back = [UInt8](repeating: 0, count: 400_000)
        let whole = try back.withUnsafeMutableBytes { try SystemIO.readFull(fd, into: $0, at: 0) { Failure(code: $0) } }
        #expect(whole == 300_000 && Array(back[0..<whole]) == expected)
        let tail = try back.withUnsafeMutableBytes { try SystemIO.readFull(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<50]), at: 299_980) { Failure(code: $0) } }
        #expect(tail == 20 && Array(back[0..<20]) == Array(expected[299_980...]))
        #expect(lseek(fd, 0, SEEK_SET) == 0)
        var total = 0
        while true {
            let n = try back.withUnsafeMutableBytes { try SystemIO.readSome(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<65_536])) { Failure(code: $0) } }
            if n == 0 { break }
            #expect(Array(back[0..<n]) == Array(expected[total..<(total + n)]))
            total += n
        }
        #expect(total == 300_000)
    }

    @Test("a failed call throws the caller's error, made from its errno")
    func callersError() {
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(throws: Failure(code: EBADF)) {
            _ = try buffer.withUnsafeMutableBytes { try SystemIO.readSome(-1, into: $0) { Failure(code: $0) } }
        }
        #expect(throws: Failure(code: EBADF)) {
            _ = try buffer.withUnsafeMutableBytes { try SystemIO.readFull(-1, into: $0, at: 0) { Failure(code: $0) } }
        }
        #expect(throws: Failure(code: EBADF)) {
            try buffer.withUnsafeBytes { try SystemIO.writeAll(-1, $0) { Failure(code: $0) } }
        }
        // The library's wording, through its own error maker.
        let message = (try? buffer.withUnsafeBytes { try FileSystem.writeAll(-1, $0, path: "/nowhere/x") }).map { _ in "" }
        #expect(message == nil)
        do {
            try buffer.withUnsafeBytes { try FileSystem.writeAll(-1, $0, path: "/nowhere/x") }
        } catch let error as TSBackupError {
            #expect(error.message.hasPrefix("Could not write /nowhere/x: Bad file descriptor."))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a read interrupted by a signal (EINTR) goes on and returns the bytes")
    func interruptedRead() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        // A handler without SA_RESTART: a signal makes the blocked read fail with EINTR.
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in interruptions.add(1, ordering: .relaxed) }
        action.sa_flags = 0
        var previous = sigaction()
        try #require(sigaction(SIGUSR2, &action, &previous) == 0)
        defer { sigaction(SIGUSR2, &previous, nil) }
        let before = interruptions.load(ordering: .relaxed)

        struct Reader: @unchecked Sendable { let fd: Int32 }
        let reader = Reader(fd: fds[0])
        let started = Mutex<(thread: pthread_t, tid: String)?>(nil)
        let result = Mutex<Result<[UInt8], Failure>?>(nil)
        let thread = Thread {
            // Threads inherit the signal mask of the one that made them, and the test's may block everything.
            var unblock = sigset_t()
            sigemptyset(&unblock)
            sigaddset(&unblock, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
            // "<pid>/task/<tid>": this thread's kernel id, for its /proc entry.
            let tid = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self"))?.split(separator: "/").last.map(String.init) ?? ""
            started.withLock { $0 = (pthread_self(), tid) }
            var buffer = [UInt8](repeating: 0, count: 5)
            do {
                let n = try buffer.withUnsafeMutableBytes { try SystemIO.readFull(reader.fd, into: $0) { Failure(code: $0) } }
                result.withLock { $0 = .success(Array(buffer[0..<n])) }
            } catch let error as Failure {
                result.withLock { $0 = .failure(error) }
            } catch {}
        }
        thread.start()
        /// Whether the reader is blocked in read(2) (syscall 0 on x86_64, 63 on arm64).
        func blockedInRead(_ tid: String) -> Bool {
            guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/syscall", encoding: .utf8),
                  let number = text.split(separator: " ").first else { return false }
            #if arch(arm64)
            return number == "63"
            #else
            return number == "0"
            #endif
        }
        // Wait for states, not for time: the reader blocked in read, then each signal taken.
        // (The deadline is only a hang guard.)
        let deadline = Date().addingTimeInterval(600)
        func waiting(_ what: String) -> Bool {
            guard Date() < deadline else { Issue.record("hang guard: still waiting for \(what)"); return false }
            usleep(1000)
            return true
        }
        var interrupted = 0
        for round in 0..<3 {
            var target: (thread: pthread_t, tid: String)?
            while target == nil || !blockedInRead(target!.tid) {
                target = started.withLock { $0 }
                guard waiting("the reader to block in read") else { return }
            }
            #expect(pthread_kill(target!.thread, SIGUSR2) == 0)
            while interruptions.load(ordering: .relaxed) < before + round + 1 {
                guard waiting("the signal handler") else { return }
            }
            interrupted += 1
            // One byte between interruptions: the read resumes with what it has.
            if round == 1 { #expect(write(fds[1], [UInt8(7)], 1) == 1) }
        }
        #expect(interrupted == 3)
        #expect(write(fds[1], [UInt8](arrayLiteral: 1, 2, 3, 4), 4) == 4)
        while result.withLock({ $0 }) == nil {
            guard waiting("the read's result") else { return }
        }
        #expect(result.withLock { $0 } == .success([7, 1, 2, 3, 4]))
    }
}

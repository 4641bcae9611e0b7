import Foundation
import Testing
@testable import TSBackup

/// pg_basebackup's stderr (it runs with -v) turned into one error: its kind decides the exit
/// code, and its message keeps the problem lines only, each sentence ended once.
@Suite("pg_basebackup's failure message")
struct PgBaseBackupStderrTests {
    let settings = try! ConnectionSettings.resolve("postgres://backup@127.0.0.1:5432/postgres", environment: [:], homeDirectory: "/nonexistent")

    /// What PostgreSQL 15's pg_basebackup -v printed when the server was stopped mid-copy.
    let crashed = """
        pg_basebackup: initiating base backup, waiting for checkpoint to complete
        pg_basebackup: checkpoint completed
        pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
        pg_basebackup: error: could not read COPY data: server closed the connection unexpectedly
        \tThis probably means the server terminated abnormally
        \tbefore or while processing the request.
        """

    @Test("a server crash mid-copy: kind failed; the error and its continuation lines kept, -v lines left out, no double period")
    func crashMidCopy() {
        let error = PgBaseBackupStderr.failure(crashed, settings: settings)
        #expect(error.kind == .failed)
        #expect(error.message.contains("could not read COPY data") && error.message.contains("processing the request."))
        #expect(!error.message.contains("checkpoint") && !error.message.contains("start point") && !error.message.contains("initiating"))
        #expect(!error.message.contains(".."), "\(error.message)")
        #expect(!error.message.contains("Nothing was kept"), "the entry's fate is the caller's to say")
        #expect(!error.message.contains("\n"))
        #expect(!error.message.contains("pg_basebackup: ") && !error.message.contains("error: "), "no repeated prefixes: \(error.message)")
    }

    @Test("a refused replication connection: kind permission, one period")
    func refused() {
        let stderr = "pg_basebackup: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"backup\", no encryption\n"
        let error = PgBaseBackupStderr.failure(stderr, settings: settings)
        #expect(error.kind == .permission)
        #expect(error.message.contains("no pg_hba.conf entry for replication") && !error.message.contains(".."), "\(error.message)")
    }

    @Test("only -v lines, or nothing: the whole text is kept, and the message still ends its sentence once")
    func nothingToKeep() {
        #expect(PgBaseBackupStderr.problemLines("pg_basebackup: checkpoint completed\n") == "pg_basebackup: checkpoint completed\n")
        let empty = PgBaseBackupStderr.failure("", settings: settings)
        #expect(empty.kind == .failed && !empty.message.contains(".."), "\(empty.message)")
        #expect(PgBaseBackupStderr.sentence("done.") == "done." && PgBaseBackupStderr.sentence("done") == "done.")
    }
}

import Testing
@testable import TSBackup

@Suite("pg_restore failures told apart")
struct RestoreFailureTests {
    @Test("a full disk is named, with SQLSTATE 53100")
    func diskFull() {
        let log = #"pg_restore: error: COPY failed for table "filler": ERROR:  could not extend file "pg_tblspc/16384/PG_15_202209061/16385/17139": No space left on device HINT:  Check free disk space."#
        let error = RestoreProcedure.failure(phase: "data", status: "exit 1", detail: log, log: log)
        #expect(error.kind == .failed && error.sqlState == "53100")
        #expect(error.message.contains("ran out of disk space") && error.message.contains("No space left on device"))
    }

    @Test("a server that went away is a connection failure")
    func serverGone() {
        let log = "pg_restore: error: error returned by PQputCopyData: server closed the connection unexpectedly This probably means the server terminated abnormally"
        let error = RestoreProcedure.failure(phase: "data", status: "exit 1", detail: log, log: log)
        #expect(error.kind == .connection && error.message.contains("went away"))
    }

    @Test("anything else stays pg_restore's own message")
    func other() {
        let log = #"pg_restore: error: could not execute query: ERROR:  relation "x" already exists"#
        let error = RestoreProcedure.failure(phase: "pre-data", status: "exit 1", detail: log, log: log)
        #expect(error.kind == .failed && error.message.hasPrefix("pg_restore (pre-data) failed"))
    }
}

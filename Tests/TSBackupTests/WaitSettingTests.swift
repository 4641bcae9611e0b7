import Foundation
import Synchronization
import Testing
@testable import TSBackup

/// The product's waits for things outside it (the archiver, a restarting server, the scheduler)
/// are set through `TSBACKUP_<WHAT>_SECONDS`; the defaults stay what they were.
@Suite struct WaitSettingTests {
    @Test func unsetOrEmptyGivesTheDefault() throws {
        #expect(try WaitSetting.seconds(WaitSetting.archive, environment: [:]) == .seconds(60))
        #expect(try WaitSetting.seconds(WaitSetting.cleanup, environment: [:]) == .seconds(60))
        #expect(try WaitSetting.seconds(WaitSetting.scheduler, environment: [:]) == .seconds(30))
        #expect(try WaitSetting.seconds(WaitSetting.cleanup, environment: ["TSBACKUP_CLEANUP_WAIT_SECONDS": ""]) == .seconds(60))
        // The requests' own defaults are the same, so a library caller that sets nothing waits as before.
        let settings = ConnectionSettings(host: "127.0.0.1", port: 5432, user: "u", password: nil, database: "d")
        let repository = RepositoryAccess(url: try RepositoryURL.parse("/tmp/repo"), encryptionKeyFile: nil, environment: [:])
        #expect(BaseBackup.Request(settings: settings, repository: repository).archiveWait == WaitSetting.archive.default)
        #expect(Restore.Request(id: "x", repository: repository, target: settings).cleanupPatience == WaitSetting.cleanup.default)
        #expect(HypertableImport.Request(repository: repository, id: "x", target: settings).cleanupPatience == WaitSetting.cleanup.default)
    }

    @Test func theVariableSetsTheWait() throws {
        #expect(try WaitSetting.seconds(WaitSetting.archive, environment: ["TSBACKUP_ARCHIVE_WAIT_SECONDS": "300"]) == .seconds(300))
        #expect(try WaitSetting.seconds(WaitSetting.cleanup, environment: ["TSBACKUP_CLEANUP_WAIT_SECONDS": "0"]) == .zero)
        // Each setting reads only its own variable.
        #expect(try WaitSetting.seconds(WaitSetting.cleanup, environment: ["TSBACKUP_ARCHIVE_WAIT_SECONDS": "5"]) == .seconds(60))
    }

    @Test("anything but whole seconds from 0 to 86400 is a usage error naming the variable",
          arguments: ["soon", "-1", "1.5", "86401", "99999999999999999999"])
    func badValues(value: String) {
        #expect {
            _ = try WaitSetting.seconds(WaitSetting.archive, environment: ["TSBACKUP_ARCHIVE_WAIT_SECONDS": value])
        } throws: { error in
            let e = error as? TSBackupError
            return e?.kind == .usage && e?.message.contains("TSBACKUP_ARCHIVE_WAIT_SECONDS") == true
        }
    }

    /// Clean-up's patience is what bounds its retries: with none, an unreachable server is tried
    /// once and the failure is returned (the restore then names the database it left).
    @Test func noPatienceMeansOneAttempt() async {
        let attempts = Mutex(0)
        let problem = await ServerRecovery.retryingWhileUnreachable(patience: .zero) {
            attempts.withLock { $0 += 1 }
            throw TSBackupError(.connection, "Could not connect to 127.0.0.1:1: connection refused.")
        }
        #expect(attempts.withLock { $0 } == 1)
        #expect(problem?.contains("connection refused") == true)
    }
}

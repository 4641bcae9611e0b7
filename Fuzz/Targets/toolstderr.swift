// libFuzzer target: the standard error of the other child processes whose words reach the
// user: pg_basebackup's (PgBaseBackupStderr.failure: which exit code and advice) and psql's
// (PsqlStderr.serverMessage: the server's ERROR/DETAIL/HINT lines of a failed extension update).
import Foundation
@testable import TSBackupFuzzed

private let password = "Pw-fuzz-Secret-93"
private let settings: ConnectionSettings = {
    guard let settings = try? ConnectionSettings.resolve("host=db.example.com port=5432 user=replicator dbname=metrics password=\(password)",
                                                         environment: [:], homeDirectory: "/nonexistent", osUserName: "fuzz") else {
        FuzzInput.violated("the harness's connection string does not resolve")
    }
    return settings
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzToolStderr(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = FuzzInput.text(bytes, count)
    let error = PgBaseBackupStderr.failure(text, settings: settings)
    guard [.permission, .connection, .failed].contains(error.kind) else { FuzzInput.violated("pg_basebackup's failure became \(error.kind)") }
    // One paragraph of bounded length, and the password only if the tool itself printed it.
    checkMessage(error.message, limit: 1200, input: text)
    checkMessage(PsqlStderr.serverMessage(text), limit: 601, input: text)
    return 0
}

private func checkMessage(_ message: String, limit: Int, input: String) {
    guard !message.contains(where: \.isNewline) else { FuzzInput.violated("a message spans lines") }
    guard message.count <= limit else { FuzzInput.violated("a message of \(message.count) characters") }
    guard input.contains(password) || !message.contains(password) else { FuzzInput.violated("the password shows in a message") }
}

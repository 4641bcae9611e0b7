import ArgumentParser
import Foundation
import TSBackup

/// The repository option every backup command shares.
struct RepositoryOptions: ParsableArguments {
    @Option(name: .customLong("repo"), help: ArgumentHelp(
        "The backup repository: a directory, file:///PATH or s3://BUCKET[/PREFIX] (or TSBACKUP_REPO).",
        discussion: "S3 settings follow the AWS conventions: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3.",
        valueName: "repo"))
    var path: String?

    @Option(name: .customLong("encryption-key-file"), help: ArgumentHelp(
        "A file holding the repository's passphrase or raw key (or TSBACKUP_ENCRYPTION_KEY_FILE).",
        discussion: "A repository is encrypted when its first backup is written with a key; from then on every command needs that key.",
        valueName: "file"))
    var encryptionKeyFile: String?

    /// Where the repository is; a malformed --repo is a usage error (exit 64).
    func resolved() throws -> RepositoryAccess {
        let environment = ProcessInfo.processInfo.environment
        let text: String
        if let path, !path.isEmpty {
            text = path
        } else if let path = environment["TSBACKUP_REPO"], !path.isEmpty {
            text = path
        } else {
            throw ValidationError("Name the repository with --repo DIR or s3://BUCKET[/PREFIX] (or set TSBACKUP_REPO).")
        }
        let keyFile = [encryptionKeyFile, environment[EncryptionKeyFile.environmentVariable]].compactMap { $0 }.first { !$0.isEmpty }
        return RepositoryAccess(url: try RepositoryURL.parse(text), encryptionKeyFile: keyFile, environment: environment)
    }
}

/// A progress line on stderr, only when stderr is a terminal; redrawn in place.
/// With TSBACKUP_TRACE=1 every update is a line of its own instead, for timing phases in logs.
struct ProgressLine {
    static var trace: Bool { ProcessInfo.processInfo.environment["TSBACKUP_TRACE"] == "1" }
    static var enabled: Bool { isatty(2) == 1 || trace }

    static func show(_ text: String) {
        FileHandle.standardError.write(Data((trace ? text + "\n" : "\r\u{1B}[2K" + text).utf8))
    }

    static func clear() {
        if !trace { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%02d:%02d", s / 60, s % 60)
    }
}

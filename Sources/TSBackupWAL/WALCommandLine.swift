#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `wal-push PATH --repo DIR` and `wal-fetch NAME DEST --repo DIR` on a local, unencrypted
/// repository, parsed and run without swift-argument-parser or the async runtime: the command
/// lines archive_command and restore_command run once per segment.
///
/// Both `tsbackup` (before its argument parser) and `tsbackup-wal` call ``run(_:environment:)``.
/// It answers nil for anything else (another command, S3, a key file, an encrypted repository,
/// no repository yet, `--help`, a malformed command line), which the full command handles with
/// its own messages; so the fast path never decides anything the full one would decide otherwise.
package enum WALCommandLine {
    /// The exit code of the command, or nil when this path does not handle it.
    package static func run(_ arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment) -> Int32? {
        guard let command = arguments.first, command == "wal-push" || command == "wal-fetch" else { return nil }
        var positional: [String] = []
        var repo: String?
        var keyFile: String?
        var index = 1
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            func value(_ option: String) -> String?? {
                if word == option {
                    guard index < arguments.count else { return .some(nil) }
                    index += 1
                    return arguments[index - 1]
                }
                if word.hasPrefix(option + "=") { return String(word.dropFirst(option.count + 1)) }
                return nil
            }
            if let given = value("--repo") {
                guard let given, repo == nil else { return nil }
                repo = given
            } else if let given = value("--encryption-key-file") {
                guard let given else { return nil }
                keyFile = given
            } else if word.hasPrefix("-") {
                return nil
            } else {
                positional.append(word)
            }
        }
        guard positional.count == (command == "wal-push" ? 1 : 2) else { return nil }
        // A key file (or its environment variable) means encryption: the library opens it.
        if !(keyFile ?? "").isEmpty || !(environment["TSBACKUP_ENCRYPTION_KEY_FILE"] ?? "").isEmpty { return nil }
        let repoText = (repo?.isEmpty == false ? repo : nil) ?? environment["TSBACKUP_REPO"]
        guard let repoText, let root = LocalWALArchive.plainRoot(repoText) else { return nil }
        let workingDirectory = currentDirectory()
        do {
            if command == "wal-push" {
                let outcome = try LocalWALArchive.push(path: positional[0], root: root, dataDirectory: workingDirectory, guardsSIGBUS: true)
                if case .alreadyArchived(let file) = outcome {
                    printToStandardError("tsbackup: \(file) is already archived with identical content; nothing stored.")
                }
                return 0
            }
            switch try LocalWALArchive.fetch(name: positional[0], destination: positional[1], root: root, workingDirectory: workingDirectory) {
            case .restored:
                return 0
            case .missing:
                // PostgreSQL asks past the end of the archive: exit 1, quietly unless a person watches.
                if isatty(2) == 1 { printToStandardError("tsbackup: \(positional[0]) is not in the archive.") }
                return 1
            }
        } catch let error as TSBackupError {
            printToStandardError("tsbackup: error: \(error.message)")
            return error.exitCode
        } catch {
            printToStandardError("tsbackup: error: \(error)")
            return TSBackupError.Kind.failed.exitCode
        }
    }

    /// The working directory (PostgreSQL's data directory for archive_command).
    static func currentDirectory() -> String {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let found = buffer.withUnsafeMutableBufferPointer { getcwd(UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) != nil }
        guard found else { return "." }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// One line on stderr, written at once.
    package static func printToStandardError(_ line: String) {
        // Nothing to do when stderr cannot take it.
        try? Array((line + "\n").utf8).withUnsafeBytes { try SystemIO.writeAll(2, $0) { SystemIO.Errno(code: $0) } }
    }
}

import ArgumentParser
import Foundation

/// The repository option every backup command shares.
struct RepositoryOptions: ParsableArguments {
    @Option(name: .customLong("repo"), help: ArgumentHelp("The backup repository directory (or TSBACKUP_REPO).", valueName: "dir"))
    var path: String?

    func resolved() throws -> String {
        if let path, !path.isEmpty { return path }
        if let path = ProcessInfo.processInfo.environment["TSBACKUP_REPO"], !path.isEmpty { return path }
        throw ValidationError("Name the repository with --repo DIR (or set TSBACKUP_REPO).")
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

import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// How tsbackup starts a child so that it does not outlive tsbackup.
///
/// A tsbackup killed outright (SIGKILL, the OOM killer) runs no cleanup code, and its pg_dump,
/// pg_restore, psql or pg_basebackup would go on as orphans: still writing into a repository
/// entry the next run removes, or still loading a database the next restore drops. So every child
/// is started with a parent-death signal (Linux `PR_SET_PDEATHSIG`): SIGTERM when tsbackup dies,
/// on which PostgreSQL's tools cancel their queries on the server and exit.
///
/// swift-subprocess has no hook that runs in the child before `exec` on Linux, so the child is
/// started through util-linux's `setpriv --pdeathsig TERM -- program args...` (util-linux is
/// essential on Debian), which sets the signal and then execs the program: same pid, same
/// arguments, environment and file descriptors. Without setpriv, or for a program that cannot be
/// resolved (so the launch error stays swift-subprocess's own), the program is started as is.
///
/// Linux sends the signal when the *thread* that forked the child ends. swift-subprocess forks
/// every child on one worker thread that lives as long as the process, so the signal comes when
/// the process dies, not earlier. A kill in the instant between setpriv's fork and its `prctl`
/// still leaves an orphan; that window is microseconds.
public enum ChildLaunch {
    /// The setpriv binary, when this machine has one.
    static let setpriv: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The executable and arguments to hand swift-subprocess for `executable arguments...`:
    /// wrapped by setpriv unless `outlivesParent` (a step that must finish even if tsbackup dies
    /// in the middle of it) or when it cannot be wrapped.
    static func command(_ executable: String, _ arguments: [String], outlivesParent: Bool = false,
                        searchPath: String? = ProcessInfo.processInfo.environment["PATH"]) -> (Executable, Arguments) {
        let plain: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
        guard !outlivesParent, let setpriv, let resolved = resolve(executable, searchPath: searchPath) else {
            return (plain, Arguments(arguments))
        }
        return (.path(FilePath(setpriv)), Arguments(["--pdeathsig", "TERM", "--", resolved] + arguments))
    }

    /// The absolute path of `executable` (a path, or a name looked up in `searchPath`), or nil
    /// when it is not an executable file.
    static func resolve(_ executable: String, searchPath: String?) -> String? {
        if executable.contains("/") {
            return FileManager.default.isExecutableFile(atPath: executable) ? executable : nil
        }
        for directory in (searchPath ?? "/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
            let candidate = String(directory) + "/" + executable
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

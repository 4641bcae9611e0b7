// `tsbackup-wal wal-push PATH --repo R` / `tsbackup-wal wal-fetch NAME DEST --repo R`: the
// archive commands alone, for archive_command and restore_command (PostgreSQL starts one process
// per 16 MB segment). It links only TSBackupWAL: no Foundation, ICU, NIO or argument parser, so
// it starts in a few milliseconds. Local repositories that are not encrypted it serves itself;
// everything else (S3, encryption, the first push that creates a repository, --help, usage
// errors) it hands to the `tsbackup` binary installed beside it, with the same arguments.
#if canImport(Glibc)
import Glibc
#endif
import TSBackupWAL

let arguments = Array(CommandLine.arguments.dropFirst())

if let code = WALCommandLine.run(arguments) {
    exit(code)
}

guard let command = arguments.first, command == "wal-push" || command == "wal-fetch" else {
    if arguments.first == "--version" {
        print(TSBackupVersion.current)
        exit(0)
    }
    WALCommandLine.printToStandardError("""
        usage: tsbackup-wal wal-push PATH --repo REPO [--encryption-key-file FILE]
               tsbackup-wal wal-fetch NAME DEST --repo REPO [--encryption-key-file FILE]
        The archive commands of tsbackup alone, for archive_command = 'tsbackup-wal wal-push %p --repo ...'
        and restore_command = 'tsbackup-wal wal-fetch %f %p --repo ...'. See `tsbackup wal-push --help`.
        """)
    exit(TSBackupError.Kind.usage.exitCode)
}

// The full tsbackup beside this binary (the symlink-resolved path of this process).
var link = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
let length = readlink("/proc/self/exe", &link, link.count - 1)
let directory = length > 0 ? String(decoding: link[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
let full = (directory.lastIndex(of: "/").map { String(directory[..<$0]) } ?? ".") + "/tsbackup"
var argv: [UnsafeMutablePointer<CChar>?] = ([full] + arguments).map { strdup($0) } + [nil]
execv(full, &argv)
WALCommandLine.printToStandardError("tsbackup: error: tsbackup-wal serves local repositories that are not encrypted itself; for this one (S3, encrypted, or not created yet) it runs the tsbackup binary beside it, \(full), which could not be started (\(String(cString: strerror(errno)))). Install tsbackup and tsbackup-wal in the same directory.")
exit(TSBackupError.Kind.precondition.exitCode)

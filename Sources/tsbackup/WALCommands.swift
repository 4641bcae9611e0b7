import ArgumentParser
import Foundation
import TSBackup

struct WALPushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive one WAL file (for archive_command = 'tsbackup wal-push %p --repo ...').",
        discussion: """
            Runs in the data directory (PostgreSQL's working directory for archive_command); PATH is \
            relative to it. Compresses with zstd, records the SHA-256, and stores the file under the \
            cluster's system identifier and timeline. A file archived before with identical content \
            succeeds again; different content, or a repository holding another cluster's archive, fails.
            """)

    @Argument(help: "The file to archive (%p).") var path: String
    @OptionGroup var repository: RepositoryOptions

    func run() async throws {
        try await reportingErrors {
            let outcome = try await repository.resolved().with(create: true) { repo in
                try await WALPush.run(path: path, repository: repo)
            }
            if case .alreadyArchived(let file) = outcome {
                var stderr = StandardError()
                print("tsbackup: \(file) is already archived with identical content; nothing stored.", to: &stderr)
            }
        }
    }
}

struct WALFetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Restore one archived WAL file (for restore_command = 'tsbackup wal-fetch %f %p --repo ...').",
        discussion: """
            Verifies the file's SHA-256 before it writes DEST (through a temporary file and a rename). \
            A file the archive does not hold exits 1 without a message, as restore_command must.
            """)

    @Argument(help: "The archived file's name (%f).") var name: String
    @Argument(help: "Where to write it (%p), relative to the working directory.") var destination: String
    @OptionGroup var repository: RepositoryOptions

    func run() async throws {
        try await reportingErrors {
            let outcome = try await repository.resolved().with(create: false) { repo in
                try await WALFetch.run(name: name, destination: destination, repository: repo)
            }
            if case .missing = outcome {
                if isatty(2) == 1 {
                    var stderr = StandardError()
                    print("tsbackup: \(name) is not in the archive.", to: &stderr)
                }
                throw ExitCode(1)
            }
        }
    }
}

import ArgumentParser
import Foundation
import TSBackup
import TSBackupWAL

@main
struct TSBackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tsbackup",
        abstract: "Safe, verified backups and restores of PostgreSQL databases running TimescaleDB.",
        discussion: """
            Connections follow libpq conventions: --db takes a postgres:// URL or key=value string; \
            missing parts come from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and ~/.pgpass. \
            Prefer PGPASSWORD or ~/.pgpass to a password in the URL.

            Exit codes: 0 success, 1 failed, 2 cannot connect, 3 permission or authentication, \
            4 not found, 5 precondition not met (versions, extension, settings), 64 usage.
            """,
        version: TSBackupVersion.current,
        subcommands: [InspectCommand.self, BackupCommand.self, RestoreCommand.self, ListCommand.self, ShowCommand.self, VerifyCommand.self,
                      DeleteCommand.self, ExportHypertableCommand.self, ImportHypertableCommand.self, RepoCommand.self,
                      WALPushCommand.self, WALFetchCommand.self, BaseBackupCommand.self, RecoverCommand.self, ExpireCommand.self, ServeCommand.self]
    )

    /// As the generated main, except that a bare `--update-extension` (an option whose value is
    /// optional, which swift-argument-parser has no form for) becomes the hidden flag
    /// `--update-extension-default`; `--update-extension=VERSION` stays an option.
    static func main() async {
        ProcessMemory.configure(environment: ProcessInfo.processInfo.environment)
        var arguments = Array(CommandLine.arguments.dropFirst())
        // wal-push/wal-fetch on a local repository (archive_command and restore_command, once
        // per segment) run synchronously before the argument parser, as `tsbackup-wal` runs them;
        // anything else those commands are given falls through to WALPushCommand/WALFetchCommand.
        if let code = WALCommandLine.run(arguments) {
            Foundation.exit(code)
        }
        let end = arguments.firstIndex(of: "--") ?? arguments.endIndex
        for index in arguments.startIndex..<end where arguments[index] == "--update-extension" {
            arguments[index] = "--update-extension-default"
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every command that talks to a database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("db"), help: ArgumentHelp(
        "Connection URL (postgres://user@host:port/dbname?sslmode=...) or key=value string.",
        discussion: "Parts left out come from the PG* environment variables and ~/.pgpass.",
        valueName: "url"))
    var url: String?

    func settings() throws -> ConnectionSettings {
        try ConnectionSettings.resolve(url)
    }
}

/// Runs a command body, turning a ``TSBackupError`` into its message on stderr and its exit code.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as TSBackupError {
        printError(error)
        throw ExitCode(error.exitCode)
    }
}

func printError(_ error: TSBackupError) {
    var stderr = StandardError()
    print("tsbackup: error: \(error.message)", to: &stderr)
}

func printWarning(_ message: String) {
    var stderr = StandardError()
    print("tsbackup: warning: \(message)", to: &stderr)
}

import ArgumentParser
import Foundation
import TSBackup
import TSBackupService

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the backup service: a JSON API with roles, jobs, schedules and an audit log (docs/serve.md).",
        discussion: """
            Reads the config (YAML; docs/serve.md has an example), opens the state file (SQLite), \
            and listens on the configured address (127.0.0.1:8080 by default; HTTPS when a \
            certificate is configured). SIGTERM or SIGINT stops accepting work, cancels running \
            jobs (their entries are never left looking complete) and exits.
            """,
        subcommands: [RunServe.self, HashToken.self],
        defaultSubcommand: RunServe.self
    )

    struct RunServe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the service (the default).")

        @Option(help: ArgumentHelp("The service's config file (YAML).", valueName: "file"))
        var config: String

        func run() async throws {
            try await reportingErrors {
                let loaded = try ServiceConfig.load(path: config)
                // Restore jobs read it when they run; a bad value stops the start instead.
                _ = try WaitSetting.seconds(WaitSetting.cleanup)
                var server = try ServiceServer(config: loaded)
                try await ServiceOperations.make(core: server.core).install(into: &server)
                try await server.run()
            }
        }
    }

    struct HashToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash-token",
            abstract: "Print the SHA-256 of an API token (read from stdin) for the config's tokens list.",
            discussion: "The token is read from standard input, so it appears in no command line; give a long random one, e.g. `openssl rand -hex 32`.")

        func run() async throws {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw ValidationError("Give the token on standard input, e.g. `openssl rand -hex 32 | tee token.txt | tsbackup serve hash-token`.")
            }
            print(TokenHash.hex(of: line))
        }
    }
}

import ArgumentParser
import TSBackup

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Report what a backup or restore of a database depends on.",
        discussion: """
            Prints the PostgreSQL and TimescaleDB versions (installed and installable), other \
            extensions, restore-mode state, hypertables with dimensions, chunk counts and sizes, \
            the role's privileges and what they allow, and whether pg_dump's locks fit the \
            server's lock table. --json prints the same as stable JSON (docs/inspect-json.md).
            """
    )

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Print JSON instead of the readable report.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let settings = try database.settings()
            let outcome = try await Inspect.run(settings)
            print(json ? try JSONOutput.encode(outcome.inspection) : outcome.inspection.renderReport(), terminator: json ? "\n" : "")
            if let problem = outcome.problem { throw problem }
        }
    }
}

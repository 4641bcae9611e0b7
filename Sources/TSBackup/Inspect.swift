/// The `inspect` use case: read a server, and say whether tsbackup can work with it.
public enum Inspect {
    public struct Outcome: Sendable {
        public var inspection: ServerInspection
        /// Set when the server cannot run TimescaleDB at all; the report is still worth printing.
        public var problem: TSBackupError?
    }

    public static func run(_ settings: ConnectionSettings) async throws -> Outcome {
        let inspection = try await ServerInspector.inspect(settings)
        return Outcome(inspection: inspection, problem: problem(with: inspection))
    }

    static func problem(with inspection: ServerInspection) -> TSBackupError? {
        let ts = inspection.timescaledb
        let server = "\(inspection.connection.host):\(inspection.connection.port)"
        if ts.installableVersions.isEmpty && !ts.installed {
            return TSBackupError(.precondition, "The server at \(server) has no TimescaleDB extension installed, so tsbackup has nothing TimescaleDB-aware to do there. Install TimescaleDB on that server (for the sandbox: scripts/setup.sh) or point --db at a TimescaleDB server.")
        }
        if !ts.preloaded {
            return TSBackupError(.precondition, "TimescaleDB is not loaded on the server at \(server): shared_preload_libraries lacks timescaledb, so hypertables cannot work and no backup or restore of them is safe. Add timescaledb to shared_preload_libraries in postgresql.conf and restart the server.")
        }
        return nil
    }
}

import Foundation

/// How long tsbackup waits for something outside it (the archiver, a restarting server, the
/// TimescaleDB scheduler), set through the environment as `TSBACKUP_<WHAT>_SECONDS` so that a
/// slow or loaded machine can wait longer without a flag on every command. The defaults suit an
/// ordinary server; each wait ends as soon as what it waits for happens.
public enum WaitSetting {
    /// base-backup: how long the archiving preflight waits for the switched segment to reach the repository.
    public static let archive = (name: "TSBACKUP_ARCHIVE_WAIT_SECONDS", default: Duration.seconds(60))
    /// restore and import-hypertable: how long clean-up after a failure keeps trying a server that
    /// cannot be reached (crashed, restarting) to drop what the run created.
    public static let cleanup = (name: "TSBACKUP_CLEANUP_WAIT_SECONDS", default: Duration.seconds(60))
    /// recover: how long the checks wait for the recovered cluster's TimescaleDB scheduler.
    public static let scheduler = (name: "TSBACKUP_SCHEDULER_WAIT_SECONDS", default: Duration.seconds(30))

    /// The wait `setting` names: its variable's whole seconds (0 to 86,400), or its default when
    /// the variable is unset or empty. Anything else is a usage error naming the variable.
    public static func seconds(_ setting: (name: String, default: Duration),
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws(TSBackupError) -> Duration {
        guard let text = environment[setting.name], !text.isEmpty else { return setting.default }
        guard let seconds = Int(text.trimmingCharacters(in: .whitespaces)), (0...86_400).contains(seconds) else {
            throw TSBackupError(.usage, "\(setting.name)=\"\(text.singleLine(limit: 40))\" is not a whole number of seconds from 0 to 86400. Fix it, or unset it for the default of \(setting.default.components.seconds) s.")
        }
        return .seconds(seconds)
    }
}

import Foundation
import Subprocess

/// The environment every child process tsbackup starts runs with: the caller's environment, then
/// the variables a call site gives (PG* connection settings, PGOPTIONS), then messages in English.
///
/// tsbackup reads its children's stderr (pg_dump's `error:`/`detail:` lines decide whether a
/// vanished chunk is retried; pg_restore's and psql's errors are classified). Under a translated
/// locale (`LANG=de_DE.UTF-8`) PostgreSQL's tools print `Fehler:`/`Detail:` instead, and that
/// reading would silently stop working. So `LC_MESSAGES=C` is set, and `LC_ALL` and `LANGUAGE`
/// are removed, because `LC_ALL` overrides `LC_MESSAGES` and GNU gettext prefers `LANGUAGE`.
/// A call site that names one of these variables itself keeps its value (the test harness uses
/// that to start `tsbackup` itself under a German locale).
///
/// `ProcessRunner` and `CopyPipeline`, the only places that start processes, apply this.
public enum ChildEnvironment {
    /// The variables forced for message locale, applied after the call site's variables.
    static let messageLocale: [String: String?] = ["LC_MESSAGES": "C", "LC_ALL": nil, "LANGUAGE": nil]

    /// The changes to apply to the inherited environment: `overrides`, plus the message locale
    /// unless `overrides` names those variables. A nil value removes the variable.
    public static func changes(_ overrides: [String: String?]) -> [String: String?] {
        var changes = overrides
        for (key, value) in messageLocale where overrides.index(forKey: key) == nil {
            changes[key] = .some(value)
        }
        return changes
    }

    /// The complete environment a child sees when tsbackup runs with `inherited` (pure, so tests
    /// can show what a child would get under any locale).
    public static func resolved(inheriting inherited: [String: String], _ overrides: [String: String?] = [:]) -> [String: String] {
        var environment = inherited
        for (key, value) in changes(overrides) {
            environment[key] = value
        }
        return environment
    }

    /// The same changes as swift-subprocess's environment, for the places that start processes.
    static func subprocess(_ overrides: [String: String?] = [:]) -> Subprocess.Environment {
        var keyed: [Subprocess.Environment.Key: String?] = [:]
        for (key, value) in changes(overrides) {
            if let envKey = Subprocess.Environment.Key(rawValue: key) { keyed[envKey] = value }
        }
        return .inherit.updating(keyed)
    }
}

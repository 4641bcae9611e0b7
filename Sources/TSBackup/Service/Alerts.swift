import Foundation

/// Which checks of a database are failing, and the transitions worth telling someone about.
///
/// An alert is raised when a check (the database's backups, or its restore rehearsals) goes from
/// passing (or never seen) to failing, and a recovery when it passes again. Further failures
/// while it is already failing raise nothing: people are told about changes, not every run.
/// A failing rehearsal raises the same alert as a failed backup, with `check: rehearsal`.
public struct AlertState: Sendable, Equatable {
    public enum Check: String, Codable, Sendable, CaseIterable {
        case backup, rehearsal
    }

    public enum Transition: String, Codable, Sendable {
        /// The check was passing (or unknown) and now fails.
        case failure
        /// The check was failing and now passes.
        case recovery
    }

    public struct Key: Hashable, Sendable, Codable {
        public var database: String
        public var check: Check
        public init(database: String, check: Check) {
            self.database = database
            self.check = check
        }
    }

    /// Failing checks and since when (the first failure of the streak).
    public private(set) var failing: [Key: Date]

    /// Starts from what was persisted: the checks failing when the service last stopped.
    public init(failing: [Key: Date] = [:]) {
        self.failing = failing
    }

    /// Records an outcome; returns the transition it causes, if any, with the streak's start.
    public mutating func record(database: String, check: Check, ok: Bool, at date: Date) -> (Transition, since: Date)? {
        let key = Key(database: database, check: check)
        switch (failing[key], ok) {
        case (nil, false):
            failing[key] = date
            return (.failure, date)
        case (let since?, true):
            failing[key] = nil
            return (.recovery, since)
        default:
            return nil
        }
    }

    public func isFailing(database: String, check: Check) -> Bool {
        failing[Key(database: database, check: check)] != nil
    }
}

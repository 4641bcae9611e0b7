/// An error the user can act on: one paragraph that says what happened and what to do, and the exit
/// code the command line reports for it.
///
/// Messages are written for people, never contain a password, and never echo a connection URL as
/// typed (it may hold one): they name the server as `user@host:port/database`.
public struct TSBackupError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is; it decides the exit code.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public let exitCode: Int32

        /// The operation ran and failed, or the result did not verify.
        public static let failed = Kind(name: "failed", exitCode: 1)
        /// The server could not be reached: refused, unknown host, timeout, TLS negotiation.
        public static let connection = Kind(name: "connection", exitCode: 2)
        /// The server rejected the credentials, or the role lacks a privilege the operation needs.
        public static let permission = Kind(name: "permission", exitCode: 3)
        /// Something named on the command line does not exist (database, backup, table).
        public static let notFound = Kind(name: "not-found", exitCode: 4)
        /// The environment does not allow the operation: versions, missing extension, settings.
        public static let precondition = Kind(name: "precondition", exitCode: 5)
        /// The command line itself is wrong (malformed URL, conflicting options).
        public static let usage = Kind(name: "usage", exitCode: 64)

        public var description: String { name }
    }

    public var kind: Kind
    public var message: String
    /// The server's SQLSTATE when the error came from a statement it rejected, so callers can
    /// branch on the code (e.g. 0A000, feature not supported) rather than on message text.
    public var sqlState: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
    }

    public var exitCode: Int32 { kind.exitCode }
    public var description: String { message }
}

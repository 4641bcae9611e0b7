import Foundation

/// A PostgreSQL client program found on this machine, with its version.
public struct PostgresTool: Sendable, Equatable, Codable {
    public var path: String
    /// What `--version` printed, e.g. "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)".
    public var version: String
    public var majorVersion: Int
}

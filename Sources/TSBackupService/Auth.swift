import Crypto
import Foundation

/// SHA-256 of API tokens, as stored in the config.
public enum TokenHash {
    /// The digest of a token.
    public static func digest(of token: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(token.utf8)))
    }

    /// The digest as 64 lowercase hex digits (what the config's `sha256` holds).
    public static func hex(of token: String) -> String {
        digest(of: token).map { String(format: "%02x", $0) }.joined()
    }

    /// Compares two digests without an early exit, so the time taken says nothing about where
    /// they differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<a.count { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}

/// Who is calling: the token's name, role and (for owners) databases.
public struct Identity: Sendable, Equatable {
    public var name: String
    public var role: ServiceConfig.Role
    public var databases: Set<String>

    public init(name: String, role: ServiceConfig.Role, databases: Set<String> = []) {
        self.name = name
        self.role = role
        self.databases = databases
    }
}

/// What a route needs. Checked on every route through ``Identity/allows(_:database:)``.
public enum Permission: String, Sendable {
    /// Read metadata: databases, backups, jobs, schedules, restore requests (owners: their databases).
    case read
    /// Download a backup's files (operators; owners of its database).
    case download
    /// Ask for work on a database: on-demand backup, hypertable export, a restore request into a
    /// new database (operators; owners of the database).
    case request
    /// Approve or reject restores, promote, delete backups, pause and resume schedules (operators).
    case operate
    /// Read the audit log (operators and viewers).
    case audit
}

extension Identity {
    /// Whether this identity may do `permission` on `database` (nil: no database in particular,
    /// e.g. a list that is then filtered to ``visibleDatabases(in:)``).
    public func allows(_ permission: Permission, database: String?) -> Bool {
        switch role {
        case .operator:
            return true
        case .viewer:
            return permission == .read || permission == .audit
        case .owner:
            switch permission {
            case .read, .download, .request:
                return database.map { databases.contains($0) } ?? true
            case .operate, .audit:
                return false
            }
        }
    }

    /// The databases this identity sees.
    public func visibleDatabases(in config: ServiceConfig) -> [String] {
        let all = config.databases.keys.sorted()
        return role == .owner ? all.filter { databases.contains($0) } : all
    }
}

/// Finds the identity of a bearer token by comparing its SHA-256 with every configured hash in
/// constant time (all of them are compared, so the time does not say which one matched).
public struct TokenAuthenticator: Sendable {
    let tokens: [ServiceConfig.Token]

    public init(tokens: [ServiceConfig.Token]) {
        self.tokens = tokens
    }

    public func identity(forToken token: String) -> Identity? {
        let digest = TokenHash.digest(of: token)
        var found: Identity?
        for candidate in tokens {
            if TokenHash.constantTimeEqual(candidate.sha256, digest) && found == nil {
                found = Identity(name: candidate.name, role: candidate.role, databases: Set(candidate.databases))
            }
        }
        return found
    }
}

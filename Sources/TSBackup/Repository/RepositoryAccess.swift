import Foundation

/// How a command reaches its repository: where it is and the key that opens it.
public struct RepositoryAccess: Sendable {
    public var url: RepositoryURL
    /// A file holding the encryption passphrase or key (`--encryption-key-file`).
    public var encryptionKeyFile: String?
    /// Where S3 settings (AWS_*) come from.
    public var environment: [String: String]

    public init(url: RepositoryURL, encryptionKeyFile: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.url = url
        self.encryptionKeyFile = encryptionKeyFile
        self.environment = environment
    }

    /// A local directory without a key.
    public init(path: String) {
        self.init(url: .local(path: URL(fileURLWithPath: path).standardizedFileURL.path))
    }

    /// Refuses a run whose `bytes` the storage (or its local staging) has no room for, before
    /// anything is created.
    public func checkSpace(forWriting bytes: Int64) async throws {
        switch url {
        case .local(let path):
            try LocalRepository.checkSpace(at: path, forWriting: bytes)
        case .s3:
            try S3Repository.checkStagingSpace(environment: environment, location: url.description, forWriting: bytes)
        }
    }

    /// ``checkSpace(forWriting:)`` for a run whose data is streamed into the repository
    /// (``Repository/writeStreamedFile(_:path:expectedBytes:_:)``): S3 stages none of it locally.
    public func checkSpace(forStreaming bytes: Int64) async throws {
        switch url {
        case .local(let path):
            try LocalRepository.checkSpace(at: path, forWriting: bytes)
        case .s3:
            break
        }
    }

    /// Opens the repository; creates it (on its first write) when `create` is set.
    public func open(create: Bool) async throws -> any Repository {
        switch url {
        case .local(let path):
            return try LocalRepository.open(path, create: create, access: self)
        case .s3:
            return try await S3RepositoryFactory.open(self, create: create)
        }
    }
}

extension RepositoryAccess {
    /// Opens the repository, runs `body` with it and closes it, however `body` ends.
    public func with<T>(create: Bool, _ body: (any Repository) async throws -> T) async throws -> T {
        let repository = try await open(create: create)
        do {
            let result = try await body(repository)
            await repository.close()
            return result
        } catch {
            await repository.close()
            throw error
        }
    }
}

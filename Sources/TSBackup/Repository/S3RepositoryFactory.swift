import Foundation

/// Opens `s3://` repositories.
enum S3RepositoryFactory {
    static func open(_ access: RepositoryAccess, create: Bool) async throws -> any Repository {
        try await S3Repository.open(access, create: create)
    }
}

import Foundation

/// Opens `s3://` repositories.
enum S3RepositoryFactory {
    static func open(_ access: RepositoryAccess, create: Bool) async throws -> any Repository {
        throw TSBackupError(.usage, "This build of tsbackup cannot use S3 repositories yet (\(access.url)). Give --repo a local directory.")
    }
}

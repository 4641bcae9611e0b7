// libFuzzer target: what a user or the environment gives as connection and location settings:
// a libpq connection string (URI or key=value), a password file's lines,
// an S3 location and an AWS config/credentials file.
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConnection(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = FuzzInput.text(bytes, count)
    // PGPASSWORD is set so that resolving never reads a password file the input names (passfile=).
    if let settings = try? ConnectionSettings.resolve(text, environment: ["PGPASSWORD": "env-secret"], homeDirectory: "/nonexistent",
                                                      osUserName: "fuzz") {
        _ = settings.libpqEnvironment
        _ = settings.childProcessEnvironment(options: "-c statement_timeout=0")
        // The password never shows in what tsbackup prints about a connection: both texts are the
        // same whatever the password is. (A substring test was wrong: a password such as "5432" or
        // "word" legitimately occurs in "user@host:5432/db" or "password: <redacted>".)
        if let password = settings.password {
            var other = settings
            other.password = password + "-other"
            if settings.debugDescription != other.debugDescription || settings.displayName != other.displayName
                || settings.description != other.description {
                FuzzInput.violated("the password shows in the connection's description")
            }
        }
    }
    for line in text.split(whereSeparator: \.isNewline) { _ = PasswordFile.splitFields(line) }
    _ = PasswordFile.password(in: text, host: "/var/run/postgresql", port: 5432, database: "metrics", user: "backup")
    _ = PasswordFile.password(in: text, host: "db.example.com", port: 6432, database: "*", user: "postgres")
    _ = try? S3Location(parsing: text)
    let config = AWSConfigFile.parse(text)
    _ = config.section("default")
    _ = config.section("profile backup")
    return 0
}

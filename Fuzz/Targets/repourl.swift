// libFuzzer target: what `--repo`, TSBACKUP_REPO or the service's config names as a
// repository (RepositoryURL.parse): a path, file:///PATH or s3://BUCKET[/PREFIX].
import Foundation
@testable import TSBackupFuzzed

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRepositoryURL(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = FuzzInput.text(bytes, count)
    let url: RepositoryURL
    do {
        url = try RepositoryURL.parse(text)
    } catch let error as TSBackupError {
        // Bad input is a usage error (exit 64) with a message, never a crash.
        guard error.kind == .usage, !error.message.isEmpty else { FuzzInput.violated("a refused --repo is not a usage error: \(error)") }
        return 0
    } catch {
        FuzzInput.violated("RepositoryURL.parse threw \(error)")
    }
    switch url {
    case .s3(let bucket, let prefix):
        // S3's bucket rules, checked again independently; a prefix without empty, "." or ".."
        // components (every object key is prefix + "/" + name).
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-".unicodeScalars)
        guard (3...63).contains(bucket.unicodeScalars.count), bucket.unicodeScalars.allSatisfy(allowed.contains),
              bucket.first != "." && bucket.first != "-" && bucket.last != "." && bucket.last != "-" else {
            FuzzInput.violated("s3 bucket \"\(bucket)\" breaks S3's naming rules")
        }
        let components = prefix.split(separator: "/", omittingEmptySubsequences: false)
        guard prefix.isEmpty || !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            FuzzInput.violated("s3 prefix \"\(prefix)\" has an empty, \".\" or \"..\" component")
        }
        // Round trip: the description (what messages and the service show) names the same place.
        guard (try? RepositoryURL.parse(url.description)) == url else { FuzzInput.violated("\(url) does not parse back") }
    case .local(let path):
        // Bytes, not Characters: "/" followed by a combining mark is one Character, and
        // String.hasPrefix("/") is false for it although the path is absolute.
        guard path.utf8.first == UInt8(ascii: "/") else { FuzzInput.violated("local repository path \"\(path)\" is not absolute") }
        guard url.description == path else { FuzzInput.violated("a local repository is not described by its path") }
    }
    return 0
}

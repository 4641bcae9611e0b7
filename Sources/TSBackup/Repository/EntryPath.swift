import Foundation

/// Confines the file names a manifest gives to the manifest's own entry directory.
///
/// A manifest vouches for itself (its hashes are written by whoever writes the manifest), so a
/// name like `../../etc/hostname`, `/etc/passwd` or a symbolic link inside the entry would let
/// anyone who can write an unencrypted repository make verify, restore or import read (or hash,
/// or hand to pg_restore) a file outside the repository. Every path from a manifest goes through
/// ``validate(_:)`` (names only, pure) and, before a file is opened, ``resolve(_:in:)`` (no
/// component is a symbolic link).
public enum EntryPath {
    /// Checks that `path` is a plain relative name inside an entry: not empty, not absolute, no
    /// `.` or `..` component, no empty component, no backslash or control character. Returns it.
    @discardableResult
    public static func validate(_ path: String) throws -> String {
        if let problem = problem(path) {
            throw TSBackupError(.failed, "The manifest names the file \(String(reflecting: path)), which \(problem); tsbackup reads only files inside the backup's own directory, so it refused. The repository may have been changed by someone else: check it, and use another backup.")
        }
        return path
    }

    /// Why `path` is not a name inside an entry, or nil.
    static func problem(_ path: String) -> String? {
        if path.isEmpty { return "is empty" }
        if path.hasPrefix("/") { return "is an absolute path" }
        if path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) { return "contains a control character" }
        if path.contains("\\") { return "contains a backslash" }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return "has an empty path component" }
            if component == ".." { return "leaves its directory (..)" }
            if component == "." { return "has a '.' component" }
        }
        return nil
    }

    /// `directory/path` after ``validate(_:)``, refusing it when `path` or any directory on the
    /// way is a symbolic link (which could point anywhere). A path that does not exist (yet) is
    /// returned: callers report missing files themselves.
    public static func resolve(_ path: String, in directory: String) throws -> String {
        try validate(path)
        var current = directory
        for component in path.split(separator: "/") {
            current += "/" + component
            var info = stat()
            guard lstat(current, &info) == 0 else { break }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                throw TSBackupError(.failed, "The manifest names the file \(String(reflecting: path)), but \(current) is a symbolic link; tsbackup reads only files inside the backup's own directory, so it refused. The repository may have been changed by someone else: check it, and use another backup.")
            }
        }
        return directory + "/" + path
    }
}

extension EntryPath {
    /// ``validate(_:)`` for a path of entry `id` (any repository, local or not).
    @discardableResult
    public static func confined(_ path: String, entry id: String) throws -> String {
        try validate(path)
    }

    /// Checks every path of `files`.
    public static func confine(_ files: [BackupManifest.FileEntry], entry id: String) throws {
        for file in files { try validate(file.path) }
    }
}

import Foundation

/// libpq's password file (`~/.pgpass`, `PGPASSFILE`): lines of
/// `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaped.
enum PasswordFile {
    struct Lookup {
        var password: String?
        var warnings: [String] = []
    }

    static func lookup(path: String, host: String, port: Int, database: String, user: String) -> Lookup {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return Lookup() }
        // libpq ignores a password file that others can read; so do we, and say so.
        if info.st_mode & (S_IRWXG | S_IRWXO) != 0 {
            return Lookup(warnings: ["The password file \(path) is readable by group or others and was ignored; run chmod 0600 \(path)."])
        }
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else { return Lookup() }
        return Lookup(password: password(in: contents, host: host, port: port, database: database, user: user))
    }

    /// The password on the first line of a password file's `contents` that matches, or nil.
    static func password(in contents: String, host: String, port: Int, database: String, user: String) -> String? {
        // A Unix-socket connection matches the host name "localhost", as in libpq.
        let hostToMatch = host.hasPrefix("/") ? "localhost" : host
        for line in contents.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("#") { continue }
            let fields = splitFields(line)
            guard fields.count == 5 else { continue }
            func matches(_ field: String, _ value: String) -> Bool { field == "*" || field == value }
            if matches(fields[0], hostToMatch), matches(fields[1], String(port)),
               matches(fields[2], database), matches(fields[3], user) {
                return fields[4]
            }
        }
        return nil
    }

    static func splitFields(_ line: Substring) -> [String] {
        var fields: [String] = [""]
        var escaped = false
        for c in line {
            if escaped {
                fields[fields.count - 1].append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == ":" && fields.count < 5 {
                fields.append("")
            } else {
                fields[fields.count - 1].append(c)
            }
        }
        return fields
    }
}

import Foundation
import Hummingbird
import NIOCore
import NIOFoundationEssentialsCompat
import NIOFoundationCompat
import TSBackup

/// GET /api/backups, GET /api/backups/{id}, GET /api/backups/{id}/download, DELETE /api/backups/{id}.
/// Backups and hypertable exports are both repository entries; `kind` tells them apart.
struct BackupRoutes {
    let core: ServiceCore

    func add(to api: RouterGroup<ServiceRequestContext>) {
        api.get("backups") { request, context in
            let identity = try context.require(.read)
            let database = Query.string(request, "database")
            if let database {
                _ = try core.database(database)
                try context.require(.read, database: database)
            }
            let visible = Set(identity.visibleDatabases(in: core.config))
            let views = try await core.entries().compactMap { entry -> BackupView? in
                let view = BackupView(entry, config: core.config)
                if let database, view.database != database { return nil }
                if identity.role == .owner && !(view.database.map(visible.contains) ?? false) { return nil }
                return view
            }
            return try APIJSON.response(views)
        }
        api.get("backups/:id") { _, context in
            let entry = try await core.entry(try Query.parameter(context, "id"))
            try core.check(.read, entry: entry, context: context)
            struct Detail: Encodable {
                var backup: BackupView
                var manifest: JSONValue?
            }
            let manifest = try entry.manifest.map { try JSONOutput.encode($0) } ?? entry.hypertable.map { try JSONOutput.encode($0) }
            return try APIJSON.response(Detail(backup: BackupView(entry, config: core.config), manifest: JSONValue.parse(manifest)))
        }
        api.get("backups/:id/download") { _, context in
            let id = try Query.parameter(context, "id")
            try core.check(.download, entry: try await core.entry(id), context: context)
            // Held from before the files are opened until the stream ends, so retention keeps it.
            guard core.holds.acquireReader(id) else {
                throw APIError.conflict("Backup \(id) is being deleted (retention or an operator); it cannot be downloaded.")
            }
            do {
                // Read again under the hold: it may have been deleted before the hold was taken.
                return try await download(try await core.entry(id))
            } catch {
                core.holds.releaseReader(id)
                throw error
            }
        }
        api.delete("backups/:id") { _, context in
            let identity = try context.require(.operate)
            let entry = try await core.entry(try Query.parameter(context, "id"))
            let database = core.config.databaseName(of: entry) ?? "(repository)"
            // A download streaming the entry holds it (as retention respects); refused rather than
            // queued, so the operator learns now, not from a failed job.
            guard !core.holds.held.contains(entry.id) else {
                context.auditNote.set("refused: a download is streaming it")
                throw APIError.conflict(JobKinds.deleteRefused(entry.id).message)
            }
            let job = try await core.enqueue(kind: JobKinds.delete, database: database, parameters: ["backup_id": entry.id], identity: identity, context: context)
            return try APIJSON.response(JobView(job), status: .accepted)
        }
    }

    /// The entry as a tar stream: its manifest first, then every file the manifest lists, each
    /// read in 256 KiB pieces (never whole into memory). Encrypted or remote entries are
    /// materialized (decrypted) into a scratch directory first, removed when the stream ends.
    func download(_ entry: RepositoryEntry) async throws -> Response {
        guard entry.state == .complete, entry.problem == nil else {
            throw APIError.conflict("Entry \(entry.id) is \(entry.state.rawValue)\(entry.problem.map { " (\($0))" } ?? ""); only complete entries can be downloaded.")
        }
        let manifestText = try entry.manifest.map { try JSONOutput.encode($0) } ?? entry.hypertable.map { try JSONOutput.encode($0) } ?? "{}"
        let manifestData = Data((manifestText + "\n").utf8)
        let files = entry.files
        let materialized = try await core.config.repositoryAccess().with(create: false) { repo in
            try await repo.materialize(entry, files: files)
        }
        var members: [(name: String, path: String?, size: Int64)] = [("\(entry.id)/manifest.json", nil, Int64(manifestData.count))]
        for file in files {
            let path = materialized.directory + "/" + file.path
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
            guard size == file.bytes else {
                materialized.remove()
                throw APIError(.internalServerError, code: "damaged", "The file \(file.path) of \(entry.id) is missing or has the wrong size; run `tsbackup verify \(entry.id)`.")
            }
            members.append(("\(entry.id)/\(file.path)", path, size))
        }
        let stream = members
        let length = members.reduce(Int64(1024)) { $0 + 512 + TarWriter.padded($1.size) }
        let holds = core.holds
        let body = ResponseBody(contentLength: Int(length)) { writer in
            defer {
                materialized.remove()
                holds.releaseReader(entry.id)
            }
            for member in stream {
                try await writer.write(ByteBuffer(bytes: try TarWriter.header(name: member.name, size: member.size)))
                if let path = member.path {
                    guard let handle = FileHandle(forReadingAtPath: path) else { throw APIError(.internalServerError, code: "io", "cannot open \(member.name)") }
                    defer { try? handle.close() }
                    var sent: Int64 = 0
                    while sent < member.size {
                        let chunk = try handle.read(upToCount: 256 * 1024) ?? Data()
                        if chunk.isEmpty { throw APIError(.internalServerError, code: "io", "\(member.name) ended early") }
                        sent += Int64(chunk.count)
                        try await writer.write(ByteBuffer(data: chunk))
                    }
                } else {
                    try await writer.write(ByteBuffer(data: manifestData))
                }
                let padding = Int(TarWriter.padded(member.size) - member.size)
                if padding > 0 { try await writer.write(ByteBuffer(repeating: 0, count: padding)) }
            }
            try await writer.write(ByteBuffer(repeating: 0, count: 1024))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-tar",
                                               .contentDisposition: "attachment; filename=\"tsbackup-\(entry.id).tar\""], body: body)
    }
}

/// POSIX ustar headers, enough for an entry's files (names under 255 bytes).
enum TarWriter {
    static func padded(_ size: Int64) -> Int64 { (size + 511) / 512 * 512 }

    static func header(name: String, size: Int64, mtime: Date = Date()) throws -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 512)
        var nameBytes = Array(name.utf8)
        var prefix: [UInt8] = []
        if nameBytes.count > 100 {
            guard let split = nameBytes.prefix(155).lastIndex(of: UInt8(ascii: "/")), nameBytes.count - split - 1 <= 100 else {
                throw APIError(.internalServerError, code: "tar", "The file name \(name) is too long for a tar header.")
            }
            prefix = Array(nameBytes[..<split])
            nameBytes = Array(nameBytes[(split + 1)...])
        }
        func put(_ bytes: [UInt8], at offset: Int) { for (i, b) in bytes.enumerated() { header[offset + i] = b } }
        func octal(_ value: Int64, width: Int) -> [UInt8] { Array(String(format: "%0\(width - 1)llo", value).utf8) + [0] }
        put(nameBytes, at: 0)
        put(octal(0o644, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(size, width: 12), at: 124)
        put(octal(Int64(mtime.timeIntervalSince1970), width: 12), at: 136)
        put(Array(repeating: UInt8(ascii: " "), count: 8), at: 148)
        header[156] = UInt8(ascii: "0")
        put(Array("ustar".utf8) + [0], at: 257)
        put(Array("00".utf8), at: 263)
        put(prefix, at: 345)
        let checksum = header.reduce(0) { $0 + Int64($1) }
        put(Array(String(format: "%06llo", checksum).utf8) + [0, UInt8(ascii: " ")], at: 148)
        return header
    }
}

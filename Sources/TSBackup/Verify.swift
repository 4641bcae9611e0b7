import Foundation

/// The `verify` use case: is a stored backup intact and restorable?
public enum Verify {
    public struct Report: Codable, Sendable {
        public var id: String
        public var ok: Bool
        public var filesChecked: Int
        public var bytesChecked: Int64
        /// Each problem names the file or archive entry concerned.
        public var problems: [String]

        enum CodingKeys: String, CodingKey {
            case id, ok
            case filesChecked = "files_checked"
            case bytesChecked = "bytes_checked"
            case problems
        }
    }

    /// Re-hashes every file against the manifest and checks the archive's table of contents.
    public static func run(repositoryPath: String, id: String) async throws -> Report {
        let repository = try LocalRepository.open(repositoryPath, create: false)
        let entry = try repository.entry(id)
        if let export = entry.hypertable {
            return try check(export, directory: entry.directory)
        }
        guard let manifest = entry.manifest else {
            return Report(id: id, ok: false, filesChecked: 0, bytesChecked: 0,
                          problems: ["the entry has no readable manifest.json: the run that wrote it was interrupted"])
        }
        return try await check(manifest, directory: entry.directory).report
    }

    /// The report, and the archive's table of contents when it could be read.
    static func check(_ manifest: BackupManifest, directory: String) async throws -> (report: Report, contents: ArchiveContents?) {
        var listing: ArchiveContents?
        var problems: [String] = []
        if manifest.status != .complete {
            problems.append("the backup is marked \(manifest.status.rawValue)\(manifest.error.map { ": \($0)" } ?? "")")
        }
        let (fileProblems, bytes) = try checkFiles(manifest.files, directory: directory)
        problems += fileProblems

        if manifest.status == .complete {
            do {
                let pgRestore = try await PostgresTools.locate("pg_restore", minimumMajor: manifest.pgDump.majorVersion)
                let contents = try await Archive.list(try EntryPath.resolve(manifest.archive, in: directory), pgRestore: pgRestore)
                listing = contents
                // Batched chunks live in archives of their own (chunk_path.batches).
                let combined = try await ChunkBatchRun.combinedContents(main: contents, manifest: manifest, directory: directory, pgRestore: pgRestore)
                let missing = combined.missingTimescaleEntries(chunks: manifest.chunkTables, timescaleInstalled: manifest.timescaledb != nil)
                if !missing.isEmpty {
                    problems.append("the archive's table of contents lacks \(missing.count) entr\(missing.count == 1 ? "y" : "ies"): \(missing.prefix(5).joined(separator: ", "))")
                }
                let dataEntries = combined.items.filter { $0.type == "TABLE DATA" }.count
                let expected = manifest.chunkTables.count + manifest.plainTables.count
                if dataEntries < expected {
                    problems.append("the archive holds \(dataEntries) table data entries, fewer than the \(expected) chunks and plain tables recorded")
                }
            } catch let error as TSBackupError {
                problems.append(error.message)
            }
        }
        return (Report(id: manifest.id, ok: problems.isEmpty, filesChecked: manifest.files.count, bytesChecked: bytes, problems: problems), listing)
    }

    /// A hypertable export: every file against the manifest, and the data files' row counts
    /// adding up to the exported rows.
    static func check(_ manifest: HypertableManifest, directory: String) throws -> Report {
        var problems: [String] = []
        if manifest.status != .complete {
            problems.append("the export is marked \(manifest.status.rawValue)\(manifest.error.map { ": \($0)" } ?? "")")
        }
        let (fileProblems, bytes) = try checkFiles(manifest.files, directory: directory)
        problems += fileProblems
        let listed = Set(manifest.files.map(\.path))
        for file in manifest.dataFiles where !listed.contains(file.path) {
            problems.append("data file \(file.path) has no checksum in the manifest")
        }
        if !listed.contains(manifest.definitionFile) {
            problems.append("the definition \(manifest.definitionFile) has no checksum in the manifest")
        }
        let rows = manifest.dataFiles.reduce(0) { $0 + $1.rows }
        if manifest.status == .complete, rows != manifest.rowCount {
            problems.append("the data files hold \(rows) rows, the manifest records \(manifest.rowCount)")
        }
        if manifest.status == .complete, let chunks = manifest.chunks {
            // Each chunk's copy against the root's count of its range, as the export checked it.
            for chunk in chunks where chunk.rootRows.map({ $0 != chunk.rows }) ?? false {
                problems.append("chunk \(chunk.name) (\(chunk.state)) was copied with \(chunk.rows) rows, the hypertable root held \(chunk.rootRows ?? 0)")
            }
            for file in manifest.dataFiles {
                let inFile = chunks.filter { $0.file == file.path }.reduce(0) { $0 + $1.rows }
                if inFile != file.rows {
                    problems.append("data file \(file.path) holds \(file.rows) rows, its chunks \(inFile)")
                }
            }
        }
        return Report(id: manifest.id, ok: problems.isEmpty, filesChecked: manifest.files.count, bytesChecked: bytes, problems: problems)
    }

    /// Re-hashes `files` under `directory`; files there that the manifest does not list are problems too.
    static func checkFiles(_ files: [BackupManifest.FileEntry], directory: String) throws -> (problems: [String], bytes: Int64) {
        var problems: [String] = []
        var bytes: Int64 = 0
        for file in files {
            // A name outside the entry (../, absolute, a symbolic link) is never opened.
            let path: String
            do {
                path = try EntryPath.resolve(file.path, in: directory)
            } catch let error as TSBackupError {
                problems.append(error.message)
                continue
            }
            guard FileManager.default.fileExists(atPath: path) else {
                problems.append("missing file \(file.path)")
                continue
            }
            let (hex, size) = try FileSystem.sha256(of: path)
            bytes += size
            if size != file.bytes {
                problems.append("\(file.path) has \(size) bytes, the manifest says \(file.bytes)")
            } else if hex != file.sha256 {
                problems.append("\(file.path) is corrupt: its SHA-256 differs from the manifest's")
            }
        }
        let listed = Set(files.map(\.path))
        let unexpected = (try FileSystem.regularFiles(under: directory)).filter { $0 != "manifest.json" && !listed.contains($0) }
        for file in unexpected {
            problems.append("unexpected file \(file), not in the manifest")
        }
        return (problems, bytes)
    }
}

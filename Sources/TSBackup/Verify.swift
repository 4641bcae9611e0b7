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
        /// What could not be checked, without being wrong (a manifest older than its own checksum).
        public var warnings: [String] = []

        enum CodingKeys: String, CodingKey {
            case id, ok
            case filesChecked = "files_checked"
            case bytesChecked = "bytes_checked"
            case problems, warnings
        }
    }

    /// The warning for a manifest written before manifests carried their own checksum.
    static func uncheckedManifestWarning(_ id: String) -> String {
        "the manifest backups/\(id)/manifest.json carries no checksum of its own (it was written before tsbackup recorded one), so damage to the manifest itself cannot be detected; its files were checked against it"
    }

    /// Re-reads every stored file against the manifest (through the repository: a local
    /// directory, or objects downloaded and, when encrypted, authenticated) and checks the
    /// archive's table of contents.
    public static func run(repository: any Repository, id: String) async throws -> Report {
        let entry = try await repository.entry(id)
        var report = try await checked(entry, in: repository)
        if entry.manifestUnchecked {
            report.warnings.append(uncheckedManifestWarning(id))
        }
        return report
    }

    static func checked(_ entry: RepositoryEntry, in repository: any Repository) async throws -> Report {
        let id = entry.id
        if let export = entry.hypertable {
            var report = check(export)
            let (problems, bytes) = try await filesChecked(export.files, of: entry, in: repository)
            report.problems.insert(contentsOf: problems, at: min(report.problems.count, export.status == .complete ? 0 : 1))
            report.bytesChecked = bytes
            report.ok = report.problems.isEmpty
            return report
        }
        if let base = entry.base {
            var problems: [String] = []
            if base.status != .complete {
                problems.append("the base backup is marked \(base.status.rawValue)\(base.error.map { ": \($0)" } ?? "")")
            }
            // The tar's contents are checked file by file against PostgreSQL's backup_manifest
            // by pg_verifybackup when `recover` lays it down; here every stored byte is re-hashed.
            let (fileProblems, bytes) = try await repository.verifyFiles(entry, files: base.files)
            problems += fileProblems
            return Report(id: id, ok: problems.isEmpty, filesChecked: base.files.count, bytesChecked: bytes, problems: problems)
        }
        guard let manifest = entry.manifest else {
            return Report(id: id, ok: false, filesChecked: 0, bytesChecked: 0,
                          problems: [entry.problem ?? "the entry has no readable manifest.json: the run that wrote it was interrupted"])
        }
        var problems: [String] = []
        if manifest.status != .complete {
            problems.append("the backup is marked \(manifest.status.rawValue)\(manifest.error.map { ": \($0)" } ?? "")")
        }
        let (fileProblems, bytes) = try await filesChecked(manifest.files, of: entry, in: repository)
        problems += fileProblems
        if manifest.status == .complete {
            // pg_restore -l reads only tables of contents: toc.dat of each directory archive (the
            // main one and any chunk batches), or a whole custom-format archive.
            let tocFiles = manifest.files.filter { $0.path == manifest.archive || $0.path.hasSuffix("/toc.dat") || $0.path.hasSuffix(".pgdump") }
            do {
                let local = try await repository.materialize(entry, files: tocFiles)
                defer { local.remove() }
                // The chunk batches' data files are decompressed and split where they lie; from a
                // copy (S3, encrypted) their SHA-256, streamed above, is the check.
                problems += try await checkArchive(manifest, directory: local.directory, dataFiles: repository.readsInPlace).problems
            } catch let error as TSBackupError {
                problems.append(error.message)
            }
        }
        return Report(id: manifest.id, ok: problems.isEmpty, filesChecked: manifest.files.count, bytesChecked: bytes, problems: problems)
    }

    /// The repository's file check; a manifest naming paths outside its entry is one problem.
    static func filesChecked(_ files: [BackupManifest.FileEntry], of entry: RepositoryEntry, in repository: any Repository) async throws -> (problems: [String], bytes: Int64) {
        do {
            return try await repository.verifyFiles(entry, files: files)
        } catch let error as TSBackupError where error.kind == .failed {
            return ([error.message], 0)
        }
    }

    /// The report, and the archive's table of contents when it could be read: for files already
    /// local (a restore's materialized entry).
    static func check(_ manifest: BackupManifest, directory: String) async throws -> (report: Report, contents: ArchiveContents?) {
        var listing: ArchiveContents?
        var problems: [String] = []
        if manifest.status != .complete {
            problems.append("the backup is marked \(manifest.status.rawValue)\(manifest.error.map { ": \($0)" } ?? "")")
        }
        try EntryPath.confine(manifest.files, entry: manifest.id)
        let (fileProblems, bytes) = try checkFiles(manifest.files, directory: directory)
        problems += fileProblems
        if manifest.status == .complete {
            let archive = try await checkArchive(manifest, directory: directory)
            problems += archive.problems
            listing = archive.contents
        }
        return (Report(id: manifest.id, ok: problems.isEmpty, filesChecked: manifest.files.count, bytesChecked: bytes, problems: problems), listing)
    }

    /// The archive's table of contents against the manifest's chunks and tables.
    /// `dataFiles`: the chunk batches' data files are in `directory` too, and are read whole
    /// (``ChunkBatchRun/dataFileProblems(_:directory:)``).
    static func checkArchive(_ manifest: BackupManifest, directory: String, dataFiles: Bool = false) async throws -> (problems: [String], contents: ArchiveContents?) {
        var problems: [String] = []
        do {
            let pgRestore = try await PostgresTools.locate("pg_restore", minimumMajor: manifest.pgDump.majorVersion)
            let contents = try await Archive.list(try EntryPath.resolve(manifest.archive, in: directory), pgRestore: pgRestore)
            // Batched chunks live in archives of their own (chunk_path.batches).
            let combined = try await ChunkBatchRun.combinedContents(main: contents, manifest: manifest, directory: directory, pgRestore: pgRestore)
            let copied = ChunkBatchRun.chunksInDataFiles(manifest)
            let missing = combined.missingTimescaleEntries(chunks: manifest.chunkTables, timescaleInstalled: manifest.timescaledb != nil,
                                                           dataCopied: copied)
            if !missing.isEmpty {
                problems.append("the archive's table of contents lacks \(missing.count) entr\(missing.count == 1 ? "y" : "ies"): \(missing.prefix(5).joined(separator: ", "))")
            }
            if dataFiles {
                problems += await ChunkBatchRun.dataFileProblems(manifest, directory: directory)
            }
            let dataEntries = combined.items.filter { $0.type == "TABLE DATA" }.count + copied.count
            let expected = manifest.chunkTables.count + manifest.plainTables.count
            if dataEntries < expected {
                problems.append("the archive holds \(dataEntries) table data entries, fewer than the \(expected) chunks and plain tables recorded")
            }
            return (problems, contents)
        } catch let error as TSBackupError {
            problems.append(error.message)
            return (problems, nil)
        }
    }

    /// A hypertable export's manifest on its own: its status, and the data files' row counts
    /// adding up to the exported rows (the files themselves are checked by the repository).
    static func check(_ manifest: HypertableManifest) -> Report {
        var problems: [String] = []
        if manifest.status != .complete {
            problems.append("the export is marked \(manifest.status.rawValue)\(manifest.error.map { ": \($0)" } ?? "")")
        }
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
        return Report(id: manifest.id, ok: problems.isEmpty, filesChecked: manifest.files.count, bytesChecked: 0, problems: problems)
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

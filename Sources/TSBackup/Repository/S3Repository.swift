import Foundation
import Synchronization

/// A repository in an S3 bucket (AWS S3 or any S3-compatible store: MinIO, Ceph RGW, R2, B2).
///
/// ```
/// PREFIX/
///   tsbackup-repository.json        the marker (format, encryption parameters)
///   lock                            the lease of the one run writing (holder, host, pid, expiry)
///   backups/<id>/run.json           written when a run starts: the entry is incomplete
///   backups/<id>/dump/...           data objects, uploaded first
///   backups/<id>/roles.sql
///   backups/<id>/manifest.json      written LAST: only then is the entry complete
/// ```
///
/// Objects are never renamed (S3 has no rename): an entry is complete exactly when its manifest
/// object exists and reads back. A run stages its files in a local scratch directory (pg_dump
/// writes there) and uploads them, in parallel, at commit; the manifest follows when every data
/// object is stored. A file too large to stage (a base backup's tar) is instead uploaded while it is
/// produced (``writeStreamedFile(_:path:expectedBytes:_:)``). Deleting removes the manifest first, so a deletion that dies half-way leaves
/// an incomplete entry, never a complete-looking damaged one. Leftovers (entries without a
/// manifest) are removed by the next run that takes over a stale lease, or by `tsbackup repo gc`.
public struct S3Repository: Repository {
    let client: S3Client
    let s3Location: S3Location
    let codec: ObjectCodec
    let endpoint: String
    let environment: [String: String]

    public var location: String { s3Location.description }
    public var isEncrypted: Bool { codec.encryption != nil }

    static let runMarker = "run.json"
    static let manifestName = "manifest.json"

    // MARK: Opening

    static func open(_ access: RepositoryAccess, create: Bool) async throws -> S3Repository {
        guard case .s3(let bucket, let prefix) = access.url else { preconditionFailure("not an s3 URL") }
        let settings = try S3Settings.fromEnvironment(access.environment, homeDirectory: access.environment["HOME"] ?? NSHomeDirectory())
        var options = S3Client.Options()
        if let text = access.environment["TSBACKUP_S3_CONCURRENCY"], let n = Int(text), n > 0 { options.concurrency = n }
        let client = S3Client(settings: settings, bucket: bucket, options: options)
        let location = S3Location(bucket: bucket, prefix: prefix)
        let keyFile = try translatingEncryptionErrors { try EncryptionKeyFile.resolve(option: access.encryptionKeyFile, environment: [:]) }
        do {
            let endpoint = settings.endpointDescription
            func failure(_ error: any Error) -> any Error {
                (error as? S3Error)?.tsBackupError(endpoint: endpoint, bucket: bucket) ?? error
            }
            // The marker's GET is the first request: unlike a HEAD, its error body tells a wrong
            // secret (SignatureDoesNotMatch) from a missing permission and a missing bucket.
            let markerKey = location.key(RepositoryMarker.name)
            var markerData: Data?
            do {
                markerData = try await client.getObject(markerKey)
            } catch let error as S3Error where error.code == .noSuchKey {
                markerData = nil
            } catch {
                throw failure(error)
            }
            let encryption: RepositoryEncryption?
            if let markerData {
                let marker = try RepositoryMarker.decode(markerData, location: location.description)
                encryption = try marker.openEncryption(keyFile: keyFile, location: location.description)
            } else {
                // Objects but no marker: someone else's data. Never mix ours into it.
                let foreign: [String]
                do {
                    foreign = try await client.firstKeys(prefix: location.listPrefix, limit: 3)
                } catch {
                    throw failure(error)
                }
                guard create else {
                    let holds = foreign.isEmpty ? "it has no \(RepositoryMarker.name)" : "it holds objects such as \(foreign[0]) but no \(RepositoryMarker.name)"
                    throw TSBackupError(.notFound, "\(location) is not a tsbackup repository (\(holds)). Check --repo; a repository is created by the first `tsbackup backup --repo s3://BUCKET/PREFIX` into an empty prefix.")
                }
                guard foreign.isEmpty else {
                    let shown = foreign.map { "\"\($0)\"" }.joined(separator: ", ")
                    throw TSBackupError(.precondition, "\(location) is not empty and not a tsbackup repository: it holds objects (\(shown)\(foreign.count == 3 ? ", ..." : "")) but no \(RepositoryMarker.name). tsbackup never writes its objects among others'. Give --repo an empty or new prefix.")
                }
                let (marker, created) = try RepositoryMarker.creating(keyFile: keyFile)
                do {
                    try await client.putObject(markerKey, data: try marker.encoded(), ifNoneMatch: true)
                    encryption = created
                } catch let error as S3Error where error.code == .preconditionFailed {
                    // Another run created it meanwhile: open what it wrote.
                    let data = try await client.getObject(markerKey)
                    encryption = try RepositoryMarker.decode(data, location: location.description).openEncryption(keyFile: keyFile, location: location.description)
                } catch {
                    throw failure(error)
                }
            }
            return S3Repository(client: client, s3Location: location, codec: ObjectCodec(encryption: encryption),
                                endpoint: endpoint, environment: access.environment)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    public func close() async {
        try? await client.shutdown()
    }

    /// Runs an S3 call, turning its errors into ones the user can act on.
    @discardableResult
    func s3<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
    }

    /// The repository-relative name of an entry's file: also the name its encryption is bound to.
    func objectName(_ id: String, _ path: String) -> String { "backups/\(id)/\(path)" }
    func key(_ id: String, _ path: String) -> String { s3Location.key(objectName(id, path)) }
    var backupsPrefix: String { s3Location.key("backups") + "/" }

    // MARK: Reading

    /// The ids that have at least one object under `backups/`.
    func ids() async throws -> [String] {
        let prefixes = try await s3 { try await client.listCommonPrefixes(prefix: backupsPrefix, delimiter: "/") }
        return prefixes.compactMap { prefix -> String? in
            let id = String(prefix.dropFirst(backupsPrefix.count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            return id.isEmpty ? nil : id
        }.sorted()
    }

    public func entries() async throws -> [RepositoryEntry] {
        let ids = try await ids()
        return try await Concurrently.map(ids, limit: 8) { id in
            let name = objectName(id, Self.manifestName)
            let stored: Data
            do {
                stored = try await client.getObject(key(id, Self.manifestName))
            } catch let error as S3Error where error.code == .noSuchKey {
                return RepositoryEntry(id: id, state: .incomplete, location: key(id, ""))
            } catch let error as S3Error {
                throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
            }
            do {
                return .decoding(id: id, manifest: try codec.open(stored, name: name), location: key(id, ""))
            } catch let error as TSBackupError {
                var entry = RepositoryEntry(id: id, state: .incomplete, location: key(id, ""))
                entry.problem = error.message
                return entry
            }
        }
    }

    /// One listing of every object under `backups/` (1,000 keys a request): the ids, and each
    /// manifest's ETag and size as its fingerprint. Cheaper than a GET per manifest whenever
    /// entries have fewer than about 1,000 objects each, which custom-format entries do.
    public func listing() async throws -> [ListedEntry]? {
        let objects = try await s3 { try await client.listObjects(prefix: backupsPrefix) }
        var manifests: [String: String] = [:]
        var ids: Set<String> = []
        for object in objects {
            let rest = object.key.dropFirst(backupsPrefix.count)
            guard let slash = rest.firstIndex(of: "/") else { continue }
            let id = String(rest[..<slash])
            guard !id.isEmpty else { continue }
            ids.insert(id)
            if rest[rest.index(after: slash)...] == Self.manifestName {
                manifests[id] = "\(object.etag ?? "-"):\(object.size):\(object.lastModified?.timeIntervalSince1970 ?? 0)"
            }
        }
        return ids.sorted().map { ListedEntry(id: $0, location: key($0, ""), fingerprint: manifests[$0]) }
    }

    public func entry(listed: ListedEntry) async throws -> RepositoryEntry {
        guard listed.fingerprint != nil else { return RepositoryEntry(id: listed.id, state: .incomplete, location: listed.location) }
        let name = objectName(listed.id, Self.manifestName)
        let stored: Data
        do {
            stored = try await client.getObject(key(listed.id, Self.manifestName))
        } catch let error as S3Error where error.code == .noSuchKey {
            return RepositoryEntry(id: listed.id, state: .incomplete, location: listed.location)
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
        do {
            return .decoding(id: listed.id, manifest: try codec.open(stored, name: name), location: listed.location)
        } catch let error as TSBackupError {
            var entry = RepositoryEntry(id: listed.id, state: .incomplete, location: listed.location)
            entry.problem = error.message
            return entry
        }
    }

    public func storedBytes(of entry: RepositoryEntry) async -> Int64 {
        ((try? await client.listObjects(prefix: key(entry.id, ""))) ?? []).reduce(0) { $0 + $1.size }
    }

    public func readFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry) async throws -> Data {
        let path = try EntryPath.confined(file.path, entry: entry.id)
        let stored: Data
        do {
            stored = try await client.getObject(key(entry.id, path))
        } catch let error as S3Error where error.code == .noSuchKey {
            throw TSBackupError(.failed, "Entry \(entry.id) lacks its object \(objectName(entry.id, path)) in \(location). Run `tsbackup verify \(entry.id)`; take a new backup.")
        } catch let error as S3Error {
            throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
        }
        let data = try codec.open(stored, name: objectName(entry.id, path))
        guard Int64(data.count) == file.bytes, FileSystem.sha256(of: data) == file.sha256 else {
            throw TSBackupError(.failed, "The object \(objectName(entry.id, path)) of entry \(entry.id) is corrupt or was altered (its SHA-256 differs from the manifest's); it was not used. Run `tsbackup verify \(entry.id)` and take a new backup.")
        }
        return data
    }

    /// Downloads one stored file to `destination`: a plain object with parallel ranged GETs, an
    /// encrypted one streamed through decryption (and its hash checked) straight into the file,
    /// so scratch never holds a file twice.
    func fetch(_ entry: RepositoryEntry, _ file: BackupManifest.FileEntry, to destination: String) async throws {
        let name = objectName(entry.id, file.path)
        try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard codec.encryption != nil else {
            do {
                _ = try await client.downloadFile(key(entry.id, file.path), to: destination)
            } catch let error as S3Error where error.code == .noSuchKey {
                throw TSBackupError(.failed, "Entry \(entry.id) lacks its object \(name) in \(location). Run `tsbackup verify \(entry.id)`; take a new backup.")
            } catch let error as S3Error {
                throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
            }
            return
        }
        guard FileManager.default.createFile(atPath: destination, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: destination) else {
            throw FileSystem.ioError("create \(destination)")
        }
        let writer = LockedFileWriter(handle: handle, path: destination)
        defer { writer.close() }
        do {
            try await streamFile(file, of: entry) { plain in try writer.write(plain) }
        } catch {
            // Nothing unauthenticated is left behind.
            writer.close()
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }

    public func materialize(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> MaterializedEntry {
        try EntryPath.confine(files, entry: entry.id)
        // The scratch holds exactly the plain files: encrypted objects are decrypted as they arrive.
        let bytes = files.reduce(0) { $0 + $1.bytes }
        let directory = try ScratchSpace.make(for: bytes, purpose: "Reading entry \(entry.id) from \(location)")
        let local = MaterializedEntry(directory: directory, isScratch: true)
        do {
            _ = try await Concurrently.map(files, limit: 8) { file in
                try await fetch(entry, file, to: directory + "/" + file.path)
            }
        } catch {
            local.remove()
            throw error
        }
        return local
    }

    public var readsInPlace: Bool { false }

    /// Ranged GETs of one part size each, pinned to the object's ETag (an object replaced
    /// mid-read fails instead of mixing versions), up to `readAhead` in flight ahead of the
    /// consumer: memory stays at about `readAhead` parts per stream.
    public func streamFile(_ file: BackupManifest.FileEntry, of entry: RepositoryEntry, readAhead: Int,
                           to consume: @Sendable (Data) async throws -> Void) async throws {
        let path = try EntryPath.confined(file.path, entry: entry.id)
        let name = objectName(entry.id, path)
        let objectKey = key(entry.id, path)
        let missing = TSBackupError(.failed, "Entry \(entry.id) lacks its object \(name) in \(location). Run `tsbackup verify \(entry.id)`; take a new backup.")
        guard let info = try await s3({ try await client.headObject(objectKey) }) else { throw missing }
        var check = StreamedFileCheck(codec: codec, file: file, entryID: entry.id, name: name)
        let part = S3Client.partSize(forObjectSize: info.size, minimum: client.options.minimumPartSize)
        var ranges: [Range<Int64>] = []
        var offset: Int64 = 0
        while offset < info.size {
            ranges.append(offset..<min(offset + part, info.size))
            offset += part
        }
        let reader = client
        var inFlight: [Task<Data, any Error>] = []
        defer { for task in inFlight { task.cancel() } }
        var next = 0
        func launch() {
            let range = ranges[next]
            next += 1
            inFlight.append(Task { try await reader.getRange(objectKey, range: range, etag: info.etag) })
        }
        while next < min(max(1, readAhead), ranges.count) { launch() }
        while !inFlight.isEmpty {
            let task = inFlight.removeFirst()
            let stored: Data
            do {
                stored = try await task.value
            } catch let error as S3Error where error.code == .noSuchKey {
                throw missing
            } catch let error as S3Error {
                throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
            }
            if next < ranges.count { launch() }
            let plain = try check.update(stored)
            if !plain.isEmpty { try await consume(plain) }
        }
        let tail = try check.finish()
        if !tail.isEmpty { try await consume(tail) }
    }

    public func verifyFiles(_ entry: RepositoryEntry, files: [BackupManifest.FileEntry]) async throws -> (problems: [String], bytes: Int64) {
        try EntryPath.confine(files, entry: entry.id)
        let largest = files.map(\.bytes).max() ?? 0
        let directory = try ScratchSpace.make(for: largest * 8, purpose: "Verifying entry \(entry.id) of \(location)")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stored = try await s3 { try await client.listObjects(prefix: key(entry.id, "")) }
        let storedPaths = Set(stored.map { String($0.key.dropFirst(key(entry.id, "").count)) })
        let results = try await Concurrently.map(Array(files.enumerated()), limit: 4) { index, file -> (String?, Int64) in
            guard storedPaths.contains(file.path) else { return ("missing file \(file.path)", 0) }
            let download = directory + "/\(index)"
            defer { try? FileManager.default.removeItem(atPath: download) }
            do {
                _ = try await client.downloadFile(key(entry.id, file.path), to: download)
            } catch let error as S3Error where error.code == .noSuchKey {
                return ("missing file \(file.path)", 0)
            } catch let error as S3Error {
                throw error.tsBackupError(endpoint: endpoint, bucket: s3Location.bucket)
            }
            let (hex, size): (String, Int64)
            do {
                (hex, size) = try codec.plainHash(ofStoredFile: download, name: objectName(entry.id, file.path))
            } catch let error as TSBackupError {
                return ("\(file.path) is corrupt: \(error.message)", 0)
            }
            if size != file.bytes { return ("\(file.path) has \(size) bytes, the manifest says \(file.bytes)", size) }
            if hex != file.sha256 { return ("\(file.path) is corrupt: its SHA-256 differs from the manifest's", size) }
            return (nil, size)
        }
        var problems = results.compactMap(\.0)
        let listed = Set(files.map(\.path))
        for path in storedPaths.sorted() where path != Self.manifestName && path != Self.runMarker && !listed.contains(path) {
            problems.append("unexpected object \(objectName(entry.id, path)), not in the manifest")
        }
        return (problems, results.reduce(0) { $0 + $1.1 })
    }

    // MARK: Writing

    public func lock(command: String) async throws -> any RepositoryLease {
        try await S3Lease.acquire(self, command: command)
    }

    public func newID(now: Date) async throws -> String {
        Self.uniqueID(Self.baseID(now), taken: Set(try await ids()))
    }

    /// The local staging directory of entry `id` on this machine.
    func stagingDirectory(_ id: String) -> String {
        ScratchSpace.base(environment) + "/" + stagingPrefix + id
    }

    /// The names of this repository's staging directories start with it.
    var stagingPrefix: String { "tsbackup-staging-\(FileSystem.sha256(of: Data(location.utf8)).prefix(12))-" }

    public func beginEntry(_ id: String) async throws -> StagedEntry {
        let directory = stagingDirectory(id)
        // Marks the entry as started before anything is staged, so a run that dies at any point
        // after this shows as incomplete and is cleaned later.
        let run = #"{"host": "\#(ProcessInfo.processInfo.hostName)", "pid": \#(getpid()), "started": "\#(ISO8601DateFormatter().string(from: Date()))"}"#
        try await s3 { try await client.putObject(key(id, Self.runMarker), data: Data(run.utf8)) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw TSBackupError(.failed, "Could not create the local staging directory \(directory): \(error.localizedDescription). Point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a writable filesystem with room for the dump.")
        }
        return StagedEntry(id: id, directory: directory)
    }

    /// Uploads one staged file: streamed from disk, encrypted on the fly when the repository is.
    func upload(_ id: String, path: String, from file: String) async throws {
        let objectKey = key(id, path)
        guard let encryption = codec.encryption else {
            try await s3 { try await client.putFile(objectKey, path: file) }
            return
        }
        let size = Int64(FileSystem.size(of: file))
        let encryptor = encryption.makeEncryptor(name: objectName(id, path), plaintextSize: size)
        try await s3 {
            try await client.putObject(objectKey, size: encryptor.ciphertextSize) { range in
                try await encryptor.ciphertext(in: range) { plain in try Self.read(file, plain) }
            }
        }
    }

    static func read(_ path: String, _ range: Range<Int64>) throws -> Data {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw FileSystem.ioError("open \(path)") }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(range.lowerBound))
        let data = try handle.read(upToCount: Int(range.count)) ?? Data()
        guard data.count == range.count else {
            throw TSBackupError(.failed, "The staged file \(path) changed while it was uploaded (read \(data.count) of \(range.count) bytes). Run the backup again.")
        }
        return data
    }

    @discardableResult
    public func commitEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async throws -> Manifest {
        let files = try FileSystem.regularFiles(under: staged.directory)
        // Data objects first, in parallel; the manifest last: only then is the entry complete.
        _ = try await Concurrently.map(files, limit: 4) { path in
            try await upload(staged.id, path: path, from: staged.directory + "/" + path)
        }
        // Every retry of this run so far (the client lives for one command) goes on record.
        var manifest = manifest
        if let retried = client.stats.retrySummary {
            manifest.warnings.append(retried)
        }
        let json = try ManifestChecksum.stored(manifest)
        let sealed = try codec.seal(json, name: objectName(staged.id, Self.manifestName))
        try await s3 { try await client.putObject(key(staged.id, Self.manifestName), data: sealed) }
        try? await client.deleteObject(key(staged.id, Self.runMarker))
        try? FileManager.default.removeItem(atPath: staged.directory)
        return manifest
    }

    /// Uploaded while it is produced: a multipart upload fed part by part (a few in flight, see
    /// ``S3UploadStream``), the plain bytes hashed and, in an encrypted repository, sealed on the
    /// fly by a ``StreamEncryptor`` (the same chunked format, bound to the same name, that
    /// `upload(_:path:from:)` produces from a staged file). Nothing of it touches local disk. A
    /// failure aborts the upload; a killed run's upload is aborted by ``removeInterruptedEntries()``.
    public func writeStreamedFile(_ staged: StagedEntry, path: String, expectedBytes: Int64,
                                  _ produce: (_ write: @escaping @Sendable (Data) async throws -> Void) async throws -> Void) async throws -> StreamedFile {
        let relative = try EntryPath.confined(path, entry: staged.id)
        let sink = S3StreamedFileSink(
            upload: client.uploadStream(key(staged.id, relative), expectedSize: expectedBytes),
            encryptor: codec.encryption?.makeStreamEncryptor(name: objectName(staged.id, relative)))
        do {
            try await s3 { try await produce { data in try await sink.write(data) } }
            return try await s3 { try await sink.finish() }
        } catch {
            await sink.abort()
            throw error
        }
    }

    /// The bucket has no meaningful limit, and streamed files are never staged locally.
    public func checkSpace(forStreaming bytes: Int64) async throws {}

    public func failEntry<Manifest: EntryManifest>(_ staged: StagedEntry, manifest: Manifest) async {
        try? FileManager.default.removeItem(atPath: staged.directory)
        let keys = ((try? await client.listObjects(prefix: key(staged.id, ""))) ?? []).map(\.key)
            .filter { $0 != key(staged.id, Self.runMarker) }
        try? await client.deleteObjects(keys)
        guard let json = try? ManifestChecksum.stored(manifest),
              let sealed = try? codec.seal(json, name: objectName(staged.id, Self.manifestName)) else { return }
        do {
            try await client.putObject(key(staged.id, Self.manifestName), data: sealed)
            try? await client.deleteObject(key(staged.id, Self.runMarker))
        } catch {}
    }

    public func deleteEntry(_ entry: RepositoryEntry) async throws {
        // The manifest first: a deletion that dies half-way leaves an incomplete entry.
        try await s3 { try await client.deleteObject(key(entry.id, Self.manifestName)) }
        let keys = try await s3 { try await client.listObjects(prefix: key(entry.id, "")) }.map(\.key)
        try await s3 { try await client.deleteObjects(keys) }
    }

    /// Entries without a manifest, and multipart uploads under `backups/` that belong to no
    /// finished entry (a streamed file of a run that was killed before it could abort them):
    /// invisible as objects, but stored and billed. The caller holds the lock, so no run that is
    /// still alive owns either.
    public func removeInterruptedEntries() async throws -> [String] {
        let all = try await entries()
        let interrupted = all.filter { $0.state == .incomplete && $0.problem == nil }
        for entry in interrupted {
            let keys = try await s3 { try await client.listObjects(prefix: key(entry.id, "")) }.map(\.key)
            try await s3 { try await client.deleteObjects(keys) }
            try? FileManager.default.removeItem(atPath: stagingDirectory(entry.id))
        }
        // This repository's staging directories on this machine whose run ended without removing
        // them: one killed after its manifest was stored (a complete entry) but before it removed
        // its staging (the kill campaign found one). The caller holds the lock and has not begun
        // an entry, so no live run of this repository stages anything now.
        let base = ScratchSpace.base(environment)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix(stagingPrefix) {
            try? FileManager.default.removeItem(atPath: base + "/" + name)
        }
        let finished = Set(all.filter { $0.state != .incomplete || $0.problem != nil }.map(\.id))
        var aborted: [String] = []
        for upload in try await s3({ try await client.listMultipartUploads(prefix: backupsPrefix) }) {
            let id = String(upload.key.dropFirst(backupsPrefix.count).prefix { $0 != "/" })
            guard !finished.contains(id) else { continue }
            try await s3 { try await client.abortMultipartUpload(upload.key, uploadId: upload.uploadId) }
            aborted.append(id)
        }
        let removed = interrupted.map(\.id)
        return removed + Set(aborted).subtracting(removed).sorted()
    }

    public func checkSpace(forWriting bytes: Int64) async throws {
        try Self.checkStagingSpace(environment: environment, location: location, forWriting: bytes)
    }

    /// The bucket has no meaningful limit; the local staging holds the whole dump before upload.
    static func checkStagingSpace(environment: [String: String], location: String, forWriting bytes: Int64) throws {
        let base = ScratchSpace.base(environment)
        if let free = FileSystem.freeBytes(at: FileSystem.nearestExistingAncestor(of: base)), free < bytes {
            throw TSBackupError(.precondition, "A backup to \(location) stages the dump locally in \(base), which has \(ByteCount.format(free)) free, less than the database's \(ByteCount.format(bytes)). Free space there, or point TSBACKUP_SCRATCH_DIR (or TMPDIR) at a larger filesystem.")
        }
    }
}

/// A file written in order by one stream; a Mutex makes the handle safe to hand to a `@Sendable` consumer.
final class LockedFileWriter: Sendable {
    private let handle: Mutex<FileHandle?>
    let path: String

    init(handle: FileHandle, path: String) {
        self.handle = Mutex(handle)
        self.path = path
    }

    func write(_ data: Data) throws {
        try handle.withLock { handle in
            guard let handle else { return }
            do {
                try handle.write(contentsOf: data)
            } catch {
                throw FileSystem.ioError("write \(path)", underlying: error)
            }
        }
    }

    /// Flushes what was written to stable storage.
    func sync() throws {
        try handle.withLock { handle in
            do {
                try handle?.synchronize()
            } catch {
                throw FileSystem.ioError("fsync \(path)", underlying: error)
            }
        }
    }

    func close() {
        handle.withLock { handle in
            try? handle?.close()
            handle = nil
        }
    }
}


/// One streamed file on its way to S3: hashed as plain bytes, sealed when the repository is
/// encrypted, then handed to the multipart upload. Written by one producer, in order.
actor S3StreamedFileSink {
    let upload: S3UploadStream
    var encryptor: StreamEncryptor?
    let digest = StreamDigest()

    init(upload: S3UploadStream, encryptor: StreamEncryptor?) {
        self.upload = upload
        self.encryptor = encryptor
    }

    func write(_ data: Data) async throws {
        digest.update(data)
        guard var sealing = encryptor else {
            try await upload.write(data)
            return
        }
        let sealed = try translatingEncryptionErrors { try sealing.update(data) }
        encryptor = sealing
        if !sealed.isEmpty { try await upload.write(sealed) }
    }

    func finish() async throws -> StreamedFile {
        if var sealing = encryptor {
            let tail = try translatingEncryptionErrors { try sealing.finish() }
            encryptor = nil
            try await upload.write(tail)
        }
        try await upload.finish()
        return digest.result()
    }

    func abort() async {
        await upload.abort()
    }
}

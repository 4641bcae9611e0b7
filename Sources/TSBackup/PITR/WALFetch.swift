import Foundation

/// `tsbackup wal-fetch NAME DEST`: restores one archived file for restore_command.
///
/// Missing files are normal (PostgreSQL asks past the end of the archive and for `.history`
/// files of timelines that never existed): they are an outcome, not an error, and the command
/// exits 1 without a message. A damaged object is an error naming it. Nothing reaches `DEST`
/// before the content is checked (zstd's frame checksum and the recorded size, or the SHA-256
/// for objects without a frame checksum: ``WALObjectFormat/Decoder``); DEST is written to a
/// temporary file and renamed into place.
public enum WALFetch {
    public enum Outcome: Sendable, Equatable {
        case restored(file: WALFileName, bytes: Int64)
        /// The archive has no such file (or no archive at all).
        case missing
    }

    public static func run(name: String, destination: String, repository: any Repository,
                           workingDirectory: String = FileManager.default.currentDirectoryPath) async throws -> Outcome {
        guard let file = WALFileName(name) else {
            throw TSBackupError(.usage, "\(name) is not the name of a file PostgreSQL archives (a WAL segment, .partial, .history or .backup file). Use wal-fetch in restore_command as `tsbackup wal-fetch %f %p --repo ...`.")
        }
        guard let marker = try await WALArchiveMarker.read(repository), let system = marker.system else { return .missing }
        let object = ArchiveObject.wal(systemIdentifier: system, file: file)
        let advice = "Recovery cannot replay past this point from this archive; use another copy of the archive, or recover to a point before it."
        let target = destination.hasPrefix("/") ? destination : workingDirectory + "/" + destination
        let temporary = target + ".tsbackup-tmp"
        // The object streams through the decoder into a temporary file, piece by piece; only once
        // its size and content check pass is it renamed to DEST.
        let output = TemporaryOutput(path: temporary)
        defer { output.discard() }
        let decoder = WALObjectFormat.Decoder()
        let found: Bool
        do {
            found = try await repository.readArchiveObject(object) { stored in
                try decoder.update(stored) { plain in try output.write(plain) }
            }
        } catch let error as WALObjectError {
            throw corrupt(file, object, repository, error, advice)
        } catch let error as TSBackupError where error.kind == .failed && !output.failedToWrite {
            throw TSBackupError(.failed, "The archived \(file) in \(repository.location) cannot be used: \(error.message) \(advice)")
        }
        guard found else { return .missing }
        let header: WALObjectFormat.Header
        do {
            header = try decoder.finish()
        } catch {
            throw corrupt(file, object, repository, error, advice)
        }
        try output.close()
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            throw TSBackupError(.failed, "Could not rename \(temporary) to \(target): \(reason).")
        }
        output.renamed()
        return .restored(file: file, bytes: header.plainSize)
    }

    static func corrupt(_ file: WALFileName, _ object: ArchiveObject, _ repository: any Repository, _ error: WALObjectError, _ advice: String) -> TSBackupError {
        TSBackupError(.failed, "The archived \(file) (object \(ArchiveLayout.name(of: object)) in \(repository.location)) is corrupt: \(error.reason). It was not restored. \(advice)")
    }

    /// The temporary file wal-fetch writes: created on the first write (a missing object leaves
    /// nothing), removed unless it was renamed into place.
    final class TemporaryOutput {
        let path: String
        private var fd: Int32 = -1
        private var done = false
        /// Set when writing failed (its error names the file, and is not the archive's fault).
        private(set) var failedToWrite = false

        init(path: String) { self.path = path }

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            if fd < 0 {
                // Mode 0666 less the umask, as Data.write gave before.
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
                guard fd >= 0 else { throw failure("Could not write \(path): \(String(cString: strerror(errno))).") }
            }
            try SystemIO.writeAll(fd, bytes) { failure("Could not write \(path): \(String(cString: strerror($0))).") }
        }

        /// Closes the file (creating it empty if nothing was written: an empty archived file).
        func close() throws {
            if fd < 0 { try write(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let result = Glibc.close(fd)
            fd = -1
            guard result == 0 else { throw failure("Could not write \(path): \(String(cString: strerror(errno))).") }
        }

        func renamed() { done = true }

        func discard() {
            if fd >= 0 { Glibc.close(fd); fd = -1 }
            if !done { unlink(path) }
        }

        private func failure(_ text: String) -> TSBackupError {
            failedToWrite = true
            return TSBackupError(.failed, text + " Check that the directory exists and PostgreSQL's OS user can write it.")
        }
    }
}

import Foundation

/// `tsbackup wal-fetch NAME DEST`: restores one archived file for restore_command.
///
/// Missing files are normal (PostgreSQL asks past the end of the archive and for `.history`
/// files of timelines that never existed): they are an outcome, not an error, and the command
/// exits 1 without a message. A damaged object is an error naming it. Nothing reaches `DEST`
/// before the content's SHA-256 matches the one recorded at archiving; DEST is written to a
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
        let read: Data?
        do {
            read = try await repository.readArchiveObject(object)
        } catch let error as TSBackupError where error.kind == .failed {
            throw TSBackupError(.failed, "The archived \(file) in \(repository.location) cannot be used: \(error.message) \(advice)")
        }
        guard let stored = read else { return .missing }
        let plain: Data
        do {
            (_, plain) = try WALObjectFormat.decode(stored)
        } catch {
            throw TSBackupError(.failed, "The archived \(file) (object \(ArchiveLayout.name(of: object)) in \(repository.location)) is corrupt: \(error.reason). It was not restored. \(advice)")
        }
        let target = destination.hasPrefix("/") ? destination : workingDirectory + "/" + destination
        let temporary = target + ".tsbackup-tmp"
        do {
            try plain.write(to: URL(fileURLWithPath: temporary))
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw TSBackupError(.failed, "Could not write \(temporary): \(error.localizedDescription). Check that the directory exists and PostgreSQL's OS user can write it.")
        }
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw TSBackupError(.failed, "Could not rename \(temporary) to \(target): \(reason).")
        }
        return .restored(file: file, bytes: Int64(plain.count))
    }
}

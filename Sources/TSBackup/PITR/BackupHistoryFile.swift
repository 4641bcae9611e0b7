import Foundation

/// The backup history file (`<segment>.<offset>.backup`) PostgreSQL archives when a base backup
/// stops: its start and stop WAL locations, times and timelines, and its label.
struct BackupHistoryFile: Equatable {
    var label: String
    var start: WALPosition
    var stop: WALPosition
    var timeline: Int
    var stopTimeline: Int
    var startTime: Date?
    var stopTime: Date?

    static func parse(_ text: String) -> BackupHistoryFile? {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        func position(_ key: String) -> WALPosition? {
            fields[key].flatMap { $0.split(separator: " ").first }.flatMap { WALPosition(String($0)) }
        }
        func time(_ key: String) -> Date? {
            // "2026-11-27 09:59:00 UTC"
            fields[key].flatMap { text in
                text.hasSuffix(" UTC") ? RecoveryVerification.parseLogTime(String(text.dropLast(4)) + "+00") : RecoveryVerification.parseLogTime(text)
            }
        }
        guard let label = fields["LABEL"], let start = position("START WAL LOCATION"), let stop = position("STOP WAL LOCATION"),
              let timeline = fields["START TIMELINE"].flatMap({ Int($0) }) else { return nil }
        return BackupHistoryFile(label: label, start: start, stop: stop, timeline: timeline,
                                 stopTimeline: fields["STOP TIMELINE"].flatMap { Int($0) } ?? timeline,
                                 startTime: time("START TIME"), stopTime: time("STOP TIME"))
    }

    /// The history file with `label` in the repository's archive (newest first).
    static func find(label: String, repository: any Repository) async throws -> BackupHistoryFile {
        if let archive = try await WALArchive.load(repository) {
            let candidates = archive.timelines.flatMap(\.otherFiles).filter { if case .backup = $0.kind { true } else { false } }.sorted(by: >)
            for file in candidates.prefix(20) {
                guard let data = try await repository.readArchiveObject(.wal(systemIdentifier: archive.systemIdentifier, file: file)),
                      let plain = try? WALObjectFormat.decode(data).1,
                      let parsed = parse(String(decoding: plain, as: UTF8.self)), parsed.label == label else { continue }
                return parsed
            }
        }
        throw TSBackupError(.failed, "pg_basebackup finished, but the backup history file PostgreSQL archives at the end of a base backup (label \"\(label)\") is not in \(repository.location)'s WAL archive, so the backup's start and stop points are unknown; it was not kept. Check archive_command and the server log, then run base-backup again.")
    }
}

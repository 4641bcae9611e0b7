import Foundation
import Synchronization

/// Reads `pg_restore --verbose` standard error (run with LC_MESSAGES=C, so the English messages
/// below are what it prints) to follow a restore item by item.
///
/// Every table-of-contents entry pg_restore actually restores prints exactly one of "creating
/// <TYPE> ...", "processing data for table ...", "executing <TYPE> ..." or "processing <TYPE>",
/// from the process that restores it, in serial and in parallel mode alike. Parallel mode adds
/// bookkeeping lines ("launching item N ...", "finished item N ...", "processing item N ..." for
/// entries it merely walks past); those are not counted as objects, but "finished item N TABLE
/// DATA" says exactly when a table's data is in.
public enum PgRestoreLog {
    public enum Event: Sendable, Equatable {
        /// One TOC entry restored (DDL, ACL, comment, sequence value...).
        case object
        /// A table's data started loading ("schema.name" as pg_restore quotes it).
        case dataStarted(table: String)
        /// In parallel mode: TOC entry `dumpID` finished; `type` is e.g. "TABLE DATA".
        case finished(dumpID: Int, type: String)
        /// An error or a warning; kept for the failure message.
        case problem(String)
    }

    /// The events one line of stderr stands for (none for lines that are neither).
    public static func events(in line: String) -> [Event] {
        let prefix = "pg_restore: "
        guard line.hasPrefix(prefix) else { return [] }
        let text = line.dropFirst(prefix.count)
        if text.hasPrefix("error:") || text.hasPrefix("warning:") {
            return [.problem(line)]
        }
        if text.hasPrefix("processing data for table ") {
            let name = text.dropFirst("processing data for table ".count)
            return [.object, .dataStarted(table: String(name).trimmingCharacters(in: CharacterSet(charactersIn: "\"")))]
        }
        if text.hasPrefix("finished item ") {
            // "finished item 4029 TABLE DATA _hyper_1_4_chunk"
            let words = text.dropFirst("finished item ".count).split(separator: " ")
            guard let id = words.first.flatMap({ Int($0) }) else { return [] }
            let type = words.count >= 3 && words[1] == "TABLE" && words[2] == "DATA" ? "TABLE DATA" : (words.count >= 2 ? String(words[1]) : "")
            return [.finished(dumpID: id, type: type)]
        }
        if text.hasPrefix("processing item ") || text.hasPrefix("processing missed item ") || text.hasPrefix("launching item ") {
            return []
        }
        if text.hasPrefix("creating ") || text.hasPrefix("executing ") || text.hasPrefix("processing ") {
            return [.object]
        }
        return []
    }
}

/// Counts a restore's progress across its pg_restore runs; fed from the stderr readers of
/// concurrently running children, read by whoever draws the progress line.
final class RestoreProgressCounter: Sendable {
    struct Snapshot: Sendable, Equatable {
        var objectsDone: Int
        var objectsTotal: Int
        var bytesDone: Int64
        var bytesTotal: Int64
    }

    private struct State {
        var objectsDone = 0
        var bytesDone: Int64 = 0
        /// TABLE DATA entries already counted, so a table's bytes count once.
        var loaded = Set<Int>()
    }

    let objectsTotal: Int
    let bytesTotal: Int64
    /// Data bytes per TABLE DATA dump id (directory archives: the size of `<id>.dat*`).
    private let dataBytes: [Int: Int64]
    /// "schema.name" -> TABLE DATA dump id.
    private let dataIDs: [String: Int]
    private let state = Mutex(State())

    init(contents: ArchiveContents, dataBytes: [Int: Int64]) {
        self.objectsTotal = contents.items.count
        self.dataBytes = dataBytes
        self.bytesTotal = dataBytes.values.reduce(0, +)
        var ids: [String: Int] = [:]
        for item in contents.items where item.type == "TABLE DATA" {
            ids["\(item.schema).\(item.name)"] = item.dumpID
        }
        self.dataIDs = ids
    }

    /// Sizes of a directory archive's data files by dump id, from file paths such as
    /// "dump/4029.dat.gz" and their sizes.
    static func dataBytes(files: [(path: String, bytes: Int64)]) -> [Int: Int64] {
        var result: [Int: Int64] = [:]
        for file in files {
            let name = file.path.split(separator: "/").last.map(String.init) ?? file.path
            guard let dot = name.firstIndex(of: "."), name[dot...].hasPrefix(".dat"), let id = Int(name[..<dot]) else { continue }
            result[id, default: 0] += file.bytes
        }
        return result
    }

    /// Applies one event. In a parallel run a table counts as loaded when its item finishes; in a
    /// serial run, when its data starts (the next line pg_restore prints is about the next item).
    func apply(_ event: PgRestoreLog.Event, parallel: Bool) {
        state.withLock { state in
            switch event {
            case .object:
                state.objectsDone = min(objectsTotal, state.objectsDone + 1)
            case .dataStarted(let table):
                guard !parallel, let id = dataIDs[table], state.loaded.insert(id).inserted else { return }
                state.bytesDone += dataBytes[id] ?? 0
            case .finished(let id, let type):
                guard type == "TABLE DATA", state.loaded.insert(id).inserted else { return }
                state.bytesDone += dataBytes[id] ?? 0
            case .problem:
                break
            }
        }
    }

    /// After a phase ends, everything it was given is done even if pg_restore printed nothing
    /// for some entries (encoding, search path...).
    func complete(objects: Int) {
        state.withLock { $0.objectsDone = min(objectsTotal, max($0.objectsDone, objects)) }
    }

    var snapshot: Snapshot {
        state.withLock { Snapshot(objectsDone: $0.objectsDone, objectsTotal: objectsTotal, bytesDone: $0.bytesDone, bytesTotal: bytesTotal) }
    }
}

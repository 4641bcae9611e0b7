import Foundation

extension BackupManifest {
    /// How a backup past pg_dump's lock limit was taken (absent when one pg_dump dumped
    /// everything): which hypertables took the batched chunk path, the batches' archives, the
    /// hypertables left to the main pg_dump and why, and chunks that retention dropped after the
    /// snapshot was taken.
    public struct ChunkPath: Codable, Sendable, Equatable {
        /// Why the batched path was used, e.g. the lock budget and the relations to lock.
        public var reason: String
        /// `max_locks_per_transaction` x (`max_connections` + `max_prepared_transactions`).
        public var lockBudget: Int
        public var chunksPerBatch: Int
        /// Definitions of the batched hypertables' root tables (a JSON file in the entry).
        public var rootsFile: String
        public var batches: [Batch]
        public var fallbacks: [Fallback]
        public var droppedChunks: [DroppedChunk]
        /// The check of each batched hypertable through its root (absent in backups made before
        /// tsbackup ran it).
        public var rootChecks: [RootCheck]? = nil
        /// Where the batched chunks' rows are: ``DataForm/copyFiles`` (each batch's data file);
        /// absent in backups whose batch archives hold the rows (pg_dump's TABLE DATA).
        public var dataForm: DataForm? = nil

        /// The form of a batched backup's chunk rows.
        public enum DataForm: String, Codable, Sendable {
            /// Each batch's archive is pg_dump's `--schema-only` DDL of its chunks; their rows
            /// were copied by tsbackup (COPY TO STDOUT on the backup's snapshot) into the batch's
            /// ``Batch/dataFile``: one zstd frame holding, for each chunk of ``Batch/chunks`` in
            /// order, its rows in COPY's text format and a line `\.`.
            case copyFiles = "copy_files"
        }

        /// One pg_dump archive of chunks of one hypertable, all read in the backup's snapshot.
        public struct Batch: Codable, Sendable, Equatable {
            public var archive: String
            public var hypertable: String
            /// Chunks in the archive ("schema.name"): those of the snapshot minus dropped ones.
            public var chunks: [String]
            public var rowCount: Int64
            /// The chunks' rows (``DataForm/copyFiles``); nil when the archive holds them.
            public var dataFile: String? = nil

            enum CodingKeys: String, CodingKey {
                case archive, hypertable, chunks
                case rowCount = "row_count"
                case dataFile = "data_file"
            }
        }

        /// A hypertable the batched path does not handle: it went through the main pg_dump.
        public struct Fallback: Codable, Sendable, Equatable {
            public var hypertable: String
            public var reason: String
        }

        /// A chunk in the snapshot's catalog whose table was dropped (retention) before a batch
        /// could lock it: not in any archive; the restore deletes its catalog rows.
        public struct DroppedChunk: Codable, Sendable, Equatable {
            public var id: Int
            public var table: String
            public var hypertable: String
        }

        /// A batched hypertable counted (and with checksums hashed) through its root on the
        /// backup's snapshot, in windows of chunks, and compared chunk by chunk with its batches.
        public struct RootCheck: Codable, Sendable, Equatable {
            public var hypertable: String
            public var windows: Int
            /// Rows the root held in the snapshot.
            public var rootRows: Int64
            /// Rows the batches counted in the chunks they dumped.
            public var batchRows: Int64
            /// Chunks dumped, then dropped (retention) before the root was counted: in the
            /// archive, not under the root any more; the only difference allowed.
            public var droppedAfterDump: [String]
            /// Server sessions the windows ran on: a new one every few thousand chunks planned,
            /// which bounds the server's caches (absent in backups made before this was recorded).
            public var sessions: Int? = nil

            enum CodingKeys: String, CodingKey {
                case hypertable, windows
                case rootRows = "root_rows"
                case batchRows = "batch_rows"
                case droppedAfterDump = "dropped_after_dump"
                case sessions
            }
        }

        enum CodingKeys: String, CodingKey {
            case reason
            case lockBudget = "lock_budget"
            case chunksPerBatch = "chunks_per_batch"
            case rootsFile = "roots_file"
            case batches, fallbacks
            case droppedChunks = "dropped_chunks"
            case rootChecks = "root_checks"
            case dataForm = "data_form"
        }
    }
}

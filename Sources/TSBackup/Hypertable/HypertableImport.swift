import Foundation
import PostgresNIO

/// The `import-hypertable` use case: recreate an exported hypertable in an existing database
/// (as its owner, no superuser needed), load its rows in parallel, and prove they are the rows
/// that were exported.
public enum HypertableImport {
    public struct Request: Sendable {
        public var repository: RepositoryAccess
        public var id: String
        public var target: ConnectionSettings
        /// "schema.name" to create instead of the exported name.
        public var targetTable: String?
        public var jobs = 2
        /// How long dropping a half-made table keeps trying a server that cannot be reached (it
        /// crashed or restarted under the import) (``WaitSetting/cleanup``).
        public var cleanupPatience: Duration = WaitSetting.cleanup.default

        public init(repository: RepositoryAccess, id: String, target: ConnectionSettings) {
            self.repository = repository
            self.id = id
            self.target = target
        }
    }

    public struct Report: Codable, Sendable {
        public var id: String
        public var target: String
        public var table: String
        public var rows: Int64
        public var files: Int
        /// Compressed bytes read and uncompressed COPY text loaded.
        public var bytes: Int64
        public var rawBytes: Int64
        public var durationSeconds: Double
        public var loadSeconds: Double
        public var contentHash: String
        public var verified: Bool
        /// Definition objects not created, each with the reason.
        public var skipped: [String]
        public var warnings: [String]
        /// What happened to compression: the chunks compressed at the source and whether the
        /// target compressed them again ("no chunk was compressed at the source" when there were none;
        /// empty for exports that did not record chunks).
        public var compression: String = ""
        /// Target chunks compressed again because their source chunk was compressed.
        public var recompressedChunks: [String] = []
        /// The imported table, quoted, and the comment it gets once the report is out (the
        /// exported one, or none): ``acknowledge(_:request:)`` puts it in place of the marker.
        /// Not part of the JSON report.
        public internal(set) var quotedTable: String = ""
        var finalComment: String?

        enum CodingKeys: String, CodingKey {
            case id, target, table, rows, files, bytes
            case rawBytes = "raw_bytes"
            case durationSeconds = "duration_seconds"
            case loadSeconds = "load_seconds"
            case contentHash = "content_hash"
            case verified, skipped, warnings, compression
            case recompressedChunks = "recompressed_chunks"
        }

        public var completionLine: String {
            let rate = loadSeconds > 0 ? String(format: "%.0f rows/s, %.1f MB/s", Double(rows) / loadSeconds, Double(rawBytes) / 1_000_000 / loadSeconds) : "-"
            return "Imported \(id) into \(table) on \(target): \(rows) rows from \(files) files, row count and content hash match the export's figures from the source's hypertable root; \(compression.isEmpty ? "" : compression + "; ")load \(String(format: "%.1f", loadSeconds)) s (\(rate)), total \(String(format: "%.1f", durationSeconds)) s."
        }
    }

    /// When an object of the definition is created, and what its failure means.
    enum Phase {
        /// Before create_hypertable, in its transaction: a failure refuses the import.
        case table
        /// After the load: a failure undoes the import.
        case required
        /// After the load: a failure is reported and the object skipped.
        case optional
    }

    static func phase(of type: String) -> Phase {
        switch type {
        case "TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "CONSTRAINT": .table
        case "INDEX", "FK CONSTRAINT", "TRIGGER": .required
        default: .optional
        }
    }

    /// Ends the import's claim on its new table once its report is out: puts the exported
    /// comment (or none) in place of the marker (InterruptedRuns) that makes the next import into
    /// the database drop the table. Call it after printing the report of a successful
    /// ``run(_:)``. Does nothing when the marker is not this process's any more.
    public static func acknowledge(_ report: Report, request: Request) async throws {
        guard report.verified, !report.quotedTable.isEmpty else { return }
        let table = report.quotedTable
        try await DatabaseSession.with(request.target) { session in
            let comment = try await session.rows("SELECT obj_description(to_regclass(\(table)), 'pg_class')", as: (String?).self).first ?? nil
            guard let comment, let owner = InterruptedRuns.Owner.parse(comment), owner.kind == .import, owner.backup == report.id,
                  owner.pid == getpid(), owner.host == ProcessInfo.processInfo.hostName else { return }
            try await session.execute("COMMENT ON TABLE \(table) IS \(report.finalComment.map(SQLLiteral.quote) ?? "NULL")",
                                      purpose: "removing the import's marker from \(report.table)")
        }
    }

    public static func run(_ request: Request) async throws -> Report {
        try await request.repository.with(create: false) { repository in
            try await run(request, repository: repository)
        }
    }

    static func run(_ request: Request, repository: any Repository) async throws -> Report {
        let started = Date()
        let (entry, manifest) = try await repository.completeHypertableManifest(request.id)
        let (schema, name) = try request.targetTable.map { try QualifiedName.parse($0, option: "--as") }
            ?? (manifest.table.schema, manifest.table.name)
        let qualified = "\(quoteIdentifier(schema)).\(quoteIdentifier(name))"
        let display = "\(schema).\(name)"

        // The definition is executed on the target: read it checked (and authenticated when encrypted).
        guard let definitionFile = manifest.files.first(where: { $0.path == manifest.definitionFile }) else {
            throw TSBackupError(.failed, "Export \(manifest.id) does not list \(manifest.definitionFile) among its files; the manifest is damaged. Export the hypertable again.")
        }
        // Every data file's name must stay inside the entry before anything runs on the target.
        for file in manifest.dataFiles { try EntryPath.validate(file.path) }
        let text = String(decoding: try await repository.readFile(definitionFile, of: entry), as: UTF8.self)
        // Refuses anything in the stored definition beyond one table's statements, before any SQL runs.
        try DefinitionPolicy.check(text, table: (manifest.table.schema, manifest.table.name), file: manifest.definitionFile, id: manifest.id)
        var definition = TableDefinition(pgDumpOutput: text)
        if (schema, name) != (manifest.table.schema, manifest.table.name) {
            let renamer = DefinitionRenamer(definition: definition, from: (manifest.table.schema, manifest.table.name), to: (schema, name))
            for i in definition.objects.indices {
                definition.objects[i].statements = definition.objects[i].statements.map(renamer.rewrite)
            }
        }

        return try await DatabaseSession.with(request.target) { session in
            var warnings = request.target.warnings
            var skipped: [String] = []
            // Tables of imports killed outright (no cleanup code ran) are dropped first, and said so.
            warnings += try await InterruptedRuns.sweepTables(session, database: request.target.database)
            let extensionSchema = try await preflight(request, manifest: manifest, schema: schema, name: name, session: session)
            let psql = try await PostgresTools.locate("psql", minimumMajor: try await ServerInspector(session: session).serverVersion().majorVersion)
            let decompressor = try Compressor.decompressor(for: manifest.compressionProgram)
            // A local, unencrypted entry's files are read in place (hashed first). Anything else
            // (S3, encrypted) streams each file from the repository into its COPY, decrypted and
            // hashed on the way, without staging: a mismatch fails the load and the table is dropped.
            let dataPaths = Set(manifest.dataFiles.map(\.path))
            let local = repository.readsInPlace
                ? try await repository.materialize(entry, files: manifest.files.filter { dataPaths.contains($0.path) }) : nil
            defer { local?.remove() }
            let source: DataSource = local.map { .directory($0.directory) } ?? .stream(repository, entry)

            let marker = InterruptedRuns.Owner(kind: .import, backup: manifest.id)
            try await createTable(definition: definition, manifest: manifest, schema: schema, qualified: qualified,
                                  extensionSchema: extensionSchema, session: session, skipped: &skipped, marker: marker)
            do {
                let loadStarted = Date()
                try await load(manifest: manifest, source: source, qualified: qualified, display: display,
                               request: request, psql: psql, decompressor: decompressor)
                let loadSeconds = Date().timeIntervalSince(loadStarted)
                var tableComment: String?
                let compressionOn = try await finish(definition: definition, manifest: manifest, qualified: qualified, extensionSchema: extensionSchema,
                                                     session: session, marker: marker, tableComment: &tableComment,
                                                     skipped: &skipped, warnings: &warnings)
                let (compression, recompressed) = try await recompress(manifest: manifest, schema: schema, name: name, extensionSchema: extensionSchema,
                                                                       compressionOn: compressionOn, session: session, warnings: &warnings)

                try await TableContent.prepare(session)
                let (rows, hash) = try await TableContent.measure(session, table: qualified, hash: true)
                guard rows == manifest.rowCount, hash == manifest.contentHash else {
                    throw ExplainedFailure(TSBackupError(.failed, "The imported table \(display) holds \(rows) rows with content hash \(hash ?? "-"), but export \(manifest.id) recorded \(manifest.rowCount) rows with \(manifest.contentHash). The table was dropped again; run `tsbackup verify \(manifest.id)` and check the target's triggers and defaults."))
                }
                try await session.execute("ANALYZE \(qualified)", purpose: "analyzing \(display)")
                // Verified. The marker stays until the caller has printed the report
                // (acknowledge): a run killed before that has its table dropped, and named, by
                // the next import, instead of leaving a table no report names.
                var report = Report(id: manifest.id, target: request.target.displayName, table: display, rows: rows,
                              files: manifest.dataFiles.count, bytes: manifest.dataFiles.reduce(0) { total, file in total + (manifest.files.first { $0.path == file.path }?.bytes ?? 0) },
                              rawBytes: manifest.rawDataBytes, durationSeconds: Date().timeIntervalSince(started), loadSeconds: loadSeconds,
                              contentHash: hash ?? "", verified: true, skipped: skipped, warnings: warnings,
                              compression: compression, recompressedChunks: recompressed)
                report.quotedTable = qualified
                report.finalComment = tableComment.flatMap { $0 == marker.comment ? nil : $0 }
                return report
            } catch {
                // A half-made table must not look like an import: drop what this run created. When
                // the server crashed or restarted under the import, this session is gone: drop
                // through a new one once the server is back (bounded), and never claim a drop
                // that did not happen.
                var dropProblem: String?
                do {
                    try await session.execute("DROP TABLE IF EXISTS \(qualified) CASCADE")
                } catch {
                    let target = request.target
                    dropProblem = await ServerRecovery.retryingWhileUnreachable(patience: request.cleanupPatience) {
                        try await DatabaseSession.with(target) { fresh in
                            _ = try await fresh.execute("DROP TABLE IF EXISTS \(qualified) CASCADE")
                        }
                    }
                }
                let failure: TSBackupError
                let explained: Bool
                if let known = error as? ExplainedFailure {
                    (failure, explained) = (known.error, true)
                } else if let known = error as? TSBackupError {
                    (failure, explained) = (known, false)
                } else {
                    throw error
                }
                if let dropProblem {
                    throw TSBackupError(failure.kind, failure.message + " The half-imported table \(display) could NOT be dropped (\(dropProblem)); when the server accepts connections again, run DROP TABLE \(qualified) CASCADE in database \"\(request.target.database)\", then import again.")
                }
                if explained { throw failure }
                throw TSBackupError(failure.kind, failure.message + " The import was undone: \(display) was dropped again. Fix the cause in the target database (or import under another name with --as) and import again.")
            }
        }
    }

    /// Checks the target; returns the TimescaleDB extension's schema there.
    static func preflight(_ request: Request, manifest: HypertableManifest, schema: String, name: String,
                          session: DatabaseSession) async throws -> String {
        let target = request.target.displayName
        let installed = try await session.rows(
            "SELECT e.extversion, n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'",
            as: (String, String).self, purpose: "looking for the timescaledb extension").first
        guard let (version, extensionSchema) = installed else {
            throw TSBackupError(.precondition, "TimescaleDB is not installed in database \"\(request.target.database)\" of \(target), so a hypertable cannot be created there. Run CREATE EXTENSION timescaledb in that database (as its owner), then import again.")
        }
        if let source = manifest.timescaledb?.version, VersionNumber.isOrderedBefore(version, source) {
            throw TSBackupError(.precondition, "The target's TimescaleDB is \(version), older than the \(source) the hypertable was exported from; settings may not exist there. Update it (ALTER EXTENSION timescaledb UPDATE) or import into a server with \(source) or newer.")
        }
        let exists = try await session.value(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = \(schema) AND c.relname = \(name))",
            as: Bool.self, purpose: "checking that \(schema).\(name) does not exist")
        if exists {
            throw TSBackupError(.precondition, "\(schema).\(name) already exists in database \"\(request.target.database)\" of \(target); import-hypertable never writes into an existing table. Import under another name with --as SCHEMA.NAME, or drop the table first if it is expendable.")
        }
        return extensionSchema
    }

    /// The table, its constraints and its dimensions, in one transaction: either the empty
    /// hypertable exists afterwards, or nothing does.
    static func createTable(definition: TableDefinition, manifest: HypertableManifest, schema: String, qualified: String,
                            extensionSchema: String, session: DatabaseSession, skipped: inout [String],
                            marker: InterruptedRuns.Owner) async throws {
        try await session.execute("BEGIN")
        do {
            try await session.execute("SELECT pg_catalog.set_config('search_path', '', true)")
            try await session.execute("SET LOCAL check_function_bodies = false")
            try await session.execute("CREATE SCHEMA IF NOT EXISTS \(quoteIdentifier(schema))", purpose: "creating schema \(schema)")
            for object in definition.objects where phase(of: object.type) == .table {
                for statement in object.statements {
                    // The table belongs to the role that imports it: the exported owner may not exist
                    // here, and a non-superuser cannot give tables away.
                    if isOwnerChange(statement) { continue }
                    try await session.execute(statement, purpose: "creating \(object.type) \(object.name)")
                }
            }
            let ext = quoteIdentifier(extensionSchema)
            let literal = { (value: String) in SQLLiteral.quote(value) }
            for dimension in manifest.dimensions {
                let column = literal(dimension.column)
                if dimension.number == 1 {
                    var call = "SELECT \(ext).create_hypertable(\(literal(qualified)), \(column), chunk_time_interval => \(dimension.intervalLength ?? 0), create_default_indexes => false"
                    if let function = dimension.partitioningFunction { call += ", time_partitioning_func => \(literal(function))" }
                    try await session.execute(call + ")", purpose: "making \(qualified) a hypertable")
                } else if dimension.kind == "space" {
                    var call = "SELECT \(ext).add_dimension(\(literal(qualified)), \(column), number_partitions => \(dimension.partitions ?? 1)"
                    // The default hash function moved between schemas across versions; name only custom ones.
                    if let function = dimension.partitioningFunction, !function.hasSuffix(".get_partition_hash") {
                        call += ", partitioning_func => \(literal(function))"
                    }
                    try await session.execute(call + ")", purpose: "adding dimension \(dimension.column)")
                } else {
                    try await session.execute("SELECT \(ext).add_dimension(\(literal(qualified)), \(column), chunk_time_interval => \(dimension.intervalLength ?? 0))",
                                              purpose: "adding dimension \(dimension.column)")
                }
                if let function = dimension.integerNowFunction {
                    try await session.execute("SELECT \(ext).set_integer_now_func(\(literal(qualified)), \(literal(function)))",
                                              purpose: "setting the integer now function \(function)")
                }
            }
            // Created together with the table: a run killed from here on leaves a marked table
            // that the next import into this database drops (InterruptedRuns).
            try await session.execute("COMMENT ON TABLE \(qualified) IS \(SQLLiteral.quote(marker.comment))")
            try await session.execute("COMMIT")
        } catch let error as TSBackupError {
            _ = try? await session.execute("ROLLBACK")
            throw TSBackupError(.precondition, "\(qualified) cannot be created on \(session.settings.displayName): \(error.message) Nothing was created. Create what is missing there (types, schemas, functions the columns use) or import into another database.")
        }
    }

    /// pg_dump writes `ALTER TABLE ONLY`, which TimescaleDB refuses on a hypertable (the
    /// constraint must reach every chunk).
    static func onHypertable(_ statement: String) -> String {
        guard let range = statement.range(of: #"^ALTER TABLE ONLY\s"#, options: .regularExpression) else { return statement }
        return statement.replacingCharacters(in: range, with: "ALTER TABLE ")
    }

    static func isOwnerChange(_ statement: String) -> Bool {
        let words = SQLText.tokenize(statement).compactMap { token, _ -> String? in
            if case .word(let word, false) = token { return word }
            return nil
        }
        return words.first == "alter" && words.dropLast().suffix(2) == ["owner", "to"]
    }

    static func checkFile(_ path: String, in directory: String, manifest: HypertableManifest) throws {
        guard let entry = manifest.files.first(where: { $0.path == path }) else {
            throw TSBackupError(.failed, "Export \(manifest.id) does not list \(path) among its files; the manifest is damaged. Export the hypertable again.")
        }
        let full = try EntryPath.resolve(path, in: directory)
        guard FileManager.default.fileExists(atPath: full) else {
            throw TSBackupError(.failed, "Export \(manifest.id) lacks its file \(path). Run `tsbackup verify \(manifest.id)`; export the hypertable again.")
        }
        let (hex, bytes) = try FileSystem.sha256(of: full)
        guard hex == entry.sha256, bytes == entry.bytes else {
            throw TSBackupError(.failed, "The file \(path) of export \(manifest.id) is corrupt (its SHA-256 differs from the manifest's); nothing more was loaded. Run `tsbackup verify \(manifest.id)` and export the hypertable again.")
        }
    }

    /// Where the data files are read from.
    enum DataSource: Sendable {
        /// Plain local files under this directory, read by the decompressor itself.
        case directory(String)
        /// Streamed from the repository through this process.
        case stream(any Repository, RepositoryEntry)
    }

    /// Every data file piped into its own psql, `jobs` at a time: a local file hashed first, a
    /// streamed one hashed as it passes.
    static func load(manifest: HypertableManifest, source: DataSource, qualified: String, display: String,
                     request: Request, psql: PostgresTool, decompressor: [String]) async throws {
        // Values are read back the way the export printed them.
        let environment = request.target.childProcessEnvironment(options: "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres")
        let columns = manifest.copyColumns.map { quoteIdentifier($0.name) }.joined(separator: ", ")
        let command = "COPY \(qualified) (\(columns)) FROM STDIN"
        let env = environment
        _ = try await Concurrently.map(manifest.dataFiles, limit: max(1, request.jobs)) { file in
            let rows: Int64
            switch source {
            case .directory(let directory):
                try checkFile(file.path, in: directory, manifest: manifest)
                rows = try await CopyPipeline.load(psql: psql.path, environment: env, command: command, decompressor: decompressor,
                                                   inputPath: try EntryPath.resolve(file.path, in: directory), what: "\(file.path) into \(display)")
            case .stream(let repository, let entry):
                guard let stored = manifest.files.first(where: { $0.path == file.path }) else {
                    throw TSBackupError(.failed, "Export \(manifest.id) does not list \(file.path) among its files; the manifest is damaged. Export the hypertable again.")
                }
                rows = try await CopyPipeline.loadStreaming(psql: psql.path, environment: env, command: command, decompressor: decompressor,
                                                            what: "\(file.path) into \(display)") { write in
                    try await repository.streamFile(stored, of: entry, to: write)
                }
            }
            guard rows == file.rows else {
                throw ExplainedFailure(TSBackupError(.failed, "Loading \(file.path) into \(display) gave \(rows) rows, the export recorded \(file.rows). The import was undone; run `tsbackup verify \(manifest.id)`."))
            }
            return rows
        }
    }

    /// Indexes, foreign keys, triggers, comments and grants after the load; what the target
    /// cannot take is skipped with a reason, never silently.
    /// Returns whether compression is enabled on the new table.
    /// The definition's own comment on the table would replace the run's marker: a run killed
    /// before the marker came back would leave an unmarked table no report names (the kill
    /// campaign found that window). So every statement that is not part of the table's structure
    /// (COMMENT among them) commits together with the marker put back, and the table's own
    /// comment is handed out in `tableComment` for ``acknowledge(_:request:)``.
    static func finish(definition: TableDefinition, manifest: HypertableManifest, qualified: String, extensionSchema: String,
                       session: DatabaseSession, marker: InterruptedRuns.Owner, tableComment: inout String?,
                       skipped: inout [String], warnings: inout [String]) async throws -> Bool {
        try await session.execute("SELECT pg_catalog.set_config('search_path', '', false)")
        for object in definition.objects where phase(of: object.type) != .table {
            statements: for statement in object.statements {
                if isOwnerChange(statement) { continue }
                if object.type == "FK CONSTRAINT" {
                    for (schema, name) in SQLText.qualifiedNames(after: "references", in: statement) where !(try await relationExists(schema, name, session)) {
                        let reason = "FK CONSTRAINT \(object.name): the referenced table \(schema).\(name) does not exist in the target database"
                        skipped.append(reason)
                        warnings.append("Skipped \(reason); the imported rows are not checked against it. Create the table and add the constraint by hand if it is needed.")
                        continue statements
                    }
                }
                if object.type == "TRIGGER" {
                    for (schema, name) in SQLText.qualifiedNames(after: "function", in: statement) + SQLText.qualifiedNames(after: "procedure", in: statement)
                    where !(try await functionExists(schema, name, session)) {
                        let reason = "TRIGGER \(object.name): its function \(schema).\(name) does not exist in the target database"
                        skipped.append(reason)
                        warnings.append("Skipped \(reason). Create the function and the trigger by hand if it is needed.")
                        continue statements
                    }
                }
                if phase(of: object.type) != .optional {
                    try await session.execute(onHypertable(statement), purpose: "creating \(object.type) \(object.name)")
                    continue
                }
                try await session.execute("BEGIN")
                do {
                    try await session.execute(onHypertable(statement), purpose: "creating \(object.type) \(object.name)")
                    let comment = try await session.rows("SELECT obj_description(\(qualified)::regclass, 'pg_class')",
                                                         as: (String?).self).first ?? nil
                    if comment != marker.comment {
                        tableComment = comment
                        try await session.execute("COMMENT ON TABLE \(qualified) IS \(SQLLiteral.quote(marker.comment))")
                    }
                    try await session.execute("COMMIT")
                } catch {
                    _ = try? await session.execute("ROLLBACK")
                    guard let error = error as? TSBackupError else { throw error }
                    skipped.append("\(object.type) \(object.name): \(error.message)")
                    warnings.append("Skipped \(object.type) \(object.name): \(error.message)")
                }
            }
        }
        try await session.execute("RESET search_path")
        try await advanceSequences(qualified: qualified, session: session)
        return try await restoreTimescaleSettings(manifest: manifest, qualified: qualified, extensionSchema: extensionSchema,
                                                  session: session, skipped: &skipped, warnings: &warnings)
    }

    /// Compression settings and policies, where the target supports them (Apache-licensed
    /// builds do not): each one that cannot be restored is named.
    /// Returns whether compression is enabled on the new table.
    @discardableResult
    static func restoreTimescaleSettings(manifest: HypertableManifest, qualified: String, extensionSchema: String,
                                         session: DatabaseSession, skipped: inout [String], warnings: inout [String]) async throws -> Bool {
        let ext = quoteIdentifier(extensionSchema)
        let literal = { (value: String) in SQLLiteral.quote(value) }
        var compressionOn = false
        let compressedAtSource = (manifest.chunks ?? []).filter(\.compressed).count
        let license = try await session.value("SELECT current_setting('timescaledb.license', true)", as: String?.self,
                                              purpose: "reading timescaledb.license")
        if manifest.compression.enabled && license == "apache" {
            // The Apache-only build has no compression at all; ALTER TABLE would fail with 0A000.
            skipped.append("compression settings: the target's TimescaleDB is the Apache-only build (timescaledb.license = apache), which cannot compress")
            warnings.append(apacheWarning(compressedAtSource: compressedAtSource))
        } else if manifest.compression.enabled {
            var options = ["timescaledb.compress"]
            if !manifest.compression.segmentBy.isEmpty {
                options.append("timescaledb.compress_segmentby = \(literal(manifest.compression.segmentBy.map(SQLText.identifier).joined(separator: ", ")))")
            }
            if !manifest.compression.orderBy.isEmpty {
                options.append("timescaledb.compress_orderby = \(literal(manifest.compression.orderBy.joined(separator: ", ")))")
            }
            do {
                try await session.execute("ALTER TABLE \(qualified) SET (\(options.joined(separator: ", ")))", purpose: "enabling compression")
                compressionOn = true
            } catch let error as TSBackupError where error.sqlState == "0A000" {
                skipped.append("compression settings: the target does not support compression (SQLSTATE 0A000): \(error.message)")
                warnings.append(apacheWarning(compressedAtSource: compressedAtSource))
            } catch let error as TSBackupError {
                skipped.append("compression settings: \(error.message)")
                warnings.append("Compression settings were not restored: \(error.message) The data arrived complete and uncompressed\(compressedAtSource > 0 ? "; \(compressedAtSource) chunks that were compressed at the source are not compressed here" : "").")
            }
        }
        for job in manifest.jobs {
            let config = job.config.map(literal) ?? "'{}'"
            let call: String? = switch job.procedure {
            case "policy_compression": "SELECT \(ext).add_compression_policy(\(literal(qualified)), compress_after => (\(config)::jsonb ->> 'compress_after')::interval)"
            case "policy_retention": "SELECT \(ext).add_retention_policy(\(literal(qualified)), drop_after => (\(config)::jsonb ->> 'drop_after')::interval)"
            case "policy_reorder": "SELECT \(ext).add_reorder_policy(\(literal(qualified)), (\(config)::jsonb ->> 'index_name'))"
            default: nil
            }
            guard let call else {
                skipped.append("job \(job.id) (\(job.procedure)): tsbackup does not recreate this kind of job")
                warnings.append("Job \(job.id) (\(job.procedure), every \(job.scheduleInterval), config \(job.config ?? "{}")) was not restored; recreate it by hand.")
                continue
            }
            do {
                try await session.execute(call, purpose: "adding \(job.procedure)")
            } catch let error as TSBackupError {
                skipped.append("job \(job.id) (\(job.procedure)): \(error.message)")
                warnings.append("Job \(job.id) (\(job.procedure), config \(job.config ?? "{}")) was not restored (the target does not support it): \(error.message)")
            }
        }
        return compressionOn
    }

    /// `compress_chunk` on one target chunk ("schema"."name" as `format('%I.%I')` gives it).
    static func compressChunkSQL(extensionSchema: String, chunk: String) -> String {
        "SELECT \(quoteIdentifier(extensionSchema)).compress_chunk(\(SQLLiteral.quote(chunk))::regclass)"
    }

    static func apacheWarning(compressedAtSource: Int) -> String {
        "The target's TimescaleDB cannot compress (Apache-only build): compression settings and policies were not restored, and the data arrived complete but uncompressed\(compressedAtSource > 0 ? " (\(compressedAtSource) chunks were compressed at the source)" : ""). Import into a server with the Timescale-licensed build to keep the data compressed."
    }

    /// Compresses the target chunks whose source chunks were compressed (matched by their slice
    /// of the primary dimension, which the same chunk interval reproduces). A chunk that cannot
    /// be compressed is named in a warning; its rows are complete either way.
    static func recompress(manifest: HypertableManifest, schema: String, name: String, extensionSchema: String, compressionOn: Bool,
                           session: DatabaseSession, warnings: inout [String]) async throws -> (String, [String]) {
        let sourceCompressed = (manifest.chunks ?? []).filter(\.compressed)
        guard !sourceCompressed.isEmpty else {
            return (manifest.chunks == nil ? "" : "no chunk was compressed at the source", [])
        }
        let partial = sourceCompressed.filter { $0.state == "partially compressed" }.count
        let atSource = "\(sourceCompressed.count) chunks were compressed at the source (\(partial) partially)"
        guard compressionOn else {
            return ("\(atSource); not compressed here: compression is not enabled on the target (see warnings)", [])
        }
        var compressed: [String] = []
        var failed: [String] = []
        for chunk in sourceCompressed {
            guard let start = chunk.rangeStart, let end = chunk.rangeEnd else {
                failed.append("\(chunk.name) (no range recorded)")
                continue
            }
            let targets = try await session.values(
                """
                SELECT format('%I.%I', ch.schema_name, ch.table_name)
                FROM _timescaledb_catalog.chunk ch
                JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
                JOIN _timescaledb_catalog.chunk_constraint con ON con.chunk_id = ch.id
                JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = con.dimension_slice_id
                WHERE h.schema_name = \(schema) AND h.table_name = \(name) AND NOT ch.dropped AND ch.status & 1 = 0
                  AND ds.dimension_id = (SELECT min(d.id) FROM _timescaledb_catalog.dimension d WHERE d.hypertable_id = h.id AND d.interval_length IS NOT NULL)
                  AND ds.range_start = \(start) AND ds.range_end = \(end)
                ORDER BY ch.id
                """, as: String.self, purpose: "finding the target chunks of \(chunk.name)'s range")
            if targets.isEmpty { failed.append("\(chunk.name) (no chunk with its range on the target)") }
            for target in targets where !compressed.contains(target) {
                do {
                    try await session.execute(compressChunkSQL(extensionSchema: extensionSchema, chunk: target), purpose: "compressing \(target)")
                    compressed.append(target)
                } catch let error as TSBackupError {
                    failed.append("\(target): \(error.message)")
                }
            }
        }
        if !failed.isEmpty {
            warnings.append("Not every chunk compressed at the source was compressed again (the rows are complete, only their storage differs): \(failed.joined(separator: "; ")). Run compress_chunk on them by hand if needed.")
        }
        return ("\(atSource); compressed \(compressed.count) target chunks again\(failed.isEmpty ? "" : ", \(failed.count) could not be"); rows verified after compressing", compressed)
    }

    /// pg_dump --schema-only leaves serial and identity sequences at their start; set each past
    /// the largest imported value so the next insert does not collide with an imported row.
    static func advanceSequences(qualified: String, session: DatabaseSession) async throws {
        let literal = SQLLiteral.quote(qualified)
        let owned = try await session.rows(
            PostgresQuery(unsafeSQL: """
            SELECT a.attname::text, pg_get_serial_sequence(\(literal), a.attname)
            FROM pg_attribute a WHERE a.attrelid = \(literal)::regclass AND a.attnum > 0 AND NOT a.attisdropped
              AND pg_get_serial_sequence(\(literal), a.attname) IS NOT NULL
            """), as: (String, String).self, purpose: "finding the sequences of \(qualified)")
        for (column, sequence) in owned {
            let sequenceLiteral = SQLLiteral.quote(sequence)
            try await session.execute(
                "SELECT setval(\(sequenceLiteral)::regclass, m) FROM (SELECT max(\(quoteIdentifier(column))) AS m FROM \(qualified)) x WHERE m IS NOT NULL",
                purpose: "advancing sequence \(sequence) past the imported values")
        }
    }

    static func relationExists(_ schema: String, _ name: String, _ session: DatabaseSession) async throws -> Bool {
        try await session.value(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = \(schema) AND c.relname = \(name))",
            as: Bool.self, purpose: "looking for \(schema).\(name)")
    }

    static func functionExists(_ schema: String, _ name: String, _ session: DatabaseSession) async throws -> Bool {
        try await session.value(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = \(schema) AND p.proname = \(name))",
            as: Bool.self, purpose: "looking for function \(schema).\(name)")
    }
}

/// A failure whose message already says that the import was undone, so the clean-up does not
/// append the same sentence again. A type, not a look at the message's words.
private struct ExplainedFailure: Error {
    let error: TSBackupError
    init(_ error: TSBackupError) { self.error = error }
}

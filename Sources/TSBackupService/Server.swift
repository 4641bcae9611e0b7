import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import ServiceLifecycle
import TSBackup

/// The `tsbackup serve` process: the HTTP API, the job queue and whatever extra services
/// (scheduler, notifier) are handed in, run together under swift-service-lifecycle so SIGTERM
/// and SIGINT shut everything down in order: the HTTP server stops accepting, the job queue
/// cancels its running jobs and marks them interrupted.
public struct ServiceServer: Sendable {
    public let core: ServiceCore
    public let logger: Logger
    /// Long-running pieces started with the server (serve-ops: the scheduler).
    public var extraServices: [any Service] = []
    /// Adds routes beside the API (serve-ops: /metrics, the dashboard). Called once while the
    /// router is built; routes under /api get the token check and the audit log, others do not.
    public var extraRoutes: [@Sendable (Router<ServiceRequestContext>, ServiceCore) -> Void] = []

    /// Opens the state file and builds the job queue with the built-in job kinds.
    public init(config: ServiceConfig, logger: Logger = Logger(label: "tsbackup.serve")) throws {
        let state = try StateStore(path: config.stateFile)
        self.init(core: ServiceCore(config: config, state: state,
                                    jobs: JobQueue(config: config, state: state, handlers: JobKinds.handlers(), logger: logger)),
                  logger: logger)
    }

    public init(core: ServiceCore, logger: Logger = Logger(label: "tsbackup.serve")) {
        self.core = core
        self.logger = logger
    }

    /// The router with every API route, the OpenAPI document and /health.
    public func makeRouter() -> Router<ServiceRequestContext> {
        let router = Router(context: ServiceRequestContext.self)
        router.add(middleware: APIMiddleware(core: core, logger: logger))
        router.get("health") { _, _ in "ok" }
        router.get("openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPI.document)))
        }
        let api = router.group("api")
        DatabaseRoutes(core: core).add(to: api)
        BackupRoutes(core: core).add(to: api)
        JobRoutes(core: core).add(to: api)
        RestoreRoutes(core: core).add(to: api)
        ScheduleRoutes(core: core).add(to: api)
        AuditRoutes(core: core).add(to: api)
        for add in extraRoutes { add(router, core) }
        return router
    }

    /// The application (HTTP server + job queue + extra services); `run()` runs it.
    public func makeApplication() throws -> some ApplicationProtocol {
        let configuration = ApplicationConfiguration(address: .hostname(core.config.listen.host, port: core.config.listen.port), serverName: "tsbackup")
        let server: HTTPServerBuilder
        if let tls = core.config.tls {
            let chain: [NIOSSLCertificateSource]
            let key: NIOSSLPrivateKey
            do {
                chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { .certificate($0) }
                key = try NIOSSLPrivateKey(file: tls.keyFile, format: .pem)
            } catch {
                throw TSBackupError(.usage, "The TLS certificate \(tls.certificateFile) or key \(tls.keyFile) cannot be read as PEM (\(error)). Fix tls: in the config.")
            }
            server = try .tls(.http1(), tlsConfiguration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key)))
        } else {
            server = .http1()
        }
        return Application(router: makeRouter(), server: server, configuration: configuration,
                           services: [core.jobs] + extraServices, logger: logger)
    }

    /// Runs until SIGTERM/SIGINT.
    public func run() async throws {
        logger.info("tsbackup serve starting", metadata: ["listen": "\(core.config.listen.host):\(core.config.listen.port)",
                                                          "tls": "\(core.config.tls != nil)", "databases": "\(core.config.databases.count)"])
        try await makeApplication().runService()
    }
}

import Foundation
import Hummingbird
import Logging

/// Wraps every route: finds the caller from the bearer token (401 without a valid one, except on
/// the public routes), turns every error into the API's JSON error (never a stack trace), and
/// writes the audit log: every request that changes something, every refused one, and every
/// download, with who, what, when and the outcome.
struct APIMiddleware: RouterMiddleware {
    typealias Context = ServiceRequestContext
    let core: ServiceCore
    let logger: Logger
    /// Paths answered without a token.
    static let publicPaths: Set<String> = ["/openapi.json", "/health"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let path = request.uri.path
        let isPublic = Self.publicPaths.contains(path) || !path.hasPrefix("/api")
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                context.identity = core.authenticator.identity(forToken: parts[1].trimmingCharacters(in: .whitespaces))
            }
        }
        let response: Response
        var errorMessage: String?
        do {
            if !isPublic && context.identity == nil {
                throw APIError.unauthorized(request.headers[.authorization] == nil
                    ? "Send an API token: Authorization: Bearer TOKEN."
                    : "The token is not valid. Check it, or ask an operator for one (the config stores its SHA-256).")
            }
            response = try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            if apiError.status.code >= 500 {
                logger.error("request failed", metadata: ["path": "\(path)", "error": "\(String(reflecting: error))"])
            }
            errorMessage = apiError.message
            response = try apiError.response(from: request, context: context)
        }
        audit(request, context: context, status: response.status.code, error: errorMessage)
        return response
    }

    private func audit(_ request: Request, context: Context, status: Int, error: String?) {
        let path = request.uri.path
        let changes = request.method != .get && request.method != .head
        let refused = status == 401 || status == 403
        let download = path.hasSuffix("/download")
        guard changes || refused || download, path.hasPrefix("/api") else { return }
        let outcome = status < 400 ? "allowed" : refused ? "refused" : status >= 500 ? "error" : "rejected"
        let action = "\(request.method.rawValue) \(context.endpointPath ?? path)"
        let detail = [context.auditNote.value, error].compactMap { $0 }.joined(separator: "; ")
        do {
            try core.state.audit(actor: context.identity?.name ?? "anonymous", role: context.identity?.role.rawValue, action: action,
                                 target: path, outcome: outcome, status: status, detail: detail.isEmpty ? nil : detail)
        } catch {
            logger.error("could not write the audit log", metadata: ["error": "\(error)"])
        }
    }
}

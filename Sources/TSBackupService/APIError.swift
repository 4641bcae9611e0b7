import Foundation
import Hummingbird
import NIOCore
import NIOFoundationEssentialsCompat
import NIOFoundationCompat
import TSBackup

/// An error answered to an API client: a status and a JSON body
/// `{"error": {"status": 404, "code": "not-found", "message": "..."}}` (plus `job` for 409 busy).
public struct APIError: HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// The job that makes a database busy (409).
    public var job: JobRecord?

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, job: JobRecord? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.job = job
    }

    public static func unauthorized(_ message: String) -> APIError { APIError(.unauthorized, code: "unauthorized", message) }
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message) }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not-found", message) }
    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, code: "bad-request", message) }
    public static func conflict(_ message: String, job: JobRecord? = nil) -> APIError { APIError(.conflict, code: "conflict", message, job: job) }

    struct Body: Encodable {
        struct Detail: Encodable {
            var status: Int
            var code: String
            var message: String
        }
        var error: Detail
        var job: JobView?
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = Body(error: .init(status: status.code, code: code, message: message), job: job.map(JobView.init))
        var headers: HTTPFields = [.contentType: "application/json"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"tsbackup\"" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: try APIJSON.encode(body))))
    }

    /// The API's answer for any error: ours as they are; the library's by kind; anything else a 500
    /// whose message says to look at the service's log (which has the details).
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as TSBackupError:
            switch error.kind {
            case .notFound: return APIError(.notFound, code: "not-found", error.message)
            case .usage: return APIError(.badRequest, code: "bad-request", error.message)
            case .precondition: return APIError(.conflict, code: "precondition", error.message)
            case .connection: return APIError(.badGateway, code: "connection", error.message)
            case .permission: return APIError(.badGateway, code: "permission", error.message)
            default: return APIError(.internalServerError, code: "failed", error.message)
            }
        case let error as any HTTPResponseError:
            return APIError(error.status, code: "http-\(error.status.code)", error.status.reasonPhrase)
        case is DecodingError:
            return .badRequest("The request body is not the JSON this route takes; /openapi.json describes it.")
        default:
            return APIError(.internalServerError, code: "internal", "The service failed to answer; its log has the details.")
        }
    }
}

/// The API's JSON: ISO 8601 dates, keys sorted.
enum APIJSON {
    static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(value)
    }

    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try encode(value))))
    }

    /// Decodes a request body, answering 400 for anything that is not the expected JSON.
    static func decodeBody<T: Decodable>(_ type: T.Type, from request: Request, context: ServiceRequestContext) async throws -> T {
        let buffer: ByteBuffer
        var request = request
        do {
            buffer = try await request.collectBody(upTo: 64 * 1024)
        } catch {
            throw APIError.badRequest("The request body is too large (at most 64 KiB of JSON).")
        }
        let data = Data(buffer: buffer)
        guard !data.isEmpty else { return try JSONDecoder().decode(T.self, from: Data("{}".utf8)) }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as DecodingError {
            throw APIError.badRequest("The request body is not valid JSON for this route (\(Self.describe(error))); /openapi.json describes it.")
        } catch {
            throw APIError.badRequest("The request body is not valid JSON.")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted: return "not JSON"
        case .keyNotFound(let key, _): return "missing \"\(key.stringValue)\""
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "wrong type at \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\""
        @unknown default: return "not readable"
        }
    }
}

/// Any JSON value: the library's reports are stored as JSON text and embedded as they are.
public enum JSONValue: Codable, Sendable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n.rounded() == n && abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses stored JSON text; nil for nil or unreadable text.
    static func parse(_ text: String?) -> JSONValue? {
        guard let text else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }
}

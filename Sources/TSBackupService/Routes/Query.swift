import Foundation
import Hummingbird

/// Reading query parameters and path ids, with 400/404 for values a client got wrong.
enum Query {
    static func int(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw APIError.badRequest("The query parameter \(name) must be a whole number from \(range.lowerBound) to \(range.upperBound).")
        }
        return parsed
    }

    static func string(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters[Substring(name)].map(String.init)
    }

    static func enumValue<T: RawRepresentable & CaseIterable>(_ request: Request, _ name: String, as type: T.Type) throws -> T? where T.RawValue == String {
        guard let text = string(request, name) else { return nil }
        guard let value = T(rawValue: text) else {
            throw APIError.badRequest("The query parameter \(name) must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        return value
    }

    /// A numeric id from the path; anything else names no such thing (404).
    static func id(_ context: ServiceRequestContext, _ what: String) throws -> Int64 {
        guard let text = context.parameters.get("id"), let id = Int64(text), id > 0 else {
            throw APIError.notFound("No \(what) with id \"\(context.parameters.get("id") ?? "")\".")
        }
        return id
    }

    static func parameter(_ context: ServiceRequestContext, _ name: String) throws -> String {
        guard let value = context.parameters.get(name) else { throw APIError.notFound("Missing \(name).") }
        return value
    }
}

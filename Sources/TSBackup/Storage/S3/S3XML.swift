import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A small element tree built with Foundation's XMLParser: enough for S3's responses, which are
/// shallow documents of elements with text.
struct XMLElementNode: Sendable {
    var name: String
    var text: String = ""
    var children: [XMLElementNode] = []

    func child(_ name: String) -> XMLElementNode? { children.first { $0.name == name } }
    func all(_ name: String) -> [XMLElementNode] { children.filter { $0.name == name } }
    func value(_ name: String) -> String? { child(name)?.text }

    static func parse(_ data: Data) -> XMLElementNode? {
        guard isPlainDocument(data) else { return nil }
        let builder = TreeBuilder()
        let parser = XMLParser(data: data)
        parser.delegate = builder
        parser.shouldProcessNamespaces = true
        guard parser.parse(), let root = builder.root else { return nil }
        return root
    }

    /// Whether `data` keeps to the XML S3 writes: UTF-8, at most an XML declaration first, then
    /// elements and text only: no document type declaration (so no entities), no processing
    /// instruction, no comment, no CDATA section.
    ///
    /// Foundation's XMLParser on Linux crashes the process on some documents libxml2 accepts in
    /// its recovery mode: its callbacks force-unwrap a strict UTF-8 decoding of element names,
    /// attribute names and comments, and read a processing instruction's absent data (`<?pi?>`)
    /// through a null pointer. Fuzzing found both (Fuzz/corpus/s3xml/regression-*). Such a body
    /// is refused here, before it reaches the parser, as not S3's XML; refusing every `<?` and
    /// `<!` after the declaration also keeps entities (which could carry a processing
    /// instruction back in) out.
    static func isPlainDocument(_ data: Data) -> Bool {
        guard String(validating: data, as: UTF8.self) != nil else { return false }
        let bytes = [UInt8](data)
        let open = UInt8(ascii: "<")
        var i = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        if bytes[i...].starts(with: "<?xml".utf8), i + 5 < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i + 5]) {
            // The declaration, up to the first "?>", holds no markup.
            var end = i + 5
            while end + 1 < bytes.count, !(bytes[end] == UInt8(ascii: "?") && bytes[end + 1] == UInt8(ascii: ">")) {
                if bytes[end] == open { return false }
                end += 1
            }
            guard end + 1 < bytes.count else { return false }
            i = end + 2
        }
        while i + 1 < bytes.count {
            if bytes[i] == open, bytes[i + 1] == UInt8(ascii: "?") || bytes[i + 1] == UInt8(ascii: "!") { return false }
            i += 1
        }
        return true
    }

    private final class TreeBuilder: NSObject, XMLParserDelegate {
        var stack: [XMLElementNode] = []
        var root: XMLElementNode?

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            stack.append(XMLElementNode(name: elementName))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
            guard let done = stack.popLast() else { return }
            if stack.isEmpty { root = done } else { stack[stack.count - 1].children.append(done) }
        }
    }
}

/// An object as listed or headed.
public struct S3ObjectInfo: Sendable, Equatable {
    public var key: String
    public var size: Int64
    /// The ETag without quotes.
    public var etag: String?
    public var lastModified: Date?

    public init(key: String, size: Int64, etag: String? = nil, lastModified: Date? = nil) {
        self.key = key
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
    }
}

/// A multipart upload that was started and neither completed nor aborted.
public struct S3MultipartUploadInfo: Sendable, Equatable {
    public var key: String
    public var uploadId: String
    public var initiated: Date?
}

/// One key DeleteObjects could not delete.
public struct S3DeleteFailure: Sendable, Equatable {
    public var key: String
    public var code: String
    public var message: String
}

/// Parsers for the S3 XML responses the client reads.
///
/// Root element names are not insisted on (moto names some of them after the API's output shapes);
/// an `<Error>` root or missing required elements are refused.
enum S3XML {
    struct ListPage: Sendable {
        var objects: [S3ObjectInfo]
        var commonPrefixes: [String]
        var isTruncated: Bool
        var nextContinuationToken: String?
    }

    struct ErrorBody: Sendable, Equatable {
        var code: String?
        var message: String?
    }

    /// ListObjectsV2. With `urlEncoded` (we ask for `encoding-type=url`) keys and prefixes are
    /// decoded: `+` is a space and `%XX` a byte, as S3 encodes them (moto encodes spaces as `%20`,
    /// which decodes the same).
    static func listObjectsV2(_ data: Data) throws -> ListPage {
        guard let root = XMLElementNode.parse(data), root.name != "Error", root.child("IsTruncated") != nil else {
            throw malformed("ListObjectsV2", data)
        }
        let encoded = root.value("EncodingType")?.lowercased() == "url"
        let decode: (String) -> String = { encoded ? urlDecode($0) : $0 }
        var objects: [S3ObjectInfo] = []
        for item in root.all("Contents") {
            guard let key = item.value("Key") else { throw malformed("ListObjectsV2", data) }
            objects.append(S3ObjectInfo(
                key: decode(key),
                size: Int64(item.value("Size") ?? "") ?? 0,
                etag: item.value("ETag").map(unquoteETag),
                lastModified: item.value("LastModified").flatMap(parseISO8601)))
        }
        let prefixes = root.all("CommonPrefixes").compactMap { $0.value("Prefix") }.map(decode)
        let truncated = root.value("IsTruncated")?.lowercased() == "true"
        let token = root.value("NextContinuationToken").flatMap { $0.isEmpty ? nil : $0 }
        return ListPage(objects: objects, commonPrefixes: prefixes, isTruncated: truncated, nextContinuationToken: token)
    }

    /// `<Error><Code>..</Code><Message>..</Message></Error>`; nil if the body is not one.
    static func error(_ data: Data) -> ErrorBody? {
        guard !data.isEmpty, let root = XMLElementNode.parse(data) else { return nil }
        let node = root.name == "Error" ? root : (root.child("Error") ?? root.child("Errors")?.child("Error"))
        guard let node else { return nil }
        return ErrorBody(code: node.value("Code"), message: node.value("Message"))
    }

    /// DeleteObjects' result: the keys that failed (in quiet mode only failures are listed).
    static func deleteResult(_ data: Data) throws -> (deleted: [String], failed: [S3DeleteFailure]) {
        guard let root = XMLElementNode.parse(data), root.name != "Error" else {
            throw malformed("DeleteObjects", data)
        }
        let deleted = root.all("Deleted").compactMap { $0.value("Key") }
        let failed = root.all("Error").map {
            S3DeleteFailure(key: $0.value("Key") ?? "", code: $0.value("Code") ?? "", message: $0.value("Message") ?? "")
        }
        return (deleted, failed)
    }

    static func uploadId(_ data: Data) throws -> String {
        guard let root = XMLElementNode.parse(data), root.name != "Error",
              let id = root.value("UploadId"), !id.isEmpty else {
            throw malformed("CreateMultipartUpload", data)
        }
        return id
    }

    /// CompleteMultipartUpload answers 200 with an `<Error>` body when it fails late.
    static func completeResult(_ data: Data) throws -> (etag: String?, error: ErrorBody?) {
        guard let root = XMLElementNode.parse(data) else { throw malformed("CompleteMultipartUpload", data) }
        if root.name == "Error" { return (nil, ErrorBody(code: root.value("Code"), message: root.value("Message"))) }
        return (root.value("ETag").map(unquoteETag), nil)
    }

    static func listMultipartUploads(_ data: Data) throws -> (uploads: [S3MultipartUploadInfo], nextKey: String?, nextUploadId: String?, truncated: Bool) {
        guard let root = XMLElementNode.parse(data), root.name != "Error" else {
            throw malformed("ListMultipartUploads", data)
        }
        let encoded = root.value("EncodingType")?.lowercased() == "url"
        let uploads = root.all("Upload").compactMap { node -> S3MultipartUploadInfo? in
            guard let key = node.value("Key"), let id = node.value("UploadId") else { return nil }
            return S3MultipartUploadInfo(key: encoded ? urlDecode(key) : key, uploadId: id,
                                         initiated: node.value("Initiated").flatMap(parseISO8601))
        }
        return (uploads, root.value("NextKeyMarker").map { encoded ? urlDecode($0) : $0 },
                root.value("NextUploadIdMarker"), root.value("IsTruncated")?.lowercased() == "true")
    }

    /// The DeleteObjects request body (quiet mode: only failures come back).
    static func deleteRequest(_ keys: [String]) -> Data {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
        for key in keys { xml += "<Object><Key>\(escape(key))</Key></Object>" }
        xml += "</Delete>"
        return Data(xml.utf8)
    }

    static func completeRequest(_ parts: [(number: Int, etag: String)]) -> Data {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts { xml += "<Part><PartNumber>\(part.number)</PartNumber><ETag>\"\(escape(part.etag))\"</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        return Data(xml.utf8)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for ch in text.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                // XML 1.0 cannot carry most control characters even escaped; S3 needs them as
                // character references, which it accepts.
                if ch.value < 0x20 && ch != "\t" && ch != "\n" && ch != "\r" { out += "&#\(ch.value);" } else { out.unicodeScalars.append(ch) }
            }
        }
        return out
    }

    /// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; invalid
    /// escapes are kept as they are.
    static func urlDecode(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var it = Array(text.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if b == UInt8(ascii: "%"), it.count >= 2, let hi = hexValue(it[it.startIndex]), let lo = hexValue(it[it.startIndex + 1]) {
                bytes.append(hi << 4 | lo)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    static func unquoteETag(_ etag: String) -> String {
        etag.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    static func parseISO8601(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = withFraction.date(from: text) { return d }
        return ISO8601DateFormatter().date(from: text)
    }

    static func malformed(_ operation: String, _ data: Data) -> S3Error {
        S3Error(code: .other, operation: operation,
                message: "the response body is not the XML S3 sends (\(data.count) bytes); the endpoint may not be S3-compatible")
    }
}

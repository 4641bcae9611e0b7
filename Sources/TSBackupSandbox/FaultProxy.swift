import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TSBackup

/// A fault-injecting HTTP proxy in front of an S3 endpoint (a small python3 script run as a child
/// process): it forwards requests unchanged, Host header included so signatures still verify,
/// except those chosen by the current ``Rule``, which get a 500, a 503 SlowDown, a connection reset
/// in the middle of a body, or a stall. Every rule is bounded (a count, or a probability with a
/// count), so tests cannot loop forever.
public final class FaultProxy: Sendable {
    public enum Mode: String, Sendable {
        case none
        /// 500 InternalError.
        case internalError = "500"
        /// 503 SlowDown.
        case slowDown = "503"
        /// Requests with a body: RST after half of it is read. Others: forward, then RST after half
        /// of the response body.
        case reset
        /// Read the request, then answer nothing for `stallSeconds`, then RST.
        case stall
    }

    /// Which requests get which fault.
    public struct Rule: Sendable {
        public var mode: Mode
        /// Inject into at most this many (matching) requests; nil = no limit (use with care).
        public var count: Int?
        /// Inject into each matching request with this probability.
        public var probability: Double
        /// Only requests with this method ("PUT", "GET"...).
        public var method: String?
        /// Only requests whose path and query contain this text ("partNumber=", "uploadId").
        public var pathContains: String?
        public var stallSeconds: Double

        public init(mode: Mode, count: Int? = 1, probability: Double = 1, method: String? = nil,
                    pathContains: String? = nil, stallSeconds: Double = 30) {
            self.mode = mode
            self.count = count
            self.probability = probability
            self.method = method
            self.pathContains = pathContains
            self.stallSeconds = stallSeconds
        }

        public static let none = Rule(mode: .none, count: nil)
    }

    /// What the proxy has seen.
    public struct Counters: Sendable, Decodable {
        public var requests: Int
        public var forwarded: Int
        public var injected: Int
    }

    public let port: Int
    let process: BackgroundProcess

    public var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    private init(port: Int, process: BackgroundProcess) {
        self.port = port
        self.process = process
    }

    /// Starts a proxy in front of 127.0.0.1:`upstreamPort`.
    public static func start(upstreamPort: Int) async throws -> FaultProxy {
        try await BackgroundProcess.startScript(
            "the fault proxy", name: "faultproxy", source: source, fileName: "faultproxy.py", directoryPrefix: "tsbackup-faultproxy",
            arguments: { port, _ in ["127.0.0.1", String(upstreamPort), String(port)] }
        ) { process, port in FaultProxy(port: port, process: process) }
    }

    public func stop() async {
        await process.stop()
        try? FileManager.default.removeItem(atPath: process.directory)
    }

    /// Replaces the rule (and so resets its count).
    public func set(_ rule: Rule) async throws {
        var object: [String: Any] = ["mode": rule.mode.rawValue, "probability": rule.probability, "stall_seconds": rule.stallSeconds]
        if let count = rule.count { object["remaining"] = count }
        if let method = rule.method { object["method"] = method }
        if let path = rule.pathContains { object["path_contains"] = path }
        let body = try JSONSerialization.data(withJSONObject: object)
        var request = HTTPClientRequest(url: endpoint.absoluteString + "/__fault__/rule")
        request.method = .PUT
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        _ = try await response.body.collect(upTo: 1 << 16)
        guard response.status.code == 200 else { throw SandboxError("the fault proxy refused the rule: \(response.status)") }
    }

    public func counters() async throws -> Counters {
        let request = HTTPClientRequest(url: endpoint.absoluteString + "/__fault__/stats")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        let body = try await response.body.collect(upTo: 1 << 16)
        return try JSONDecoder().decode(Counters.self, from: Data(body.readableBytesView))
    }

    static let source = #"""
# Fault-injecting HTTP/1.1 proxy for tsbackup's S3 tests. Forwards every request to the upstream
# (moto) unchanged, Host header included, so SigV4 signatures still verify, except the requests
# chosen by the fault rule, which get a 500 / 503 SlowDown, a connection reset in the middle of a
# body, or a stall. Rules are set over HTTP on the proxy itself at /__fault__/rule (JSON) and
# counters read at /__fault__/stats; those paths never reach the upstream.
import http.client, json, random, socket, socketserver, struct, sys, threading, time

UPSTREAM_HOST, UPSTREAM_PORT, LISTEN_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
rule = {"mode": "none"}
stats = {"requests": 0, "forwarded": 0, "injected": 0, "by_mode": {}}

def choose(method, path):
    """Returns the fault to inject into this request, or None; counts it."""
    with lock:
        stats["requests"] += 1
        mode = rule.get("mode", "none")
        if mode == "none":
            return None
        if rule.get("method") and rule["method"] != method:
            return None
        if rule.get("path_contains") and rule["path_contains"] not in path:
            return None
        remaining = rule.get("remaining")
        if remaining is not None and remaining <= 0:
            return None
        if random.random() >= float(rule.get("probability", 1.0)):
            return None
        if remaining is not None:
            rule["remaining"] = remaining - 1
        stats["injected"] += 1
        stats["by_mode"][mode] = stats["by_mode"].get(mode, 0) + 1
        return dict(rule)

def reset(sock):
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()

def xml_error(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message>'
            '<RequestId>fault-proxy</RequestId></Error>' % (code, message)).encode()

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb", buffering=1 << 16)
        upstream = None
        try:
            while True:
                line = reader.readline(65537)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                method, target, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers = []
                while True:
                    h = reader.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").rstrip("\r\n").partition(":")
                    headers.append((name.strip(), value.strip()))
                length = 0
                for name, value in headers:
                    if name.lower() == "content-length":
                        length = int(value)
                if target.startswith("/__fault__/"):
                    body = reader.read(length) if length else b""
                    self.control(sock, method, target, body)
                    continue
                fault = choose(method, target)
                mode = fault["mode"] if fault else None
                if mode == "reset" and length > 1:
                    reader.read(length // 2)
                    reset(sock)
                    return
                body = reader.read(length) if length else b""
                if mode in ("500", "503"):
                    status, reason, code = (500, "Internal Server Error", "InternalError") if mode == "500" else (503, "Slow Down", "SlowDown")
                    payload = xml_error(code, "injected by the fault proxy")
                    sock.sendall(("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n" % (status, reason, len(payload))).encode() + payload)
                    continue
                if mode == "stall":
                    time.sleep(float(fault.get("stall_seconds", 30)))
                    reset(sock)
                    return
                if upstream is None:
                    upstream = http.client.HTTPConnection(UPSTREAM_HOST, UPSTREAM_PORT, timeout=300)
                upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    upstream.putheader(name, value)
                upstream.endheaders(body if body else None)
                response = upstream.getresponse()
                data = response.read()
                with lock:
                    stats["forwarded"] += 1
                head = "HTTP/1.1 %d %s\r\n" % (response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() in ("content-length", "transfer-encoding", "connection"):
                        continue
                    head += "%s: %s\r\n" % (name, value)
                if method == "HEAD":
                    cl = response.getheader("Content-Length")
                    head += "Content-Length: %s\r\n\r\n" % (cl if cl is not None else "0")
                    sock.sendall(head.encode("latin-1"))
                    continue
                head += "Content-Length: %d\r\n\r\n" % len(data)
                if mode == "reset":
                    # A request without a body: cut the response in the middle of its body.
                    sock.sendall(head.encode("latin-1") + data[: len(data) // 2])
                    reset(sock)
                    return
                sock.sendall(head.encode("latin-1") + data)
        except (ConnectionError, OSError, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()

    def control(self, sock, method, target, body):
        global rule
        if target.startswith("/__fault__/rule") and method in ("PUT", "POST"):
            new = json.loads(body or b"{}")
            with lock:
                rule = new
            payload = b"{}"
        else:
            with lock:
                payload = json.dumps(stats).encode()
        sock.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)).encode() + payload)

class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

Server(("127.0.0.1", LISTEN_PORT), Handler).serve_forever()
"""#
}

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A tiny HTTP receiver for webhook tests and the demo (a python3 script run as a child process
/// on 127.0.0.1): it records every POST (path, headers, body) and answers with the statuses it
/// was told, in turn, then 200.
public final class WebhookReceiver: Sendable {
    /// One request as received.
    public struct Received: Sendable, Decodable {
        public var path: String
        public var headers: [String: String]
        /// The body as text (the notifier sends JSON).
        public var body: String

        /// The body decoded as a JSON object.
        public var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }
    }

    public let port: Int
    let process: BackgroundProcess

    /// Where to send webhooks: `http://127.0.0.1:PORT/hook`.
    public var url: String { "http://127.0.0.1:\(port)/hook" }

    private init(port: Int, process: BackgroundProcess) {
        self.port = port
        self.process = process
    }

    /// Starts a receiver; the first requests get `statuses` in turn (e.g. [500, 503]), the rest 200.
    public static func start(statuses: [Int] = []) async throws -> WebhookReceiver {
        try await BackgroundProcess.startScript(
            "the webhook receiver", name: "receiver", source: source, fileName: "receiver.py", directoryPrefix: "tsbackup-webhooks",
            arguments: { port, directory in [String(port), directory + "/received.jsonl", statuses.map(String.init).joined(separator: ",")] }
        ) { process, port in WebhookReceiver(port: port, process: process) }
    }

    /// Every request received so far, in order.
    public func received() -> [Received] {
        guard let text = try? String(contentsOfFile: process.directory + "/received.jsonl", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(Received.self, from: Data($0.utf8)) }
    }

    /// Waits (up to `timeout`, a hang guard) until at least `count` requests arrived.
    public func waitFor(_ count: Int, timeout: Duration = .seconds(600)) async -> [Received] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let all = received()
            if all.count >= count { return all }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return received()
    }

    public func stop() async {
        await process.stop()
        try? FileManager.default.removeItem(atPath: process.directory)
    }

    static let source = #"""
# Webhook receiver for tsbackup's tests: records each request as one JSON line and answers with
# the configured statuses in turn, then 200.
import http.server, json, sys, threading

PORT, OUT, STATUSES = int(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3].split(",") if s]
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        with lock:
            with open(OUT, "a") as f:
                f.write(json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}) + "\n")
            status = STATUSES.pop(0) if STATUSES else 200
        reply = b'{"ok": true}' if status < 300 else b'{"ok": false}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""#
}

/// Plain HTTP requests to a local service (the demo and benchmarks talk to `tsbackup serve`).
public enum LocalHTTP {
    /// `method` on `url` with an optional bearer token; the status and the body as text.
    public static func request(_ url: String, method: String = "GET", bearer: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        let body = try await response.body.collect(upTo: 64 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}

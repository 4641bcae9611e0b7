import Foundation
import Logging
import TSBackup

/// A throwaway S3 endpoint: `moto_server` on 127.0.0.1 at a free port, with signature checking on.
///
/// moto checks signatures only once `INITIAL_NO_AUTH_ACTION_COUNT` unauthenticated actions have
/// been used up. We start it with that count at 3 and spend exactly those three actions creating
/// an IAM user, an access key and an inline policy allowing `s3:*` (a short boto3 snippet run as a
/// child process); from then on every request must carry a valid SigV4 signature of that key, so
/// a signing bug fails the tests the way it would fail against AWS. Wrong secrets get 403
/// SignatureDoesNotMatch, unknown keys 403 InvalidAccessKeyId.
public final class MotoServer: Sendable {
    public let port: Int
    public let credentials: S3Credentials
    public let region: String
    let process: BackgroundProcess

    public var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }
    public var directory: String { process.directory }

    private init(port: Int, credentials: S3Credentials, region: String, process: BackgroundProcess) {
        self.port = port
        self.credentials = credentials
        self.region = region
        self.process = process
    }

    /// Starts a server, runs `body`, stops the server whatever happens.
    public static func with<T>(_ body: (MotoServer) async throws -> T) async throws -> T {
        let server = try await start()
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    public static func start(region: String = "us-east-1") async throws -> MotoServer {
        guard findExecutable("moto_server") != nil else {
            throw SandboxError("moto_server is not installed; run scripts/setup.sh (it installs moto[server] with pip)")
        }
        return try await BackgroundProcess.startScript(
            "moto_server", name: "moto", source: rawURILauncher, fileName: "moto_server_raw_uri.py", directoryPrefix: "tsbackup-moto",
            environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "true"],
            arguments: { port, _ in ["-H", "127.0.0.1", "-p", String(port)] }
        ) { process, port in
            let credentials = try await bootstrapAuthentication(port: port, directory: process.directory)
            return MotoServer(port: port, credentials: credentials, region: region, process: process)
        }
    }

    /// Runs moto's own server (what `moto_server` runs) with one correction to its signature check.
    ///
    /// moto recomputes a request's signature over the URL as Werkzeug rebuilds it, with the query
    /// percent-decoded and some path characters (`+ & = ...`) decoded: a correctly signed
    /// `?prefix=dir%2F` or key `a%2Bb` then fails with SignatureDoesNotMatch (boto3 and the aws CLI
    /// fail the same way). AWS verifies against the request target as sent; so does this launcher,
    /// by handing moto's check the raw request URI (Werkzeug's `RAW_URI`). Everything else,
    /// including the check itself (botocore's S3 SigV4 over the signed headers), is moto's.
    static let rawURILauncher = #"""
        import sys
        from moto.core import authorization as _authorization

        _original = _authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action

        def _check_raw_uri(self, iam_request_cls, resource="*"):
            environ = getattr(getattr(self, "request", None), "environ", None) or {}
            raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
            if not raw:
                return _original(self, iam_request_cls, resource)
            rebuilt = self.uri
            self.uri = "http://signed.invalid" + raw
            try:
                return _original(self, iam_request_cls, resource)
            finally:
                self.uri = rebuilt

        _authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _check_raw_uri

        from moto.server import main
        main(sys.argv[1:])
        """#

    /// Spends the three unauthenticated actions on the IAM user, policy and key.
    private static func bootstrapAuthentication(port: Int, directory: String) async throws -> S3Credentials {
        let script = """
            import boto3, json, sys
            iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                               aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
            iam.create_user(UserName="tsbackup-test")
            iam.put_user_policy(UserName="tsbackup-test", PolicyName="s3-all", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
            key = iam.create_access_key(UserName="tsbackup-test")["AccessKey"]
            print(key["AccessKeyId"])
            print(key["SecretAccessKey"])
            """
        let result = try await ProcessRunner.run("python3", ["-c", script, "http://127.0.0.1:\(port)"],
                                                 environment: ["AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"])
        let lines = result.standardOutput.split(separator: "\n").map(String.init)
        guard result.succeeded, lines.count >= 2 else {
            throw SandboxError("could not create moto's IAM user and key (python3 with boto3 is needed): \(result.standardError.suffix(1500))")
        }
        return S3Credentials(accessKeyId: lines[0], secretAccessKey: lines[1])
    }

    public func stop() async {
        await process.stop()
        try? FileManager.default.removeItem(atPath: process.directory)
    }

    public func log() -> String { process.log() }

    /// Settings for this server: its key, path-style addressing; `endpoint` overrides the URL
    /// (e.g. to go through a ``FaultProxy``), `secret` the secret (to test a wrong one).
    public func settings(endpoint: URL? = nil, secret: String? = nil) -> S3Settings {
        var credentials = self.credentials
        if let secret { credentials.secretAccessKey = secret }
        return S3Settings(credentials: credentials, region: region, endpoint: endpoint ?? self.endpoint,
                          credentialSource: "moto sandbox")
    }

    /// The environment a child process (tsbackup, aws cli) needs to use this server.
    public func environment(endpoint: URL? = nil) -> [String: String] {
        [
            "AWS_ACCESS_KEY_ID": credentials.accessKeyId,
            "AWS_SECRET_ACCESS_KEY": credentials.secretAccessKey,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL_S3": (endpoint ?? self.endpoint).absoluteString,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        ]
    }

    /// A client for `bucket` on this server; the bucket is created first when `create` is true.
    public func client(bucket: String, create: Bool = true, endpoint: URL? = nil, secret: String? = nil,
                       options: S3Client.Options = S3Client.Options()) async throws -> S3Client {
        if create {
            let admin = S3Client(settings: settings(), bucket: bucket)
            do {
                try await admin.createBucket()
                try await admin.shutdown()
            } catch {
                try? await admin.shutdown()
                throw error
            }
        }
        return S3Client(settings: settings(endpoint: endpoint, secret: secret), bucket: bucket, options: options)
    }
}

/// The first executable named `name` on PATH.
func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

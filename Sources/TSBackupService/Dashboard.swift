import Foundation
import Mustache
import TSBackup

/// What the dashboard shows, gathered by the service for one page view.
public struct DashboardModel: Sendable {
    public struct Database: Sendable {
        public var name: String
        public var lastGood: Date?
        public var lastGoodID: String?
        public var lastGoodBytes: Int64?
        public var schedule: String?
        public var scheduleInterval: TimeInterval?
        public var nextRun: Date?
        public var paused: Bool
        public var retention: String?
        public var rehearsalSchedule: String?
        public var backups: Int
        public var bytes: Int64

        public init(name: String, lastGood: Date? = nil, lastGoodID: String? = nil, lastGoodBytes: Int64? = nil, schedule: String? = nil,
                    scheduleInterval: TimeInterval? = nil, nextRun: Date? = nil, paused: Bool = false, retention: String? = nil,
                    rehearsalSchedule: String? = nil, backups: Int = 0, bytes: Int64 = 0) {
            self.name = name
            self.lastGood = lastGood
            self.lastGoodID = lastGoodID
            self.lastGoodBytes = lastGoodBytes
            self.schedule = schedule
            self.scheduleInterval = scheduleInterval
            self.nextRun = nextRun
            self.paused = paused
            self.retention = retention
            self.rehearsalSchedule = rehearsalSchedule
            self.backups = backups
            self.bytes = bytes
        }
    }

    public struct Job: Sendable {
        public var id: String
        public var kind: String
        public var database: String
        public var state: String
        public var createdAt: Date
        public var finishedAt: Date?
        public var requestedBy: String
        public var detail: String?

        public init(id: String, kind: String, database: String, state: String, createdAt: Date, finishedAt: Date? = nil,
                    requestedBy: String, detail: String? = nil) {
            self.id = id
            self.kind = kind
            self.database = database
            self.state = state
            self.createdAt = createdAt
            self.finishedAt = finishedAt
            self.requestedBy = requestedBy
            self.detail = detail
        }
    }

    public struct RestoreRequest: Sendable {
        public var id: String
        public var database: String
        public var backupID: String
        public var requestedBy: String
        public var createdAt: Date
        public var into: String?

        public init(id: String, database: String, backupID: String, requestedBy: String, createdAt: Date, into: String? = nil) {
            self.id = id
            self.database = database
            self.backupID = backupID
            self.requestedBy = requestedBy
            self.createdAt = createdAt
            self.into = into
        }
    }

    public var now: Date
    public var repository: String
    public var repositoryBytes: Int64
    public var repositoryEntries: Int
    public var signedInAs: String
    public var role: String
    public var databases: [Database]
    public var rehearsals: [Rehearsal.Result]
    public var jobs: [Job]
    public var restoreRequests: [RestoreRequest]

    public init(now: Date, repository: String, repositoryBytes: Int64, repositoryEntries: Int, signedInAs: String, role: String,
                databases: [Database], rehearsals: [Rehearsal.Result], jobs: [Job], restoreRequests: [RestoreRequest]) {
        self.now = now
        self.repository = repository
        self.repositoryBytes = repositoryBytes
        self.repositoryEntries = repositoryEntries
        self.signedInAs = signedInAs
        self.role = role
        self.databases = databases
        self.rehearsals = rehearsals
        self.jobs = jobs
        self.restoreRequests = restoreRequests
    }
}

/// Server-rendered HTML pages of the dashboard (swift-mustache; no JavaScript). Every value goes
/// through `{{...}}`, which HTML-escapes it (quotes included), so names from the config or the
/// repository cannot inject markup.
public struct DashboardRenderer: Sendable {
    let library: MustacheLibrary

    public init() throws {
        var library = MustacheLibrary()
        try library.register(Self.layout, named: "layout")
        try library.register(Self.dashboard, named: "dashboard")
        try library.register(Self.signIn, named: "signin")
        self.library = library
    }

    /// The sign-in form; `message` explains a failed attempt.
    public func signInPage(message: String?) -> String {
        library.render(["title": "Sign in", "message": message as Any, "hasMessage": message != nil], withTemplate: "signin") ?? ""
    }

    public func page(_ model: DashboardModel) -> String {
        library.render(Self.context(model), withTemplate: "dashboard") ?? ""
    }

    /// The template's view of the model: plain strings and flags only.
    static func context(_ model: DashboardModel) -> [String: Any] {
        let time = ISO8601DateFormatter()
        time.formatOptions = [.withInternetDateTime]
        let rehearsalsByDatabase = Dictionary(grouping: model.rehearsals, by: \.database)
        let databases: [[String: Any]] = model.databases.map { db in
            let freshness = BackupFreshness.classify(lastGood: db.lastGood, now: model.now, interval: db.scheduleInterval)
            let lastRehearsal = rehearsalsByDatabase[db.name]?.max { $0.startedAt < $1.startedAt }
            return [
                "name": db.name,
                "status": freshness.rawValue,
                "statusText": freshness.label,
                "age": db.lastGood.map { BackupFreshness.formatAge(model.now.timeIntervalSince($0)) } ?? "never",
                "lastGood": db.lastGood.map { time.string(from: $0) } ?? "no complete backup",
                "lastGoodID": db.lastGoodID ?? "",
                "lastGoodSize": db.lastGoodBytes.map(ByteCount.format) ?? "",
                "schedule": db.schedule ?? "none",
                "paused": db.paused,
                "nextRun": db.nextRun.map { time.string(from: $0) } ?? "",
                "retention": db.retention ?? "keep everything",
                "rehearsalSchedule": db.rehearsalSchedule ?? "none",
                "rehearsal": lastRehearsal.map { $0.ok ? "PASSED" : "FAILED" } ?? "never run",
                "rehearsalClass": lastRehearsal.map { $0.ok ? "green" : "red" } ?? "none",
                "backups": db.backups,
                "usage": ByteCount.format(db.bytes),
            ]
        }
        let rehearsals: [[String: Any]] = model.rehearsals.sorted { $0.startedAt > $1.startedAt }.prefix(20).map { r in
            [
                "database": r.database,
                "result": r.ok ? "PASSED" : "FAILED",
                "class": r.ok ? "green" : "red",
                "backup": r.backupID ?? "-",
                "server": r.server,
                "at": time.string(from: r.startedAt),
                "duration": String(format: "%.1f s", r.durationSeconds),
                "checks": r.checksSummary,
                "error": r.error ?? "",
                "hasError": r.error != nil,
            ]
        }
        let jobs: [[String: Any]] = model.jobs.prefix(30).map { j in
            [
                "id": j.id, "kind": j.kind, "database": j.database, "state": j.state,
                "class": ["failed": "red", "interrupted": "red", "succeeded": "green", "running": "amber", "queued": "none"][j.state] ?? "none",
                "created": time.string(from: j.createdAt), "finished": j.finishedAt.map { time.string(from: $0) } ?? "",
                "by": j.requestedBy, "detail": j.detail ?? "",
            ]
        }
        let requests: [[String: Any]] = model.restoreRequests.map { r in
            ["id": r.id, "database": r.database, "backup": r.backupID, "by": r.requestedBy, "created": time.string(from: r.createdAt), "into": r.into ?? ""]
        }
        return [
            "title": "tsbackup",
            "now": time.string(from: model.now),
            "repository": model.repository,
            "repositoryUsage": ByteCount.format(model.repositoryBytes),
            "repositoryEntries": model.repositoryEntries,
            "user": model.signedInAs,
            "role": model.role,
            "databases": databases,
            "hasDatabases": !databases.isEmpty,
            "rehearsals": rehearsals,
            "hasRehearsals": !rehearsals.isEmpty,
            "jobs": jobs,
            "hasJobs": !jobs.isEmpty,
            "requests": requests,
            "hasRequests": !requests.isEmpty,
        ]
    }

    static let layout = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="refresh" content="30">
        <title>{{title}}</title>
        <style>
        body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
        h1{font-size:1.4rem;margin:0 0 .25rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
        table{border-collapse:collapse;width:100%;background:#fff} th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left;font-size:.9rem;vertical-align:top}
        th{background:#eef1f5} .meta{color:#5b6472;font-size:.85rem}
        .badge{display:inline-block;padding:.1rem .5rem;border-radius:.7rem;font-weight:600;font-size:.8rem}
        .green{background:#d3f4dc;color:#135e2a} .amber{background:#fde9c4;color:#7a4a00} .red{background:#fbd5d5;color:#8a1414} .none{background:#e9ecf0;color:#3e4652}
        form.inline{display:inline} .error{color:#8a1414}
        </style></head><body>
        {{$body}}{{/body}}
        </body></html>
        """

    static let signIn = """
        {{<layout}}{{$body}}
        <h1>tsbackup</h1>
        <h2>Sign in</h2>
        {{#hasMessage}}<p class="error" id="message">{{message}}</p>{{/hasMessage}}
        <form method="post" action="/dashboard/signin">
        <label for="token">API token</label>
        <input type="password" id="token" name="token" autocomplete="current-password" required>
        <button type="submit">Sign in</button>
        </form>
        <p class="meta">The token is checked like an API token and kept in an HttpOnly cookie for this browser session.</p>
        {{/body}}{{/layout}}
        """

    static let dashboard = """
        {{<layout}}{{$body}}
        <h1>tsbackup</h1>
        <p class="meta">Signed in as <b id="user">{{user}}</b> ({{role}}) &middot; {{now}} &middot;
        repository <span id="repository">{{repository}}</span>: <span id="repository-usage">{{repositoryUsage}}</span> in {{repositoryEntries}} entries
        <form class="inline" method="post" action="/dashboard/signout"><button type="submit">Sign out</button></form></p>

        <h2>Databases</h2>
        {{^hasDatabases}}<p>No databases are configured.</p>{{/hasDatabases}}
        {{#hasDatabases}}
        <table id="databases"><thead><tr><th>Database</th><th>Last good backup</th><th>Age</th><th>Backup status</th><th>Schedule</th><th>Next run</th><th>Retention</th><th>Last rehearsal</th><th>Backups</th><th>Usage</th></tr></thead><tbody>
        {{#databases}}
        <tr class="database" data-database="{{name}}" data-status="{{status}}">
        <td class="name">{{name}}</td><td>{{lastGood}}<br><span class="meta">{{lastGoodID}} {{lastGoodSize}}</span></td><td class="age">{{age}}</td>
        <td><span class="badge {{status}} status">{{statusText}}</span></td>
        <td>{{schedule}}{{#paused}} <span class="badge amber">PAUSED</span>{{/paused}}</td><td>{{nextRun}}</td><td>{{retention}}</td>
        <td><span class="badge {{rehearsalClass}} rehearsal">{{rehearsal}}</span><br><span class="meta">{{rehearsalSchedule}}</span></td>
        <td>{{backups}}</td><td>{{usage}}</td></tr>
        {{/databases}}
        </tbody></table>
        {{/hasDatabases}}

        <h2>Restore requests awaiting approval</h2>
        {{^hasRequests}}<p id="no-requests">None.</p>{{/hasRequests}}
        {{#hasRequests}}
        <table id="restore-requests"><thead><tr><th>Request</th><th>Database</th><th>Backup</th><th>Into</th><th>Requested by</th><th>At</th></tr></thead><tbody>
        {{#requests}}<tr class="restore-request"><td>{{id}}</td><td>{{database}}</td><td>{{backup}}</td><td>{{into}}</td><td>{{by}}</td><td>{{created}}</td></tr>{{/requests}}
        </tbody></table>
        {{/hasRequests}}

        <h2>Restore rehearsals</h2>
        {{^hasRehearsals}}<p>No rehearsal has run yet.</p>{{/hasRehearsals}}
        {{#hasRehearsals}}
        <table id="rehearsals"><thead><tr><th>Database</th><th>Result</th><th>Backup</th><th>Server</th><th>At</th><th>Duration</th><th>Checks</th></tr></thead><tbody>
        {{#rehearsals}}<tr class="rehearsal" data-database="{{database}}"><td>{{database}}</td><td><span class="badge {{class}}">{{result}}</span></td><td>{{backup}}</td><td>{{server}}</td><td>{{at}}</td><td>{{duration}}</td><td>{{checks}}{{#hasError}}<br><span class="error">{{error}}</span>{{/hasError}}</td></tr>{{/rehearsals}}
        </tbody></table>
        {{/hasRehearsals}}

        <h2>Recent jobs</h2>
        {{^hasJobs}}<p>No jobs yet.</p>{{/hasJobs}}
        {{#hasJobs}}
        <table id="jobs"><thead><tr><th>Job</th><th>Kind</th><th>Database</th><th>State</th><th>Created</th><th>Finished</th><th>By</th><th>Detail</th></tr></thead><tbody>
        {{#jobs}}<tr class="job"><td>{{id}}</td><td>{{kind}}</td><td>{{database}}</td><td><span class="badge {{class}}">{{state}}</span></td><td>{{created}}</td><td>{{finished}}</td><td>{{by}}</td><td>{{detail}}</td></tr>{{/jobs}}
        </tbody></table>
        {{/hasJobs}}
        {{/body}}{{/layout}}
        """
}

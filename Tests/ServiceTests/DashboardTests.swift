import Foundation
import Testing
import TSBackup
@testable import TSBackupService

@Suite("dashboard rendering: freshness colours, words, and HTML escaping")
struct DashboardTests {
    @Test func rendersStatusAndEscapesEverything() throws {
        let now = Date(timeIntervalSince1970: 2_000_000_000)
        let renderer = try DashboardRenderer()
        let model = DashboardModel(
            now: now, repository: "/var/<repo>", repositoryBytes: 2048, repositoryEntries: 3, signedInAs: "o'brien", role: "operator",
            databases: [
                .init(name: "fresh", lastGood: now.addingTimeInterval(-1800), lastGoodID: "20330518T025320Z", schedule: "0 * * * * (UTC)",
                      scheduleInterval: 3600, backups: 2, bytes: 1024),
                .init(name: "late", lastGood: now.addingTimeInterval(-3 * 3600), schedule: "0 * * * * (UTC)", scheduleInterval: 3600),
                .init(name: "never"),
            ],
            rehearsals: [Rehearsal.Result(database: "fresh", backupID: "x", scratchDatabase: "s", server: "postgres@h:5432/postgres", ok: false,
                                          startedAt: now, durationSeconds: 3, error: "<script>alert(1)</script>", scratchDropped: true, report: nil)],
            jobs: [.init(id: "7", kind: "backup", database: "fresh", state: "failed", createdAt: now, requestedBy: "scheduler", detail: "a \"quoted\" & <odd> error")],
            restoreRequests: [.init(id: "3", database: "fresh", backupID: "20330518T025320Z", requestedBy: "alice", createdAt: now, into: "fresh_copy")])
        let html = renderer.page(model)
        #expect(html.contains(#"data-database="fresh" data-status="green""#))
        #expect(html.contains(#"data-database="late" data-status="amber""#))
        #expect(html.contains(#"data-database="never" data-status="red""#))
        #expect(html.contains(">OK<") && html.contains(">LATE<") && html.contains(">STALE<"))
        #expect(html.contains("FAILED"))
        #expect(html.contains("fresh_copy"), "a restore request awaiting approval is listed")
        // Everything from outside is escaped: no markup, no breaking out of attributes.
        #expect(!html.contains("<script>"))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(html.contains("/var/&lt;repo&gt;"))
        #expect(html.contains("o&#39;brien"))
        #expect(html.contains("a &quot;quoted&quot; &amp; &lt;odd&gt; error"))
        #expect(!html.lowercased().contains("<script"))
    }

    @Test func signInPage() throws {
        let renderer = try DashboardRenderer()
        let form = renderer.signInPage(message: nil)
        #expect(form.contains(#"<form method="post" action="/dashboard/signin">"#))
        #expect(form.contains(#"type="password""#))
        #expect(!form.contains("id=\"message\""))
        #expect(renderer.signInPage(message: "That token is not valid.").contains("id=\"message\""))
    }

    @Test func formValues() {
        #expect(ServiceOperations.formValue("a=1&token=ab%2Bc+d", "token") == "ab+c d")
        #expect(ServiceOperations.formValue("token=", "token") == "")
        #expect(ServiceOperations.formValue("x=1", "token") == nil)
    }
}

@Suite("config: schedules are checked by the cron parser, with the line")
struct ScheduleConfigTests {
    @Test func badCronNamesTheLine() throws {
        let yaml = """
            repository: {url: /tmp/x}
            state_file: /tmp/x.sqlite
            databases:
              metrics:
                dbname: m
                schedule:
                  cron: "61 * * * *"
            """
        do {
            _ = try ServiceConfig.parse(yaml, path: "serve.yaml", environment: [:])
            Issue.record("accepted")
        } catch let error as ConfigError {
            #expect(error.line == 7)
            #expect(error.message.contains("out of range in the minute field"))
        }
        // Macros and six fields are accepted.
        for cron in ["@daily", "@every 30s", "*/5 * * * * *"] {
            let ok = yaml.replacingOccurrences(of: "61 * * * *", with: cron)
            #expect(try ServiceConfig.parse(ok, path: "serve.yaml", environment: [:]).databases["metrics"]?.schedule?.cron == cron)
        }
    }
}

import Foundation
import Testing
@testable import TSBackup

@Suite("alerts: failure and recovery transitions per database and check")
struct AlertStateTests {
    let t0 = Date(timeIntervalSince1970: 1_000)

    @Test func transitionsNotEveryFailure() {
        var state = AlertState()
        // Success from the unknown state: nothing to say.
        #expect(state.record(database: "a", check: .backup, ok: true, at: t0) == nil)
        let first = state.record(database: "a", check: .backup, ok: false, at: t0.addingTimeInterval(10))
        #expect(first?.0 == .failure)
        #expect(first?.since == t0.addingTimeInterval(10))
        // A second failure in the same streak raises nothing.
        #expect(state.record(database: "a", check: .backup, ok: false, at: t0.addingTimeInterval(20)) == nil)
        #expect(state.isFailing(database: "a", check: .backup))
        // Another database and another check are separate.
        #expect(state.record(database: "b", check: .backup, ok: false, at: t0.addingTimeInterval(25))?.0 == .failure)
        #expect(state.record(database: "a", check: .rehearsal, ok: false, at: t0.addingTimeInterval(26))?.0 == .failure)
        // Recovery reports when the streak began.
        let recovery = state.record(database: "a", check: .backup, ok: true, at: t0.addingTimeInterval(30))
        #expect(recovery?.0 == .recovery)
        #expect(recovery?.since == t0.addingTimeInterval(10))
        #expect(state.record(database: "a", check: .backup, ok: true, at: t0.addingTimeInterval(40)) == nil)
        #expect(!state.isFailing(database: "a", check: .backup))
        #expect(state.isFailing(database: "a", check: .rehearsal))
    }

    @Test func startsFromPersistedState() {
        var state = AlertState(failing: [.init(database: "a", check: .backup): t0])
        #expect(state.record(database: "a", check: .backup, ok: false, at: t0.addingTimeInterval(5)) == nil)
        #expect(state.record(database: "a", check: .backup, ok: true, at: t0.addingTimeInterval(6))?.since == t0)
    }

    @Test func webhookURLsAreShownWithoutSecrets() {
        let target = WebhookTarget(url: "https://user:pw@hooks.example/notify?token=abc")
        #expect(target.displayURL == "https://hooks.example/notify")
        #expect(WebhookTarget(url: "x", attempts: 0).attempts == 1)
    }

    @Test func eventBodyIsStableJSON() throws {
        let event = WebhookEvent(event: .recovery, database: "m", check: .rehearsal, since: t0, at: t0.addingTimeInterval(60), message: "ok again")
        let text = String(decoding: event.encoded(), as: UTF8.self)
        #expect(text == #"{"at":"1970-01-01T00:17:40Z","check":"rehearsal","database":"m","event":"recovery","message":"ok again","service":"tsbackup","since":"1970-01-01T00:16:40Z"}"#)
    }
}

import LockstepPlan
import Foundation
import LockstepCore
import LockstepWebhooks
import Testing

/// What a receiver gets: the bodies and the signature (docs/webhooks.md).
@Suite struct WebhookPayloadTests {
    static let note = Notice(kind: .approvalNeeded, sequence: 79, at: Instant(millisecondsSinceEpoch: 1_700_001_010_000), migration: "m1", plan: "ledger-split",
                             planVersion: 2, node: "switch", summary: "m1: switch awaits approval (0 of 1)", evidence: "", actor: "user:bob",
                             command: "lockstep migration approve m1 switch", consolePath: "/ui#/migration/m1")

    @Test func theSignatureIsHMACSHA256OfTheTimestampAndTheBody() {
        // The same as Python's hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest().
        let signature = WebhookPayload.signature(secret: Array("0123456789abcdef0123456789abcdef".utf8), timestamp: 1_700_000_000, body: Array(#"{"a":1}"#.utf8))
        #expect(signature == "sha256=f05f2539e3ae1c49aec5f8cfdad75ef6b06480b133973ffbb7ec9e18827af177")
    }

    @Test func lockstepsBodyCarriesWhatAPersonNeedsToAct() throws {
        let body = WebhookPayload.body(Self.note, webhook: "oncall", format: .lockstep, consoleURL: "https://lockstep.example.com")
        #expect(String(decoding: body, as: UTF8.self) == #"""
            {"actor":"user:bob","at":"2023-11-14T22:30:10.000Z","at_ms":1700001010000,"evidence":"","id":"79-approval_needed-switch","kind":"approval_needed","links":{"command":"lockstep migration approve m1 switch","console":"https://lockstep.example.com/ui#/migration/m1"},"migration":"m1","node":"switch","plan":"ledger-split","plan_version":2,"sequence":79,"summary":"m1: switch awaits approval (0 of 1)","webhook":"oncall"}
            """#)
    }

    /// `note`'s Slack body, parsed.
    static func slack(_ note: Notice) throws -> [String: Any] {
        let body = WebhookPayload.body(note, webhook: "chat", format: .slack, consoleURL: "https://l.example")
        return try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
    }

    @Test func slacksBodyHasTextBlocksAndAButton() throws {
        var note = Self.note
        note.evidence = "error_rate <0.05> & rising"
        let object = try Self.slack(note)
        #expect(object["text"] as? String == "Approval needed: m1: switch awaits approval (0 of 1)")
        let blocks = try #require(object["blocks"] as? [[String: Any]])
        #expect(blocks.map { $0["type"] as? String } == ["section", "section", "context", "actions"])
        let evidence = (blocks[1]["text"] as? [String: Any])?["text"] as? String
        #expect(evidence == "```error_rate &lt;0.05&gt; &amp; rising```")
        let button = ((blocks[3]["elements"] as? [[String: Any]])?.first)
        #expect(button?["url"] as? String == "https://l.example/ui#/migration/m1")
    }

    /// A summary carries reasons people and agents wrote: in Slack's fallback text too, `<!channel>` and
    /// `<url|label>` arrive as text, not as a mention or a link.
    @Test func slacksTextEscapesWhatPeopleWrote() throws {
        var note = Self.note
        note.summary = "m1 paused: <!channel> see <https://evil.example|the runbook> & more"
        let object = try Self.slack(note)
        #expect(object["text"] as? String == "Approval needed: m1 paused: &lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; more")
    }

    @Test func longEvidenceIsCut() {
        var note = Self.note
        note.evidence = String(repeating: "x", count: 10_000)
        let body = String(decoding: WebhookPayload.body(note, webhook: "a", format: .lockstep, consoleURL: ""), as: UTF8.self)
        #expect(body.count < 3_000 && body.contains("x…\""))
    }
}

import LockstepPlan
import Foundation
import LockstepCore
import LockstepWebhooks
import Testing

/// The webhooks file (docs/webhooks.md): every field checked, every mistake named.
@Suite struct WebhookConfigTests {
    static let secret = Array("0123456789abcdef0123456789abcdef".utf8)

    static func parse(_ yaml: String, secret: [UInt8] = WebhookConfigTests.secret) throws(WebhookConfigError) -> WebhookConfig {
        try WebhookConfig.parse(yaml) { _ throws(WebhookConfigError) in secret + [0x0A] }
    }

    @Test func aFullFileReadsAsWritten() throws {
        let config = try Self.parse("""
            console_url: https://lockstep.example.com/
            webhooks:
              - name: oncall
                url: https://hooks.example.com/lockstep
                secret_file: /etc/lockstep/oncall.secret
                events: [approval_needed, migration_failed]
                format: slack
                timeout: 2s
                backoff: 500ms
                max_backoff: 1m
                queue_max: 10
              - name: audit
                url: http://10.0.0.5:8080/in
                secret_file: audit.secret
            """)
        #expect(config.consoleURL == "https://lockstep.example.com")
        #expect(config.webhooks.map(\.name) == ["oncall", "audit"])
        let oncall = config.webhooks[0]
        #expect(oncall.events == [.approvalNeeded, .migrationFailed] && oncall.format == .slack)
        #expect(oncall.timeoutMillis == 2_000 && oncall.backoffMillis == 500 && oncall.backoffMaxMillis == 60_000 && oncall.queueMax == 10)
        #expect(oncall.secret == Self.secret, "the trailing newline is dropped")
        let audit = config.webhooks[1]
        #expect(audit.events == Set(NotificationKind.allCases) && audit.format == .lockstep && audit.timeoutMillis == 5_000 && audit.backoffMaxMillis == 300_000)
    }

    @Test(arguments: [
        ("webhooks: {}", "webhooks must be a list"),
        ("webhooks: []", "webhooks must be a list of at least one webhook"),
        ("hooks: []", "unknown field hooks"),
        ("webhooks:\n  - name: Bad Name\n    url: http://x/\n    secret_file: s", "a webhook needs a name"),
        ("webhooks:\n  - name: a\n    url: ftp://x/\n    secret_file: s", "webhook a: url must be an http:// or https:// URL"),
        ("webhooks:\n  - name: a\n    url: http://user:pw@x/\n    secret_file: s", "webhook a: url must not carry credentials"),
        ("webhooks:\n  - name: a\n    url: http://x/", "webhook a: secret_file is required"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    events: [approval_wanted]", "webhook a: unknown event approval_wanted"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    events: []", "webhook a: events must be a non-empty list"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    format: teams", "webhook a: format must be lockstep or slack"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    timeout: 10m", "webhook a: timeout must be a duration"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    attempts: 3", "unknown field attempts"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    queue_max: 99999999999999999999", "webhook a: queue_max must be a whole number"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    backoff: 10s\n    max_backoff: 1s", "webhook a: max_backoff must be at least backoff"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    queue_max: 0", "webhook a: queue_max must be a whole number from 1 to 10000"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n  - name: a\n    url: http://y/\n    secret_file: s", "webhook a is declared twice"),
        ("webhooks:\n  - &x { name: a }\n  - *x", "anchors and aliases are not allowed"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    colour: red", "unknown field colour"),
        // Written again with a tag, a key is not the parser's duplicate: the reader finds it.
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    timeout: 5s\n    !x timeout: 999h", "timeout is given twice"),
        ("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s\n    ? [timeout]\n    : 5s", "keys must be strings"),
        ("[1, 2", "not YAML"),
    ])
    func aMistakeIsNamed(_ yaml: String, _ expected: String) {
        #expect {
            _ = try Self.parse(yaml)
        } throws: { error in
            (error as? WebhookConfigError)?.description.contains(expected) == true
        }
    }

    @Test func aShortOrHugeSecretIsRefused() {
        #expect(throws: WebhookConfigError.self) { _ = try Self.parse("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s", secret: Array("short".utf8)) }
        #expect(throws: WebhookConfigError.self) {
            _ = try Self.parse("webhooks:\n  - name: a\n    url: http://x/\n    secret_file: s", secret: Array(repeating: 0x61, count: 2_000))
        }
    }

    @Test func tooManyWebhooksAreRefused() {
        let many = (0...WebhookConfig.webhooksMax).map { "  - { name: w\($0), url: 'http://x/', secret_file: s }" }.joined(separator: "\n")
        #expect(throws: WebhookConfigError.self) { _ = try Self.parse("webhooks:\n" + many) }
    }

    @Test func backOffDoublesUpToItsMostAndNeverOverflows() {
        let webhook = WebhookConfig.Webhook(name: "a", url: URL(string: "http://x/")!, secret: Self.secret, backoffMillis: 100, backoffMaxMillis: 1_000)
        #expect((2...7).map { webhook.backoff(before: $0) } == [100, 200, 400, 800, 1_000, 1_000])
        let huge = WebhookConfig.Webhook(name: "a", url: URL(string: "http://x/")!, secret: Self.secret, backoffMillis: .max / 2, backoffMaxMillis: .max)
        #expect(huge.backoff(before: 20) == .max)
    }
}

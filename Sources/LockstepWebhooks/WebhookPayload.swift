import LockstepPlan
import Crypto
import Foundation
import LockstepCore
import LockstepStore

/// The bytes a webhook is sent for a notification, and their signature (docs/webhooks.md).
public enum WebhookPayload {
    /// Evidence longer than this many characters is cut (with "…"), so a payload stays small.
    public static let evidenceCharactersMax = 2_000

    /// The body in `format`: Lockstep's JSON object, or a Slack message. Keys are sorted.
    public static func body(_ note: Notice, webhook: String, format: WebhookConfig.PayloadFormat, consoleURL: String) -> [UInt8] {
        let console = consoleURL + note.consolePath
        let evidence = note.evidence.count > evidenceCharactersMax ? String(note.evidence.prefix(evidenceCharactersMax)) + "…" : note.evidence
        let object: [String: Any]
        switch format {
        case .lockstep:
            object = [
                "id": note.id, "kind": note.kind.rawValue, "webhook": webhook, "sequence": note.sequence,
                "at": note.at.description, "at_ms": note.at.millisecondsSinceEpoch,
                "migration": note.migration, "plan": note.plan, "plan_version": note.planVersion, "node": note.node,
                "summary": note.summary, "evidence": evidence, "actor": note.actor,
                "links": ["console": console, "command": note.command],
            ]
        case .slack:
            var blocks: [[String: Any]] = [
                ["type": "section", "text": ["type": "mrkdwn", "text": "*\(slackEscaped(title(note.kind)))*\n\(slackEscaped(note.summary))"]],
            ]
            if !evidence.isEmpty {
                blocks.append(["type": "section", "text": ["type": "mrkdwn", "text": "```\(slackEscaped(evidence))```"]])
            }
            var context = ["by \(slackEscaped(note.actor))", "event #\(note.sequence) at \(note.at)"]
            if !note.command.isEmpty { context.insert("`\(slackEscaped(note.command))`", at: 0) }
            blocks.append(["type": "context", "elements": context.map { ["type": "mrkdwn", "text": $0] }])
            blocks.append(["type": "actions", "elements": [
                ["type": "button", "text": ["type": "plain_text", "text": "Open in Lockstep"], "url": console],
            ]])
            object = ["text": "\(title(note.kind)): \(slackEscaped(note.summary))", "blocks": blocks]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return [UInt8](data)
    }

    static func title(_ kind: NotificationKind) -> String {
        switch kind {
        case .approvalNeeded: "Approval needed"
        case .migrationPaused: "Migration paused"
        case .rollbackStarted: "Rolling back"
        case .migrationRolledBack: "Migration rolled back"
        case .migrationFailed: "Migration failed"
        case .migrationSucceeded: "Migration succeeded"
        case .checkFailed: "Check failed"
        case .analysisFailed: "Analysis failed"
        case .freezeStarted: "Freeze"
        }
    }

    /// Slack's mrkdwn control characters.
    static func slackEscaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// `Lockstep-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the webhook's secret, of the
    /// timestamp (Unix seconds, as sent in `Lockstep-Timestamp`), a period, and the body.
    public static func signature(secret: [UInt8], timestamp: Int64, body: [UInt8]) -> String {
        var message = Array("\(timestamp).".utf8)
        message.append(contentsOf: body)
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: secret))
        return "sha256=" + Array(code).hexString
    }
}

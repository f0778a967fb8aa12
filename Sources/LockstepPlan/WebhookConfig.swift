import Foundation
import Yams

/// What a webhook may be told about (its `events:`), by stable name.
public enum NotificationKind: String, Sendable, CaseIterable, Comparable {
    /// A node reached its approval gate: it waits for people.
    case approvalNeeded = "approval_needed"
    /// A migration paused: by a person, an analysis, a failure under `on_failure: pause`, or a stop of the line.
    case migrationPaused = "migration_paused"
    /// A migration aborted and began rolling back (with what set it off).
    case rollbackStarted = "rollback_started"
    case migrationRolledBack = "migration_rolled_back"
    /// It failed: a rollback step failed, or an irreversible node stops the rollback.
    case migrationFailed = "migration_failed"
    case migrationSucceeded = "migration_succeeded"
    /// A preflight check failed (the node is blocked, or the migration rolls back).
    case checkFailed = "check_failed"
    /// An analysis judged a bake `fail`.
    case analysisFailed = "analysis_failed"
    /// A freeze (or a stop of the line) was declared.
    case freezeStarted = "freeze_started"

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What `lockstep serve --webhooks FILE` reads (docs/webhooks.md): where notifications go, which, in
/// what form, signed with what, and the limits of their delivery. Every field is checked at start; a
/// bad file stops the server with a message naming the webhook and the field.
public struct WebhookConfig: Sendable, Equatable {
    /// The base of the console links in payloads ("" = the server's own JSON URL).
    public var consoleURL: String
    public var webhooks: [Webhook]

    public init(consoleURL: String = "", webhooks: [Webhook]) {
        self.consoleURL = consoleURL
        self.webhooks = webhooks
    }

    /// The most webhooks one server delivers to.
    public static let webhooksMax = 32
    /// The most bytes of a config file.
    public static let fileBytesMax = 256 * 1024

    public struct Webhook: Sendable, Equatable {
        public var name: String
        public var url: URL
        /// The HMAC-SHA256 key (the secret file's bytes, a trailing newline dropped).
        public var secret: [UInt8]
        /// The notifications it is sent (every kind when the file names none).
        public var events: Set<NotificationKind>
        public var format: PayloadFormat
        /// The most one attempt may take, in milliseconds (connect, send, answer).
        public var timeoutMillis: Int64
        /// The wait before the first retry, in milliseconds; it doubles each retry, up to `backoffMaxMillis`.
        public var backoffMillis: Int64
        public var backoffMaxMillis: Int64
        /// Notifications read ahead from the log and waiting to be delivered, at most (a count).
        public var queueMax: Int

        /// Values out of their ranges are brought into them (the file's are checked first, with a message).
        public init(name: String, url: URL, secret: [UInt8], events: Set<NotificationKind> = Set(NotificationKind.allCases), format: PayloadFormat = .lockstep,
                    timeoutMillis: Int64 = 5_000, backoffMillis: Int64 = 1_000, backoffMaxMillis: Int64 = 300_000, queueMax: Int = 256) {
            self.name = name
            self.url = url
            self.secret = secret
            self.events = events
            self.format = format
            self.timeoutMillis = min(max(timeoutMillis, 100), 60_000)
            self.backoffMillis = max(backoffMillis, 10)
            self.backoffMaxMillis = max(backoffMaxMillis, self.backoffMillis)
            self.queueMax = min(max(queueMax, 1), 10_000)
        }

        /// The wait before attempt `attempt` (2 or later): `backoff` doubled per earlier retry, at most `backoffMax`.
        public func backoff(before attempt: Int) -> Int64 {
            var wait = backoffMillis
            for _ in 0..<max(0, attempt - 2) {
                let (doubled, overflow) = wait.multipliedReportingOverflow(by: 2)
                wait = overflow ? backoffMaxMillis : doubled
                if wait >= backoffMaxMillis { break }
            }
            return min(wait, backoffMaxMillis)
        }
    }

    public enum PayloadFormat: String, Sendable, CaseIterable {
        /// Lockstep's own JSON object (docs/webhooks.md).
        case lockstep
        /// A Slack incoming-webhook message (`text` and `blocks`); also read by Mattermost and others.
        case slack
    }
}

/// A config that cannot be used, with where.
public struct WebhookConfigError: Error, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension WebhookConfig {
    /// At most `limit` bytes of the regular file at `path`, or why not (never more read than `limit` + 1).
    package static func read(_ path: String, limit: Int, what: String) throws(WebhookConfigError) -> [UInt8] {
        switch BoundedFile.read(path, limit: limit, what: what) {
        case .success(let bytes): return bytes
        case .failure(let problem): throw .init(problem.description)
        }
    }

    /// Reads the file at `path`; a secret file named relative to it is read relative to its directory.
    public static func load(path: String) throws(WebhookConfigError) -> WebhookConfig {
        let data = Data(try read(path, limit: fileBytesMax, what: "the webhooks file"))
        guard let text = String(data: data, encoding: .utf8) else { throw .init("\(path) is not UTF-8") }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do throws(WebhookConfigError) {
            return try parse(text) { file throws(WebhookConfigError) in
                let full = file.hasPrefix("/") ? file : directory + "/" + file
                // One byte over the most a secret may have, so a longer one is refused as such.
                return try read(full, limit: 1_026, what: "secret_file")
            }
        } catch {
            throw .init("\(path): \(error.description)")
        }
    }

    /// Parses a webhooks file; `readSecret` reads a `secret_file`.
    public static func parse(_ text: String, readSecret: (String) throws(WebhookConfigError) -> [UInt8]) throws(WebhookConfigError) -> WebhookConfig {
        if let line = StrictYAML.firstAnchorOrAlias(in: text) { throw .init("line \(line): anchors and aliases are not allowed") }
        let root: Node?
        do { root = try Yams.compose(yaml: text, StrictYAML.resolver) } catch { throw .init("not YAML: \(error)") }
        guard let mapping = root?.mapping else { throw .init("the file must be a mapping with `webhooks:`") }
        let fields = try Self.fields(mapping, allowed: ["console_url", "webhooks"], in: "the file")
        var config = WebhookConfig(webhooks: [])
        if let console = fields["console_url"] {
            guard let text = console.string, let url = URL(string: text), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw .init("console_url must be an http:// or https:// URL")
            }
            config.consoleURL = text.hasSuffix("/") ? String(text.dropLast()) : text
        }
        guard let list = fields["webhooks"]?.sequence, !list.isEmpty else {
            throw .init("webhooks must be a list of at least one webhook (without any, leave --webhooks out)")
        }
        guard list.count <= webhooksMax else { throw .init("\(list.count) webhooks; at most \(webhooksMax)") }
        for item in list {
            let webhook = try Self.webhook(item, readSecret: readSecret)
            guard !config.webhooks.contains(where: { $0.name == webhook.name }) else { throw .init("webhook \(webhook.name) is declared twice") }
            config.webhooks.append(webhook)
        }
        return config
    }

    static func fields(_ mapping: Node.Mapping, allowed: Set<String>, in context: String) throws(WebhookConfigError) -> [String: Node] {
        var result: [String: Node] = [:]
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else { throw .init("\(context): keys must be strings") }
            let name = scalar.string
            guard allowed.contains(name) else {
                throw .init("\(context): unknown field \(name) (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            // The parser finds a key written twice, but not one written again with a tag (`!x timeout`).
            guard result.updateValue(value, forKey: name) == nil else { throw .init("\(context): \(name) is given twice") }
        }
        return result
    }

    static func webhook(_ node: Node, readSecret: (String) throws(WebhookConfigError) -> [UInt8]) throws(WebhookConfigError) -> Webhook {
        guard let mapping = node.mapping else { throw .init("each webhook must be a mapping") }
        let fields = try Self.fields(mapping, allowed: [
            "name", "url", "secret_file", "events", "format", "timeout", "backoff", "max_backoff", "queue_max",
        ], in: "a webhook")
        guard let name = fields["name"]?.string, !name.isEmpty, name.utf8.count <= 64,
              name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F })
        else {
            throw .init("a webhook needs a name of 1 to 64 characters a-z, 0-9, - and _")
        }
        func fail(_ problem: String) -> WebhookConfigError { .init("webhook \(name): \(problem)") }
        guard let urlText = fields["url"]?.string, let url = URL(string: urlText), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
              let host = url.host, !host.isEmpty
        else {
            throw fail("url must be an http:// or https:// URL")
        }
        guard url.user == nil, url.password == nil else { throw fail("url must not carry credentials; the signature authenticates") }
        guard let secretFile = fields["secret_file"]?.string, !secretFile.isEmpty else {
            throw fail("secret_file is required: deliveries are always signed (docs/webhooks.md)")
        }
        var secret = try readSecret(secretFile)
        while secret.last == 0x0A || secret.last == 0x0D { secret.removeLast() }
        guard secret.count >= 16 else { throw fail("the secret in \(secretFile) has \(secret.count) bytes; at least 16 (e.g. `openssl rand -hex 32`)") }
        guard secret.count <= 1_024 else { throw fail("the secret in \(secretFile) has \(secret.count) bytes; at most 1024") }
        var webhook = Webhook(name: name, url: url, secret: secret)
        if let events = fields["events"] {
            guard let list = events.sequence, !list.isEmpty else { throw fail("events must be a non-empty list") }
            var kinds: Set<NotificationKind> = []
            for entry in list {
                guard let text = entry.string, let kind = NotificationKind(rawValue: text) else {
                    throw fail("unknown event \(entry.string ?? "?") (known: \(NotificationKind.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                kinds.insert(kind)
            }
            webhook.events = kinds
        }
        if let format = fields["format"] {
            guard let text = format.string, let parsed = WebhookConfig.PayloadFormat(rawValue: text) else { throw fail("format must be lockstep or slack") }
            webhook.format = parsed
        }
        func duration(_ field: String, _ range: ClosedRange<Int64>) throws(WebhookConfigError) -> Int64? {
            guard let node = fields[field] else { return nil }
            guard let text = node.string, let millis = PlanDuration.milliseconds(text), range.contains(millis) else {
                throw fail("\(field) must be a duration from \(range.lowerBound)ms to \(range.upperBound / 1_000)s (e.g. 5s)")
            }
            return millis
        }
        func count(_ field: String, _ range: ClosedRange<Int>) throws(WebhookConfigError) -> Int? {
            guard let node = fields[field] else { return nil }
            guard let text = node.string, let value = Int(text), range.contains(value) else {
                throw fail("\(field) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
        if let timeout = try duration("timeout", 100...60_000) { webhook.timeoutMillis = timeout }
        if let backoff = try duration("backoff", 10...3_600_000) { webhook.backoffMillis = backoff }
        if let most = try duration("max_backoff", 10...86_400_000) { webhook.backoffMaxMillis = most }
        guard webhook.backoffMaxMillis >= webhook.backoffMillis else { throw fail("max_backoff must be at least backoff") }
        if let queue = try count("queue_max", 1...10_000) { webhook.queueMax = queue }
        return webhook
    }
}

/// Files read from outside (configs, keys, checkpoints): regular files only, and never more than a limit.
package enum BoundedFile {
    package struct Problem: Error, CustomStringConvertible {
        package var description: String
        /// The file is there and readable, but over the limit.
        package var tooLarge = false
    }

    /// At most `limit` bytes of the regular file at `path` (never more read than `limit` + 1), or why not.
    /// `streams`: a pipe or a device is read too, to its end or the limit (`plan lint /dev/stdin`); only a
    /// command a person runs allows it (a server reading its secrets must not wait on a pipe).
    package static func read(_ path: String, limit: Int, what: String, streams: Bool = false) -> Result<[UInt8], Problem> {
        // A symbolic link is followed (secrets are often mounted as links); what it names must be a regular file.
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let type = (try? FileManager.default.attributesOfItem(atPath: resolved))?[.type] as? FileAttributeType
        let readable = type == .typeRegular || (streams && type != nil && type != .typeDirectory)
        guard readable, let handle = FileHandle(forReadingAtPath: resolved) else {
            return .failure(Problem(description: "cannot read \(what) \(path) (it must be \(streams ? "a file" : "a regular file") that exists and can be read)"))
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: limit + 1)) ?? Data()
        guard data.count <= limit else { return .failure(Problem(description: "\(what) \(path) is over \(limit) bytes", tooLarge: true)) }
        return .success([UInt8](data))
    }
}

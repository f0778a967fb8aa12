import LockstepCore
import Synchronization

/// One notification's delivery to one webhook, as `lockstep webhook deliveries` shows it.
public struct WebhookDelivery: Hashable, Sendable {
    public enum Status: String, Sendable, CaseIterable {
        /// Not taken yet: before its first attempt, or between attempts (`nextAttemptAt`); retried until it is.
        case pending
        /// The receiver answered 2xx.
        case delivered
        /// The receiver refused it for good (a 4xx other than 408, 425 and 429); the next notification goes on.
        case failed
    }

    /// The notification's id (also the `Lockstep-Delivery` header): stable across attempts and restarts.
    public var id: String
    public var webhook: String
    public var kind: String
    public var sequence: UInt64
    public var migration: String
    public var node: String
    public var status: Status
    public var attempts: Int
    /// The last attempt's result: "HTTP 204", "HTTP 500", "timed out after 5000 ms", "connection refused", …
    public var lastResult: String
    public var lastAttemptAt: Instant?
    public var nextAttemptAt: Instant?

    public init(id: String, webhook: String, kind: String, sequence: UInt64, migration: String, node: String) {
        self.id = id
        self.webhook = webhook
        self.kind = kind
        self.sequence = sequence
        self.migration = migration
        self.node = node
        self.status = .pending
        self.attempts = 0
        self.lastResult = ""
    }
}

/// The most recent deliveries, newest last: a bounded record in memory (the log keeps the events; a
/// restart starts this record afresh).
public final class WebhookDeliveryLog: Sendable {
    /// Deliveries kept, at most (the oldest are dropped first).
    public let capacity: Int
    private let entries = Mutex<[WebhookDelivery]>([])

    public init(capacity: Int = 1_000) { self.capacity = max(1, capacity) }

    /// Adds `delivery`, or replaces the entry with its webhook and id.
    public func record(_ delivery: WebhookDelivery) {
        entries.withLock { entries in
            if let index = entries.lastIndex(where: { $0.id == delivery.id && $0.webhook == delivery.webhook }) {
                entries[index] = delivery
                return
            }
            entries.append(delivery)
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
    }

    /// The newest `limit` deliveries (of `webhook`, and with `status`, when given), oldest first.
    public func recent(limit: Int, webhook: String = "", status: WebhookDelivery.Status? = nil) -> [WebhookDelivery] {
        entries.withLock { entries in
            let matching = entries.filter { (webhook.isEmpty || $0.webhook == webhook) && (status == nil || $0.status == status) }
            return Array(matching.suffix(max(0, limit)))
        }
    }
}

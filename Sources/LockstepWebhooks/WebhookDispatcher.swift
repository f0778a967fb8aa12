import LockstepPlan
import AsyncHTTPClient
import Foundation
import LockstepCore
import LockstepEngine
import LockstepService
import LockstepStore
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// Delivers notifications to the configured webhooks (docs/webhooks.md), as one service of the server's
/// group, on the writer only.
///
/// Each webhook has its own reader of the **log** (not of the coordinator): it reads at most `queue_max`
/// events ahead of what it delivered, derives their notifications, and delivers them one at a time, in
/// log order, retrying each with back-off until it is delivered or out of attempts. A receiver that is
/// down therefore holds back only its own reader: the coordinator appends at its own pace, nothing is
/// buffered without bound, and no event is skipped. Where it got to is kept in a cursor file (with a
/// SQLite log), so a restart goes on from there; deliveries are at least once (receivers dedupe on
/// `Lockstep-Delivery`).
public struct WebhookDispatcher: Service {
    let config: WebhookConfig
    let log: any EventLog
    /// The state to begin from: the log folded through `start.lastSequence`.
    let start: LogState
    /// Where each webhook's cursor is kept (nil: not kept; each start begins at the head).
    let cursorFile: String?
    let deliveries: WebhookDeliveryLog
    let metrics: ServerMetrics
    let wake: WebhookWake
    /// Lockstep's clock (recorded times): the signature's timestamp.
    let clock: @Sendable () -> Instant
    let logger: Logger
    /// The server's own JSON URL, for console links when the config names no `console_url`.
    let consoleBase: @Sendable () async -> String

    public init(config: WebhookConfig, log: any EventLog, start: LogState, cursorFile: String?, deliveries: WebhookDeliveryLog, metrics: ServerMetrics,
                wake: WebhookWake, clock: @escaping @Sendable () -> Instant, logger: Logger, consoleBase: @escaping @Sendable () async -> String) {
        self.consoleBase = consoleBase
        self.config = config
        self.log = log
        self.start = start
        self.cursorFile = cursorFile
        self.deliveries = deliveries
        self.metrics = metrics
        self.wake = wake
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(30))
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
        let cursors = CursorFile(path: cursorFile)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for webhook in config.webhooks {
                    group.addTask { await deliver(to: webhook, client: client, cursors: cursors) }
                }
            }
        }
        try? await client.shutdown()
        wake.close()
    }

    /// One webhook's reader and deliverer, until cancelled.
    func deliver(to webhook: WebhookConfig.Webhook, client: HTTPClient, cursors: CursorFile) async {
        var deriver: NotificationDeriver
        if let saved = cursors.value(webhook.name), saved < start.lastSequence {
            do {
                deriver = NotificationDeriver(state: try await History.replay(log, through: saved))
                logger.info("webhook \(webhook.name): going on from sequence \(saved)")
            } catch {
                logger.error("webhook \(webhook.name): cannot replay to its cursor \(saved) (\(error)); starting at the head, \(start.lastSequence)")
                deriver = NotificationDeriver(state: start)
            }
        } else {
            deriver = NotificationDeriver(state: start)
        }
        let lag = Gauge(label: "lockstep_webhook_lag_events", dimensions: [("webhook", webhook.name)], factory: metrics.factory)
        while !Task.isCancelled {
            let cursor = deriver.state.lastSequence
            let generation = wake.generation
            let page: [StoredEvent]
            do {
                page = try await log.read(after: cursor, limit: webhook.queueMax)
                if let head = try? await log.head() { lag.record(Int64(clamping: head.sequence - min(head.sequence, cursor))) }
            } catch {
                logger.warning("webhook \(webhook.name): cannot read the log after \(cursor): \(error)")
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            if page.isEmpty {
                await wake.wait(since: generation, atMost: .seconds(1))
                continue
            }
            // Derive the page's notifications first (the bounded queue), then deliver them in order.
            var queue: [(note: Notice, through: UInt64)] = []
            for stored in page {
                let record: LogRecord
                do { record = try History.check(stored, against: deriver.state) } catch {
                    logger.error("webhook \(webhook.name): the log is damaged at \(stored.sequence) (\(error)); its deliveries stop")
                    return
                }
                for note in deriver.take(record, sequence: stored.sequence) where webhook.events.contains(note.kind) {
                    queue.append((note, stored.sequence))
                }
            }
            for (note, _) in queue {
                let done = await deliver(note, to: webhook, client: client)
                if !done { return }  // cancelled: the cursor stays before it, so it is sent again after a restart
            }
            cursors.set(webhook.name, deriver.state.lastSequence)
        }
    }

    /// Delivers `note` until the receiver takes it or the attempts run out; false if cancelled first.
    func deliver(_ note: Notice, to webhook: WebhookConfig.Webhook, client: HTTPClient) async -> Bool {
        let base = config.consoleURL.isEmpty ? await consoleBase() : config.consoleURL
        let body = WebhookPayload.body(note, webhook: webhook.name, format: webhook.format, consoleURL: base)
        var delivery = WebhookDelivery(id: note.id, webhook: webhook.name, kind: note.kind.rawValue, sequence: note.sequence, migration: note.migration,
                                       node: note.node)
        deliveries.record(delivery)
        for attempt in 1...webhook.attempts {
            if attempt > 1 {
                let wait = webhook.backoff(before: attempt)
                delivery.nextAttemptAt = clock().adding(milliseconds: wait)
                deliveries.record(delivery)
                do { try await Task.sleep(for: .milliseconds(wait)) } catch { return false }
            }
            let now = clock()
            let timestamp = now.millisecondsSinceEpoch / 1_000
            var request = HTTPClientRequest(url: webhook.url.absoluteString)
            request.method = .POST
            request.headers.add(name: "content-type", value: "application/json")
            request.headers.add(name: "user-agent", value: "lockstep-webhooks")
            request.headers.add(name: "lockstep-delivery", value: note.id)
            request.headers.add(name: "lockstep-event", value: note.kind.rawValue)
            request.headers.add(name: "lockstep-attempt", value: String(attempt))
            request.headers.add(name: "lockstep-timestamp", value: String(timestamp))
            request.headers.add(name: "lockstep-signature", value: WebhookPayload.signature(secret: webhook.secret, timestamp: timestamp, body: body))
            request.body = .bytes(ByteBuffer(bytes: body))
            let result: String
            var ok = false
            do {
                let response = try await client.execute(request, timeout: .milliseconds(webhook.timeoutMillis))
                // What the receiver says is not kept (at most 16 KiB is read, then dropped).
                _ = try? await response.body.collect(upTo: 16 * 1024)
                ok = (200..<300).contains(response.status.code)
                result = "HTTP \(response.status.code)"
                count(webhook, ok ? "ok" : "http_error")
            } catch {
                if Task.isCancelled { return false }
                result = Self.describe(error, timeoutMillis: webhook.timeoutMillis)
                count(webhook, result.hasPrefix("timed out") ? "timeout" : "connection_error")
            }
            delivery.attempts = attempt
            delivery.lastResult = result
            delivery.lastAttemptAt = now
            delivery.nextAttemptAt = nil
            if ok {
                delivery.status = .delivered
                deliveries.record(delivery)
                Counter(label: "lockstep_webhook_deliveries_total", dimensions: [("webhook", webhook.name), ("outcome", "delivered")], factory: metrics.factory)
                    .increment()
                return true
            }
            deliveries.record(delivery)
            logger.warning("webhook \(webhook.name): delivery \(note.id) attempt \(attempt) of \(webhook.attempts): \(result)")
        }
        delivery.status = .failed
        deliveries.record(delivery)
        Counter(label: "lockstep_webhook_deliveries_total", dimensions: [("webhook", webhook.name), ("outcome", "failed")], factory: metrics.factory).increment()
        logger.error("webhook \(webhook.name): delivery \(note.id) failed after \(webhook.attempts) attempts; going on with the next")
        return true
    }

    func count(_ webhook: WebhookConfig.Webhook, _ result: String) {
        Counter(label: "lockstep_webhook_attempts_total", dimensions: [("webhook", webhook.name), ("result", result)], factory: metrics.factory).increment()
    }

    static func describe(_ error: any Error, timeoutMillis: Int64) -> String {
        if let error = error as? HTTPClientError, [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(error) {
            return "timed out after \(timeoutMillis) ms"
        }
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("deadlineExceeded") { return "timed out after \(timeoutMillis) ms" }
        if text.contains("refused") || text.contains("ECONNREFUSED") { return "connection refused" }
        return String(text.prefix(200))
    }
}

/// Wakes the webhook readers when the log grows (the server's change observer signals it).
public final class WebhookWake: Sendable {
    private struct State {
        /// Appends signalled so far.
        var generation: UInt64 = 0
        var closed = false
        var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// The log has grown.
    public func signal() {
        let waiters = state.withLock { state in
            state.generation &+= 1
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in waiters.values { waiter.resume() }
    }

    func close() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in waiters.values { waiter.resume() }
    }

    /// Appends signalled so far (read before looking at the log, then passed to `wait`).
    var generation: UInt64 { state.withLock { $0.generation } }

    /// Returns once an append is signalled after `generation`, or after `atMost`, or when cancelled.
    func wait(since generation: UInt64, atMost: Duration) async {
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: atMost)
            }
            group.addTask { [self] in
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = state.withLock { state -> Bool in
                            if state.closed || state.generation != generation { return true }
                            state.waiters[id] = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
                    waiter?.resume()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }
}

/// Each webhook's cursor (the last sequence whose notifications were all delivered or given up on),
/// kept in a small JSON file replaced atomically.
final class CursorFile: Sendable {
    let path: String?
    private let values: Mutex<[String: UInt64]>

    init(path: String?) {
        self.path = path
        var loaded: [String: UInt64] = [:]
        if let path, let data = FileManager.default.contents(atPath: path),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            for (name, value) in object { if let number = value as? NSNumber { loaded[name] = number.uint64Value } }
        }
        values = Mutex(loaded)
    }

    func value(_ webhook: String) -> UInt64? { values.withLock { $0[webhook] } }

    func set(_ webhook: String, _ sequence: UInt64) {
        let snapshot = values.withLock { values -> [String: UInt64]? in
            guard values[webhook] != sequence else { return nil }
            values[webhook] = sequence
            return values
        }
        guard let path, let snapshot else { return }
        let data = (try? JSONSerialization.data(withJSONObject: snapshot, options: [.sortedKeys])) ?? Data()
        let temporary = path + ".tmp"
        if FileManager.default.createFile(atPath: temporary, contents: data) { _ = rename(temporary, path) }
    }
}

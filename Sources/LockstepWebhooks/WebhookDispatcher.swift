import LockstepPlan
import LockstepPostgres
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
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// Delivers notifications to the configured webhooks (docs/webhooks.md), as one service of the server's
/// group, on the writer only.
///
/// Each webhook has its own reader of the **log** (not of the coordinator): it reads at most `queue_max`
/// events ahead of what it delivered, derives their notifications, and delivers them one at a time, in
/// log order. A notification the receiver does not take is tried again, with back-off, until it does:
/// only an answer that says it never will (a 4xx other than 408, 425 and 429) gives it up. A receiver
/// that is down therefore holds back only its own reader: the coordinator appends at its own pace,
/// nothing is buffered without bound, and no notification is skipped. Where each reader got to is kept
/// by a `WebhookCursors` store (WebhookCursors.swift), so a restart goes on from there; deliveries are at least once
/// (receivers dedupe on the body's signed `id`).
public struct WebhookDispatcher: Service {
    let config: WebhookConfig
    let log: any EventLog
    /// The state to begin from: the log folded through `start.lastSequence`.
    let start: LogState
    let cursors: any WebhookCursors
    let deliveries: WebhookDeliveryLog
    let metrics: ServerMetrics
    let wake: WebhookWake
    /// The wall clock: the signature's timestamp (receivers compare it with theirs) and the times shown.
    let wallClock: @Sendable () -> Instant
    let logger: Logger
    /// The server's own JSON URL, for console links when the config names no `console_url`.
    let consoleBase: @Sendable () async -> String

    public init(config: WebhookConfig, log: any EventLog, start: LogState, cursors: any WebhookCursors, deliveries: WebhookDeliveryLog, metrics: ServerMetrics,
                wake: WebhookWake, wallClock: @escaping @Sendable () -> Instant, logger: Logger, consoleBase: @escaping @Sendable () async -> String) {
        self.config = config
        self.log = log
        self.start = start
        self.cursors = cursors
        self.deliveries = deliveries
        self.metrics = metrics
        self.wake = wake
        self.wallClock = wallClock
        self.logger = logger
        self.consoleBase = consoleBase
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            // Where each webhook goes on from: its cursor, or the head (kept at once, so a restart before
            // the first delivery does not skip what came meanwhile). One replay per distinct cursor.
            let loaded = await cursors.load(logger: logger)
            // Stopping (or deposed) while they were read: nothing is saved, nothing delivered.
            if Task.isCancelled { return }
            let saved = loaded ?? [:]
            var states: [UInt64: LogState] = [start.lastSequence: start]
            var begin: [String: LogState] = [:]
            for webhook in config.webhooks {
                guard let cursor = saved[webhook.name], cursor < start.lastSequence else {
                    if let cursor = saved[webhook.name], cursor > start.lastSequence {
                        logger.warning("webhook \(webhook.name): its cursor \(cursor) is past the log's head \(start.lastSequence); going on from the head")
                    }
                    begin[webhook.name] = start
                    if loaded != nil, saved[webhook.name] != start.lastSequence { await cursors.save(webhook.name, start.lastSequence, logger: logger) }
                    continue
                }
                if states[cursor] == nil {
                    guard let state = await replay(through: cursor) else { return }
                    states[cursor] = state
                }
                begin[webhook.name] = states[cursor]
                logger.info("webhook \(webhook.name): going on from sequence \(cursor)")
            }
            await withTaskGroup(of: Void.self) { group in
                for webhook in config.webhooks {
                    guard let state = begin[webhook.name] else { continue }
                    group.addTask { await deliver(to: webhook, from: state) }
                }
            }
        }
        // Ended early only by a cancellation: wait for the group's shutdown (ending first fails the group).
        try? await gracefulShutdown()
    }

    /// The log folded through `cursor`, retried until it can be read (nil when cancelled first).
    func replay(through cursor: UInt64) async -> LogState? {
        while !Task.isCancelled {
            do { return try await History.replay(log, through: cursor) } catch .archived(let base) {
                // Archived past the cursor (archival keeps delivered events only when it can read the cursors):
                // what lies between is gone from the live log; go on from its base, and say so.
                logger.error("webhooks: events \(cursor + 1) to \(base) were archived before they were delivered; going on from sequence \(base)")
                return await replay(through: base)
            } catch {
                logger.error("webhooks: cannot replay the log to sequence \(cursor) (\(error)); trying again in 5 s")
                try? await Task.sleep(for: .seconds(5))
            }
        }
        return nil
    }

    /// One webhook's reader and deliverer, until cancelled.
    func deliver(to webhook: WebhookConfig.Webhook, from state: LogState) async {
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(30))
        // Connect and every read within the webhook's timeout, as well as the whole head (execute's deadline).
        clientConfiguration.timeout = .init(connect: .milliseconds(webhook.timeoutMillis), read: .milliseconds(webhook.timeoutMillis))
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
        await read(for: webhook, from: state, client: client)
        try? await client.shutdown()
    }

    func read(for webhook: WebhookConfig.Webhook, from state: LogState, client: HTTPClient) async {
        var deriver = NotificationDeriver(state: state)
        let lag = Gauge(label: "lockstep_webhook_lag_events", dimensions: [("webhook", webhook.name)], factory: metrics.factory)
        while !Task.isCancelled {
            let cursor = deriver.state.lastSequence
            let generation = wake.generation
            let page: [StoredEvent]
            do {
                page = try await log.read(after: cursor, limit: webhook.queueMax)
            } catch .archived(let base) {
                // Archived past this cursor (one archival could not hold back: its cursor was not saved):
                // what lies between is gone from the live log; go on from its base, and say so.
                logger.error("webhook \(webhook.name): events \(cursor + 1) to \(base) were archived before they were delivered; going on from sequence \(base)")
                guard let state = await replay(through: base) else { return }
                deriver = NotificationDeriver(state: state)
                continue
            } catch {
                logger.warning("webhook \(webhook.name): cannot read the log after \(cursor): \(error)")
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            await recordLag(lag, cursor: cursor)
            if page.isEmpty {
                await wake.wait(since: generation, atMost: .seconds(1))
                continue
            }
            // Derive the page's notifications first (the bounded queue), then deliver them in order.
            var queue: [Notice] = []
            for stored in page {
                let record: LogRecord
                do { record = try History.check(stored, against: deriver.state) } catch {
                    // Nothing after damage is read: this webhook waits (the coordinator reports the damage).
                    logger.error("webhook \(webhook.name): the log is damaged at \(stored.sequence) (\(error)); its deliveries stop until a restart")
                    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
                    return
                }
                queue += deriver.take(record, sequence: stored.sequence).filter { webhook.events.contains($0.kind) }
            }
            for note in queue {
                // Cancelled: the cursor stays before it, so it is sent again after a restart.
                guard await deliver(note, to: webhook, client: client, lag: lag) else { return }
            }
            await cursors.save(webhook.name, deriver.state.lastSequence, logger: logger)
        }
    }

    func recordLag(_ lag: Gauge, cursor: UInt64) async {
        if let head = try? await log.head() { lag.record(Int64(clamping: head.sequence - min(head.sequence, cursor))) }
    }

    /// Whether an answer says the receiver will never take this notification (it is given up).
    static func isRefusal(_ status: UInt) -> Bool { (400..<500).contains(status) && ![408, 425, 429].contains(status) }

    /// Delivers `note` until the receiver takes it or refuses it for good; false if cancelled first.
    func deliver(_ note: Notice, to webhook: WebhookConfig.Webhook, client: HTTPClient, lag: Gauge) async -> Bool {
        let base = config.consoleURL.isEmpty ? await consoleBase() : config.consoleURL
        let body = WebhookPayload.body(note, webhook: webhook.name, format: webhook.format, consoleURL: base)
        var delivery = WebhookDelivery(id: note.id, webhook: webhook.name, kind: note.kind.rawValue, sequence: note.sequence, migration: note.migration,
                                       node: note.node)
        deliveries.record(delivery)
        var attempt = 0
        while !Task.isCancelled {
            attempt += 1
            if attempt > 1 {
                let wait = webhook.backoff(before: attempt)
                delivery.nextAttemptAt = wallClock().adding(milliseconds: wait)
                deliveries.record(delivery)
                do { try await Task.sleep(for: .milliseconds(wait)) } catch { return false }
                await recordLag(lag, cursor: note.sequence - 1)
            }
            let now = wallClock()
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
            var status: UInt?
            do {
                // The answer's status is all that counts; its body is not read.
                let response = try await client.execute(request, timeout: .milliseconds(webhook.timeoutMillis))
                status = response.status.code
                result = "HTTP \(response.status.code)"
            } catch {
                if Task.isCancelled { return false }
                result = Self.describe(error, timeoutMillis: webhook.timeoutMillis)
            }
            delivery.attempts = attempt
            delivery.lastResult = result
            delivery.lastAttemptAt = now
            delivery.nextAttemptAt = nil
            let outcome: String? = switch status {
            case let code? where (200..<300).contains(code): "delivered"
            case let code? where Self.isRefusal(code): "refused"
            default: nil
            }
            count(webhook, status.map { (200..<300).contains($0) ? "ok" : "http_error" } ?? (result.hasPrefix("timed out") ? "timeout" : "connection_error"))
            if let outcome {
                delivery.status = outcome == "delivered" ? .delivered : .failed
                deliveries.record(delivery)
                Counter(label: "lockstep_webhook_deliveries_total", dimensions: [("webhook", webhook.name), ("outcome", outcome)], factory: metrics.factory)
                    .increment()
                if outcome == "refused" {
                    logger.error("webhook \(webhook.name): the receiver refused delivery \(note.id) for good (\(result)); going on with the next")
                }
                return true
            }
            deliveries.record(delivery)
            logger.warning("webhook \(webhook.name): delivery \(note.id) attempt \(attempt): \(result); trying again")
        }
        return false
    }

    func count(_ webhook: WebhookConfig.Webhook, _ result: String) {
        Counter(label: "lockstep_webhook_attempts_total", dimensions: [("webhook", webhook.name), ("result", result)], factory: metrics.factory).increment()
    }

    static func describe(_ error: any Error, timeoutMillis: Int64) -> String {
        if let error = error as? HTTPClientError, [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(error) {
            return "timed out after \(timeoutMillis) ms"
        }
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("deadlineExceeded") || text.contains("readTimeout") { return "timed out after \(timeoutMillis) ms" }
        if text.contains("refused") || text.contains("ECONNREFUSED") { return "connection refused" }
        return String(text.prefix(200))
    }
}

/// Wakes the webhook readers when the log grows (the server's change observer signals it).
public final class WebhookWake: Sendable {
    private struct State {
        /// Appends signalled so far.
        var generation: UInt64 = 0
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

    /// Appends signalled so far (read before looking at the log, then passed to `wait`).
    package var generation: UInt64 { state.withLock { $0.generation } }

    /// Returns once an append is signalled after `generation`, or after `atMost`, or when cancelled.
    package func wait(since generation: UInt64, atMost: Duration) async {
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: atMost)
            }
            group.addTask { [self] in
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        // Cancelled before this registers (the handler below then found nothing): return at once.
                        let now = state.withLock { state -> Bool in
                            if state.generation != generation || Task.isCancelled { return true }
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

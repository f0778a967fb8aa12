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
/// by a `WebhookCursors` store, so a restart goes on from there; deliveries are at least once
/// (receivers dedupe on `Lockstep-Delivery`).
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

/// Where each webhook's reader got to: the last sequence whose notifications were all delivered (or
/// refused for good). Kept by the writer, read at its start.
public protocol WebhookCursors: Sendable {
    /// The cursors; nil when they cannot be read (or the caller was cancelled meanwhile): every webhook
    /// then goes on from the log's head, which is not saved before its first delivery.
    func load(logger: Logger) async -> [String: UInt64]?
    /// The cursors, or why they cannot be read (`load` goes on without them; archival must not).
    func read() async throws -> [String: UInt64]
    func save(_ webhook: String, _ sequence: UInt64, logger: Logger) async
}

/// Why the webhook cursors cannot be read.
public struct WebhookCursorError: Error, CustomStringConvertible {
    public var description: String
}

/// Cursors in a small JSON file beside a SQLite log (`DIR/webhooks.cursor.json`), replaced atomically.
public final class WebhookCursorFile: WebhookCursors {
    let path: String
    private let values = Mutex<[String: UInt64]>([:])

    public init(path: String) { self.path = path }

    public func load(logger: Logger) async -> [String: UInt64]? {
        do {
            let loaded = try await read()
            values.withLock { $0 = loaded }
            return loaded
        } catch {
            logger.error("\(error); every webhook goes on from the log's head")
            return nil
        }
    }

    public func read() async throws -> [String: UInt64] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        let data: [UInt8]
        do {
            data = try WebhookConfig.read(path, limit: 1 << 20, what: "the webhook cursor file")
        } catch {
            throw WebhookCursorError(description: "the webhook cursor file \(path) cannot be read: \(error)")
        }
        let object: [String: Any]
        do throws(StrictJSON.Refusal) { object = try StrictJSON.object(data) } catch {
            // A webhook's cursor written twice (by hand): which one holds is not for the parser to pick.
            if case .repeated(let name) = error {
                throw WebhookCursorError(description: "the webhook cursor file \(path) gives webhook \(name.quotable)'s cursor twice")
            }
            throw WebhookCursorError(description: "the webhook cursor file \(path) cannot be read")
        }
        // Each cursor a whole number of events, 0 or more: `true`, `0.5` or `-1` is a file edited wrong, and
        // is refused naming the webhook (skipped, the webhook would go on from the head and lose its backlog).
        var cursors: [String: UInt64] = [:]
        for (name, value) in object {
            let text = (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed])) ?? Data()
            guard let cursor = try? JSONDecoder().decode(UInt64.self, from: text), cursor <= UInt64(Int64.max) else {
                throw WebhookCursorError(description: "the webhook cursor file \(path) gives webhook \(name.quotable) a cursor that is not a whole number of events, 0 or more")
            }
            cursors[name] = cursor
        }
        return cursors
    }

    public func save(_ webhook: String, _ sequence: UInt64, logger: Logger) async {
        // Under the lock, so a later cursor is never replaced by an earlier snapshot.
        // Replaced whole and synced (a crash leaves the old cursors or the new, never an empty file that would
        // send every webhook to the head and skip its backlog).
        values.withLock { values in
            guard values[webhook] != sequence else { return }
            values[webhook] = sequence
            guard let data = try? JSONSerialization.data(withJSONObject: values, options: [.sortedKeys]) else {
                logger.warning("cannot encode the webhook cursors; a restart will deliver again from the last cursor written")
                return
            }
            if let problem = DurableFile.replace(path, with: Array(data)) {
                logger.warning("cannot write the webhook cursor file \(path) (\(problem)); a restart will deliver again from the last cursor written")
            }
        }
    }
}

/// Cursors in the PostgreSQL database the log is in (table `lockstep_webhook_cursors`), so the writer
/// that takes over after a failover goes on where the last one got to.
public final class PostgresWebhookCursors: WebhookCursors {
    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// The bound on each call (`PostgresDeadline`): a database that stopped answering must not hold a
    /// delivery loop, or a stop, for ever.
    static let callLimit = Duration.seconds(5)
    /// The cursors' own budget of calls running past that bound (`PostgresDeadline.Overruns`).
    static let overruns = PostgresDeadline.Overruns(callsMax: 16)

    static let table = "CREATE TABLE IF NOT EXISTS lockstep_webhook_cursors (webhook text PRIMARY KEY, sequence bigint NOT NULL CHECK (sequence >= 0))"

    public func load(logger: Logger) async -> [String: UInt64]? {
        // Two coordinators creating the table at once: one of them fails, and reads it on its second try.
        for attempt in 1...3 where !Task.isCancelled {
            do {
                let client = client
                return try await PostgresDeadline.run(within: Self.callLimit, overruns: Self.overruns) {
                    try await client.perform(PostgresQuery(unsafeSQL: Self.table), logger: logger)
                    return try await Self.cursors(client, logger)
                }
            } catch {
                logger.warning("webhook cursors: cannot read lockstep_webhook_cursors (attempt \(attempt) of 3): \(String(reflecting: error))")
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
        logger.error("webhook cursors: unreadable; every webhook goes on from the log's head")
        return nil
    }

    public func read() async throws -> [String: UInt64] {
        let (client, logger) = (client, Logger(label: "lockstep.webhooks"))
        return try await PostgresDeadline.run(within: Self.callLimit, overruns: Self.overruns) {
            var present = false
            for row in try await client.rows("SELECT to_regclass('lockstep_webhook_cursors') IS NOT NULL", logger: logger) {
                present = try row.decode(Bool.self)
            }
            return present ? try await Self.cursors(client, logger) : [:]
        }
    }

    /// The table's cursors (a negative one, which the table's CHECK refuses, is skipped).
    private static func cursors(_ client: PostgresClient, _ logger: Logger) async throws -> [String: UInt64] {
        var loaded: [String: UInt64] = [:]
        for row in try await client.rows("SELECT webhook, sequence FROM lockstep_webhook_cursors", logger: logger) {
            let (name, sequence) = try row.decode((String, Int64).self)
            if sequence >= 0 { loaded[name] = UInt64(sequence) }
        }
        return loaded
    }

    public func save(_ webhook: String, _ sequence: UInt64, logger: Logger) async {
        let value = Int64(clamping: sequence)
        do {
            let client = client
            // (A save that gave up here may still land after a later one and move the cursor back: a
            // restart then delivers those events again, as after a crash. Not GREATEST: a cursor past the
            // log's head is pulled back on purpose.)
            try await PostgresDeadline.run(within: Self.callLimit, overruns: Self.overruns) {
                try await client.perform("""
                    INSERT INTO lockstep_webhook_cursors (webhook, sequence) VALUES (\(webhook), \(value))
                    ON CONFLICT (webhook) DO UPDATE SET sequence = EXCLUDED.sequence
                    """, logger: logger)
            }
        } catch {
            logger.warning("webhook cursors: cannot save \(webhook)'s cursor \(sequence): \(String(reflecting: error)); a restart delivers again from the last one saved")
        }
    }
}

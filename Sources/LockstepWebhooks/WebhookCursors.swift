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

/// Cursors in a small JSON file beside a SQLite log (`DIR/webhooks.cursor.json`), replaced whole and synced.
public final class WebhookCursorFile: WebhookCursors {
    let path: String
    /// The cursors, and how many saves changed them (the writer skips a snapshot older than one written).
    private let values = Mutex<(cursors: [String: UInt64], generation: UInt64)>(([:], 0))
    private let writer = Writer()

    /// Writes the file, one snapshot at a time, the newest only: the sync runs outside the cursors' lock,
    /// so a webhook saving waits (an await) instead of blocking a thread.
    private actor Writer {
        var written: UInt64 = 0
        func write(_ bytes: [UInt8], generation: UInt64, to path: String) -> String? {
            guard generation > written else { return nil }
            written = generation
            return DurableFile.replace(path, with: bytes)
        }
    }

    public init(path: String) { self.path = path }

    public func load(logger: Logger) async -> [String: UInt64]? {
        do {
            let loaded = try await read()
            values.withLock { $0.cursors = loaded }
            return loaded
        } catch {
            // Kept aside, as it was: the first save would otherwise replace it with only the webhooks saved
            // since, and the evidence with it.
            let aside = path + ".unreadable"
            let moved = FileManager.default.fileExists(atPath: path) && rename(path, aside) == 0
            logger.error("\(error); every webhook goes on from the log's head\(moved ? " (the file is kept as \(aside): to go on from its cursors, stop the server, mend it and move it back)" : "")")
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
        // The snapshot is taken under the lock, numbered, and written newest only, so a later cursor is
        // never replaced by an earlier snapshot. Replaced whole and synced (a crash leaves the old cursors
        // or the new, never an empty file that would send every webhook to the head and skip its backlog).
        let snapshot: (data: Data?, generation: UInt64)? = values.withLock { values in
            guard values.cursors[webhook] != sequence else { return nil }
            values.cursors[webhook] = sequence
            values.generation &+= 1
            return (try? JSONSerialization.data(withJSONObject: values.cursors, options: [.sortedKeys]), values.generation)
        }
        guard let snapshot else { return }
        guard let data = snapshot.data else {
            logger.warning("cannot encode the webhook cursors; a restart will deliver again from the last cursor written")
            return
        }
        if let problem = await writer.write(Array(data), generation: snapshot.generation, to: path) {
            logger.warning("cannot write the webhook cursor file \(path) (\(problem)); a restart will deliver again from the last cursor written")
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

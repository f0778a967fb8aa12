import AsyncHTTPClient
import Foundation
import LockstepCore
import LockstepEngine
import LockstepService
import LockstepStore
import LockstepWebhooks
import Logging
import Metrics
import NIOCore
import ServiceLifecycle

/// How the writer signs checkpoints (docs/history.md, "Signed checkpoints").
public struct SigningOptions: Sendable {
    public var signer: CheckpointSigner
    /// Where each checkpoint is also appended (`checkpoints.ndjson`), off the log's disk; nil: only the log.
    public var directory: String?
    /// Each checkpoint is also POSTed here as JSON (a witness); nil: none.
    public var witness: URL?
    /// A checkpoint once this many events were appended since the last.
    public var everyEvents: UInt64 = 1_000
    /// A checkpoint once this long passed since the last, if anything was appended meanwhile (milliseconds).
    public var everyMillis: Int64 = 60_000

    public init(signer: CheckpointSigner) { self.signer = signer }
}

/// Signs a checkpoint of the log's head every `everyEvents` events and every `everyMillis` of activity,
/// and once more at shutdown; records it in the log (stream `checkpoint/SEQUENCE`), appends it to the
/// checkpoints file, and posts it to the witness. One service of the writer's group.
struct CheckpointService: Service {
    let options: SigningOptions
    let coordinator: Coordinator
    let log: any EventLog
    let wake: WebhookWake
    let wallClock: @Sendable () -> Instant
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        let client: HTTPClient? = options.witness.map { _ in
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(5))
            return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        }
        let start = await lastSigned()
        // The sequence signed last, when the loop ended (a graceful shutdown cancels it).
        let last = await cancelWhenGracefulShutdown { () async -> UInt64 in
            var last = start
            var lastAt = ContinuousClock.now
            while !Task.isCancelled {
                let generation = wake.generation
                if let head = try? await log.head(), head.sequence > last {
                    let due = head.sequence - last >= options.everyEvents || ContinuousClock.now - lastAt >= .milliseconds(options.everyMillis)
                    if due, await sign(head, client: client) {
                        // The checkpoint's own event is the head now: the next one is due after more events.
                        last = (try? await log.head().sequence) ?? head.sequence
                        lastAt = ContinuousClock.now
                    }
                }
                await wake.wait(since: generation, atMost: .milliseconds(min(options.everyMillis, 1_000)))
            }
            return last
        }
        // At shutdown (the listeners still serve: this service stops before them): the head as it is now.
        if let head = try? await log.head(), head.sequence > last { _ = await sign(head, client: client) }
        try? await client?.shutdown()
    }

    /// The newest sequence a checkpoint event of the log vouches for's own position (0 when none): where
    /// the events since the last checkpoint are counted from.
    func lastSigned() async -> UInt64 {
        guard let head = try? await log.head() else { return 0 }
        // The last event is a checkpoint's own: nothing was appended since.
        if let last = try? await log.read(after: head.sequence - min(head.sequence, 1), limit: 1).first, last.stream.hasPrefix("checkpoint/") {
            return head.sequence
        }
        return 0
    }

    /// Signs `head`, records it, keeps it elsewhere; false when it could not be recorded.
    func sign(_ head: LogHead, client: HTTPClient?) async -> Bool {
        let checkpoint: Checkpoint
        do {
            checkpoint = try options.signer.sign(sequence: head.sequence, chainHash: head.chainHash.bytes, at: wallClock())
        } catch {
            logger.error("cannot sign a checkpoint: \(error)")
            return false
        }
        // Elsewhere first: it is a true statement about the log whether or not its own event is recorded.
        if let directory = options.directory {
            do { try CheckpointFiles.append(checkpoint, directory: directory) } catch {
                metrics.checkpointCopiesFailed.increment()
                logger.error("cannot keep checkpoint \(checkpoint.sequence) in \(directory): \(error)")
            }
        }
        if let witness = options.witness, let client { await post(checkpoint, to: witness, client: client) }
        do {
            _ = try await coordinator.execute(.checkpoints(.record(checkpoint)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator),
                                              now: wallClock())
            metrics.checkpointsSigned.increment()
            return true
        } catch {
            logger.warning("checkpoint \(checkpoint.sequence) was kept elsewhere but not recorded in the log: \(error)")
            return false
        }
    }

    func post(_ checkpoint: Checkpoint, to witness: URL, client: HTTPClient) async {
        var request = HTTPClientRequest(url: witness.absoluteString)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: CheckpointFiles.line(checkpoint)))
        do {
            let response = try await client.execute(request, timeout: .seconds(5))
            guard (200..<300).contains(response.status.code) else {
                metrics.checkpointCopiesFailed.increment()
                logger.warning("the checkpoint witness \(witness) answered \(response.status.code) to checkpoint \(checkpoint.sequence)")
                return
            }
        } catch {
            metrics.checkpointCopiesFailed.increment()
            logger.warning("the checkpoint witness \(witness) did not take checkpoint \(checkpoint.sequence): \(error)")
        }
    }
}

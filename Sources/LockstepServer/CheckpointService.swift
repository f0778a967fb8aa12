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

/// Signs a checkpoint of the coordinator's head every `everyEvents` events and every `everyMillis` of
/// activity, and once more at shutdown; keeps it in the checkpoints file and posts it to the witness (once
/// each), then records it in the log (stream `checkpoint/SEQUENCE`), retrying only that with back-off.
/// The first service of the writer's group, so the last one stopped: its shutdown checkpoint comes after
/// every other write. An idle head is signed once: its checkpoint's own event is not activity.
struct CheckpointService: Service {
    let options: SigningOptions
    let coordinator: Coordinator
    let log: any EventLog
    let wake: WebhookWake
    /// The server's clock (recorded times never go backwards).
    let clock: @Sendable () -> Instant
    let metrics: ServerMetrics
    let logger: Logger

    /// Where the loop got to: the last sequence counted as signed, and a checkpoint signed and kept
    /// elsewhere but not recorded in the log yet.
    struct Progress: Sendable {
        var last: UInt64
        var pending: Checkpoint?
        /// The newest checkpoint the witness took (a shutdown that cancelled its post sends it again).
        var posted: UInt64 = 0
    }

    func run() async throws {
        let client: HTTPClient? = options.witness.map { _ in
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.timeout = .init(connect: .seconds(5), read: .seconds(5))
            return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        }
        let start = Progress(last: await lastSigned(), pending: nil)
        var progress = await cancelWhenGracefulShutdown { () async -> Progress in
            var progress = start
            var lastAt = ContinuousClock.now
            var backoff = Duration.seconds(1)
            while !Task.isCancelled {
                let generation = wake.generation
                if progress.pending == nil {
                    let head = await coordinator.appliedSequence
                    if head > progress.last, head - progress.last >= options.everyEvents || ContinuousClock.now - lastAt >= .milliseconds(options.everyMillis) {
                        if let (checkpoint, posted) = await signAndKeep(head, client: client) {
                            progress.pending = checkpoint
                            if posted { progress.posted = checkpoint.sequence }
                        }
                    }
                }
                if let checkpoint = progress.pending {
                    if await record(checkpoint, into: &progress) {
                        lastAt = ContinuousClock.now
                        backoff = .seconds(1)
                    } else {
                        try? await Task.sleep(for: backoff)
                        backoff = min(backoff * 2, .seconds(60))
                        continue
                    }
                }
                await wake.wait(since: generation, atMost: .milliseconds(min(options.everyMillis, 1_000)))
            }
            return progress
        }
        // At shutdown, after every other service stopped: what is pending (posted again if its post was
        // cut short), then the head if it moved.
        if let checkpoint = progress.pending {
            if let witness = options.witness, let client, progress.posted < checkpoint.sequence { _ = await post(checkpoint, to: witness, client: client) }
            _ = await record(checkpoint, into: &progress)
        }
        let head = await coordinator.appliedSequence
        if head > progress.last, let (checkpoint, _) = await signAndKeep(head, client: client) { _ = await record(checkpoint, into: &progress) }
        try? await client?.shutdown()
    }

    /// The head a restart starts counting from: the log's, when its last event is a checkpoint's (nothing
    /// happened since); else 0, so a checkpoint is due as soon as enough was appended.
    func lastSigned() async -> UInt64 {
        let head = await coordinator.appliedSequence
        guard head > 0, let last = try? await log.read(after: head - 1, limit: 1).first, last.sequence == head else { return 0 }
        return last.stream.hasPrefix("checkpoint/") ? head : 0
    }

    /// Records `checkpoint` in the log; on success, counts from it (from its own event when nothing else
    /// was appended meanwhile, so an idle head is not signed again).
    func record(_ checkpoint: Checkpoint, into progress: inout Progress) async -> Bool {
        do {
            let result = try await coordinator.execute(.checkpoints(.record(checkpoint)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator),
                                                       now: clock())
            metrics.checkpointsSigned.increment()
            let own = result.receipt?.lastSequence ?? checkpoint.sequence
            progress.last = own == checkpoint.sequence + 1 ? own : checkpoint.sequence
            progress.pending = nil
            return true
        } catch .storage(.versionConflict) {
            // Already recorded (its stream exists): by this writer before a lost answer, or by another.
            progress.last = max(progress.last, checkpoint.sequence)
            progress.pending = nil
            return true
        } catch .rejected(let rejection) {
            // The core will never take it (it vouches for an event the log does not hold): sign afresh later.
            logger.error("checkpoint \(checkpoint.sequence) was refused: \(rejection)")
            progress.pending = nil
            return true
        } catch {
            logger.warning("checkpoint \(checkpoint.sequence) is kept elsewhere but not recorded in the log yet (trying again): \(error)")
            return false
        }
    }

    /// Signs event `sequence` and keeps the checkpoint elsewhere (the file, the witness), once; says
    /// whether the witness took it.
    func signAndKeep(_ sequence: UInt64, client: HTTPClient?) async -> (Checkpoint, posted: Bool)? {
        guard let chainHash = try? await log.chainHash(at: sequence) else {
            logger.error("cannot read event \(sequence) to sign a checkpoint of it")
            return nil
        }
        let checkpoint: Checkpoint
        do {
            checkpoint = try options.signer.sign(sequence: sequence, chainHash: chainHash.bytes, at: clock())
        } catch {
            logger.error("cannot sign a checkpoint: \(error)")
            return nil
        }
        // Elsewhere first: it is a true statement about the log whether or not its own event is recorded.
        if let directory = options.directory {
            do { try CheckpointFiles.append(checkpoint, directory: directory) } catch {
                metrics.checkpointCopiesFailed.increment()
                logger.error("cannot keep checkpoint \(checkpoint.sequence) in \(directory): \(error)")
            }
        }
        var posted = false
        if let witness = options.witness, let client { posted = await post(checkpoint, to: witness, client: client) }
        return (checkpoint, posted)
    }

    /// Posts `checkpoint` to the witness; whether it answered 2xx.
    @discardableResult
    func post(_ checkpoint: Checkpoint, to witness: URL, client: HTTPClient) async -> Bool {
        var request = HTTPClientRequest(url: witness.absoluteString)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: CheckpointFiles.line(checkpoint)))
        do {
            let response = try await client.execute(request, timeout: .seconds(5))
            guard (200..<300).contains(response.status.code) else {
                metrics.checkpointCopiesFailed.increment()
                logger.warning("the checkpoint witness \(witness) answered \(response.status.code) to checkpoint \(checkpoint.sequence)")
                return false
            }
            return true
        } catch {
            metrics.checkpointCopiesFailed.increment()
            logger.warning("the checkpoint witness \(witness) did not take checkpoint \(checkpoint.sequence): \(error)")
            return false
        }
    }
}

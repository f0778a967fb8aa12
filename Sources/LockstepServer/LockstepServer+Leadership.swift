import Foundation
import Hummingbird
import LockstepPostgres
import LockstepService
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// Several coordinators on one PostgreSQL log (docs/operations.md): standing by, taking the leadership
/// lease, serving as the writer under its epoch, and being deposed.
extension LockstepServer {
    /// The server once its PostgreSQL client runs, as one of several coordinators on the database: a
    /// standby until it holds the leadership lease, then the writer (the log fenced with its epoch, the
    /// coordinator caught up to the head, the timers and the API running in a group of their own inside
    /// the outer one), until a graceful stop (the lease is released at once) or until it is deposed (it
    /// stops serving and is a standby again).
    struct ServerOnPostgres: Service {
        let options: Options
        let metrics: ServerMetrics
        let logger: Logger

        func run() async throws {
            guard case .postgres(let client, _) = options.store else { return }
            let lease = PostgresLeadership(client: client, holder: options.leadership.holder, address: options.leadership.address,
                                           ttlMillis: options.leadership.ttlMillis, logger: logger)
            // The tables first, so the lease row exists (idempotent; serialized between coordinators).
            _ = try await PostgresEventLog.open(client: client, logger: logger)
            // Takeovers that failed in a row (each replays the log): the next waits longer, up to 8 TTLs.
            var failedTakeovers = 0
            while !Task.isShuttingDownGracefully {
                guard let (epoch, askedAt) = try await standBy(lease) else { return }
                var term = options
                term.writerEpoch = epoch
                let keeper = LeadershipKeeper(lease: lease, epoch: epoch, askedAt: askedAt, logger: logger)
                term.leadershipHeld = { keeper.isHeld }
                let server: Built
                do {
                    // The lease is kept while the server is built (catching up to the head can take longer
                    // than a TTL on a long log), then by the keeper in the server's group.
                    server = try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { try await keeper.run() }
                        let built = try await build(term, metrics: metrics, logger: logger)
                        group.cancelAll()
                        while let _ = try await group.next() {}
                        return built
                    }
                } catch let deposed as Deposed {
                    metrics.depositions.increment()
                    logger.error("deposed while taking over (epoch \(epoch)): \(deposed.reason); a standby again")
                    continue
                } catch {
                    // Catching up failed (the database went away, a damaged log): hand the lease back at once
                    // rather than hold it for a TTL with nobody writing, and stand by again after a quarter TTL
                    // (a fault that persists does not make this coordinator take and drop it in a tight loop).
                    failedTakeovers += 1
                    let pause = Duration.milliseconds(min(options.leadership.ttlMillis * 8, max(50, options.leadership.ttlMillis / 4) << min(failedTakeovers - 1, 5)))
                    logger.error("the takeover failed (epoch \(epoch)): \(PostgresEventLog.describe(error)); a standby again, asking for the lease again in \(pause)")
                    await release(lease, epoch: epoch)
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
                    continue
                }
                failedTakeovers = 0
                let services = [ServiceGroupConfiguration.ServiceConfiguration(service: keeper, failureTerminationBehavior: .gracefullyShutdownGroup)]
                    + server.services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
                do {
                    try await ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: logger)).run()
                    // A graceful stop: hand over at once instead of making a standby wait out the TTL.
                    await release(lease, epoch: epoch)
                    return
                } catch let deposed as Deposed {
                    metrics.depositions.increment()
                    logger.error("deposed as the writer (epoch \(epoch)): \(deposed.reason); stopped serving, now a standby")
                } catch {
                    // A service of the writer failed (a port taken, storage stopped): the process ends with the
                    // error, and the lease goes back first instead of lapsing a TTL later.
                    await release(lease, epoch: epoch)
                    throw error
                }
            }
        }

        /// Gives the lease held under `epoch` back (a standby takes over at once), or says why not (it
        /// lapses a TTL after its last renewal).
        func release(_ lease: PostgresLeadership, epoch: Int64) async {
            do {
                try await lease.release(epoch: epoch)
                logger.notice("released the leadership lease (epoch \(epoch))")
            } catch {
                logger.warning("the leadership lease could not be released (\(PostgresEventLog.describe(error))); a standby takes over once it lapses")
            }
        }

        /// Waits for the lease, asking every quarter TTL, serving as a replica meanwhile; its epoch and when
        /// the take that got it was sent (the lease runs a TTL from a moment after that), or nil on a
        /// graceful stop first.
        func standBy(_ lease: PostgresLeadership) async throws -> (epoch: Int64, askedAt: ContinuousClock.Instant)? {
            metrics.writerEpoch.record(0)
            func took(_ epoch: Int64, _ askedAt: ContinuousClock.Instant) -> (epoch: Int64, askedAt: ContinuousClock.Instant) {
                metrics.writerEpoch.record(epoch)
                logger.notice("took the leadership lease: the writer now, epoch \(epoch)", metadata: ["holder": "\(lease.holder)"])
                return (epoch, askedAt)
            }
            // Asked once before building a replica, which a coordinator that finds the lease free (the only
            // one, or the first) would build only to drop it.
            let first = ContinuousClock.now
            if let epoch = try? await lease.tryAcquire() { return took(epoch, first) }
            let status = StandbyStatus()
            var said: String?
            /// Reads who holds the lease into `status` (what `/readyz` and a refused write say).
            func observe() async throws {
                guard let holder = try await lease.current() else { return }
                let now = "standby: the writer is \(holder.holder.isEmpty ? "nobody yet" : holder.holder) at \(holder.address.isEmpty ? "?" : holder.address) (epoch \(holder.epoch))"
                if now != said { logger.notice("\(now)") }
                said = now
                status.text.withLock { $0 = now }
                status.writer.withLock { $0 = holder.address }
            }
            // Known before the replica serves its first read: a replica that answered while still saying
            // "waiting for the leadership lease" would send clients nowhere (a CI run caught one).
            do { try await observe() } catch {
                logger.warning("standby: the leadership lease cannot be read: \(PostgresEventLog.describe(error))")
            }
            // Both ports serve reads while standing by (`/readyz` 503 naming the writer, writes refused with
            // `not_writer`); they are released before the writer's own listeners bind them.
            return await withTaskGroup(of: Void.self) { group in
                group.addTask { await serveAsReplica(status) }
                defer { group.cancelAll() }
                while !Task.isShuttingDownGracefully {
                    do {
                        let asked = ContinuousClock.now
                        if let epoch = try await lease.tryAcquire() {
                            group.cancelAll()
                            while await group.next() != nil {}
                            return took(epoch, asked)
                        }
                        try await observe()
                    } catch {
                        logger.warning("standby: the leadership lease cannot be read: \(PostgresEventLog.describe(error))")
                    }
                    do {
                        try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(max(50, lease.ttlMillis / 4))) }
                    } catch {
                        return nil
                    }
                }
                return nil
            }
        }

        /// Serves reads as a replica (the whole API, its live state following the log; writes refused
        /// naming the writer) until cancelled. While the replica cannot be built (the database cannot be
        /// read), the JSON port answers as a bare standby (`StandbyAnswer`) and it tries again every 5 s.
        func serveAsReplica(_ status: StandbyStatus) async {
            var replica = options
            replica.writerEpoch = nil
            replica.replica = status
            while !Task.isCancelled {
                do {
                    let built = try await build(replica, metrics: metrics, logger: logger)
                    logger.notice("replica: serving reads and following the log; writes go to the writer")
                    try await ServiceGroup(configuration: ServiceGroupConfiguration(services: built.services.map { .init(service: $0) }, logger: logger)).run()
                    return
                } catch {
                    if Task.isCancelled { return }
                    logger.warning("replica: cannot serve reads (\(PostgresEventLog.describe(error))); answering as a bare standby, trying again in 5 s")
                }
                await withTaskGroup(of: Void.self) { bare in
                    bare.addTask { try? await standbyListener(status).runService() }
                    try? await Task.sleep(for: .seconds(5))
                    bare.cancelAll()
                }
            }
        }

        /// What a standby answers on the JSON port while it cannot serve as a replica.
        func standbyListener(_ status: StandbyStatus) -> some ApplicationProtocol {
            let router = Router()
            router.add(middleware: StandbyAnswer(status: status))
            return Application(router: router, configuration: .init(address: .hostname(options.httpHost, port: options.httpPort), serverName: "lockstep"),
                               logger: logger)
        }
    }

    /// What a standby says about itself and the writer.
    final class StandbyStatus: Sendable {
        let text = Mutex("standby: waiting for the leadership lease")
        /// The writer's address (gRPC `HOST:PORT`), "" while unknown.
        let writer = Mutex("")
        /// Why this replica cannot follow the log (its reads are stale), nil while it follows.
        let following = Mutex<String?>(nil)

        /// The answer to a write sent here.
        func refusal() -> APIError {
            .notWriter("this coordinator is a replica and serves reads only (\(text.withLock { $0 })); send writes to the writer",
                       writer: writer.withLock { $0 })
        }
    }

    /// A standby's answer to every request: `/healthz` 200; `/readyz` 503 saying it stands by and who
    /// writes; anything else 503 `unavailable` with the same sentence (clients move to another address).
    struct StandbyAnswer<Context: RequestContext>: RouterMiddleware {
        let status: StandbyStatus

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            let text = status.text.withLock { $0 }
            switch request.uri.path {
            case "/healthz": return Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n")))
            case "/readyz": return Response(status: .serviceUnavailable, body: ResponseBody(byteBuffer: ByteBuffer(string: text + "\n")))
            default:
                let body = (try? JSONSerialization.data(withJSONObject: ["code": "unavailable", "message": text], options: [.sortedKeys])) ?? Data()
                return Response(status: .serviceUnavailable, headers: [.contentType: "application/json", .retryAfter: "1"],
                                body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
    }

    /// No longer the writer: another coordinator holds the lease, or it could not be renewed within its TTL.
    struct Deposed: Error {
        var reason: String
    }

    /// Renews the writer's lease a third of its TTL after the last renewal that succeeded (a tenth of a
    /// TTL after a failed try); throws `Deposed` (which stops the writer's group)
    /// when the lease is another's, or when no renewal has succeeded for a whole TTL (by the monotonic
    /// clock): past that a standby may have taken over, and the fence would refuse every append anyway.
    struct LeadershipKeeper: Service {
        let lease: PostgresLeadership
        let epoch: Int64
        /// When the last renewal that succeeded was sent (at first, the take that got the lease): the
        /// lease runs a TTL from a moment after it. Kept across runs (one while the server is built, one in
        /// its group).
        let renewal: Renewal
        let logger: Logger

        /// The moment a lease was last extended from, at the earliest.
        final class Renewal: Sendable {
            private let sent: Mutex<ContinuousClock.Instant>
            init(_ sent: ContinuousClock.Instant) { self.sent = Mutex(sent) }
            var last: ContinuousClock.Instant {
                get { sent.withLock { $0 } }
                set { sent.withLock { $0 = newValue } }
            }
        }

        /// Whether the lease is still this coordinator's by its own count: a TTL from the last renewal that
        /// succeeded has not passed (the database extends it from a later moment, so this errs early).
        var isHeld: Bool { ContinuousClock.now < renewal.last + .milliseconds(lease.ttlMillis) }

        init(lease: PostgresLeadership, epoch: Int64, askedAt: ContinuousClock.Instant, logger: Logger) {
            self.lease = lease
            self.epoch = epoch
            self.renewal = Renewal(askedAt)
            self.logger = logger
        }

        func run() async throws {
            let ttl = Duration.milliseconds(lease.ttlMillis)
            var retrying = false
            while !Task.isShuttingDownGracefully {
                // A third of a TTL after the last renewal that succeeded (however long ago that was: this
                // run may follow the one during the build), and no sooner than a tenth of one after a
                // failed try.
                do {
                    try await cancelWhenGracefulShutdown {
                        try await Task.sleep(until: renewal.last + ttl / 3, clock: .continuous)
                    }
                } catch {
                    return
                }
                if Task.isCancelled { return }
                // No try runs past the lease's end: past that the lease may be another's. A renewal that
                // succeeds extends it from when the database ran it, so from when it was sent at the earliest.
                let sent = ContinuousClock.now
                let left = renewal.last + ttl - sent
                guard left > .zero else { throw Deposed(reason: "the lease could not be renewed for \(ttl)") }
                // The first try after a success may take all the time left (a slow database is not a lost
                // lease); tries after a failure a third of a TTL each.
                let bound = retrying ? min(left, ttl / 3) : left
                do {
                    guard try await lease.renew(epoch: epoch, within: bound) else {
                        throw Deposed(reason: "the leadership lease is another coordinator's, or lapsed")
                    }
                    renewal.last = sent
                    retrying = false
                } catch let deposed as Deposed {
                    throw deposed
                } catch {
                    if Task.isCancelled { return }
                    logger.warning("the leadership lease could not be renewed: \(PostgresEventLog.describe(error))")
                    if ContinuousClock.now - renewal.last >= ttl { throw Deposed(reason: "the lease could not be renewed for \(ttl)") }
                    retrying = true
                    do {
                        try await cancelWhenGracefulShutdown { try await Task.sleep(for: ttl / 10) }
                    } catch {
                        return
                    }
                }
            }
        }
    }
}

import GRPCCore
import LockstepH2
import Logging
import ServiceLifecycle
import Synchronization
import LockstepGRPC
import LockstepHTTP
import LockstepService

extension LockstepServer {
    /// A built server: its long-lived work as services, for one `ServiceGroup`, and where it listens.
    public struct Built: Sendable {
        /// In start order; a group shuts them down in reverse, one after the other: the shutdown service
        /// (last) first, which answers parked polls and ends watches, then the timers, then gRPC (it stops
        /// taking calls and finishes those in flight), then the JSON listener.
        public let services: [any Service]
        let bound: BoundAddresses

        /// The group's configuration: any service that returns or throws ends the group. Every service runs
        /// until the group shuts it down (none returns early: a service that finished while the group was
        /// shutting another down would be taken for a failure).
        public func groupConfiguration(logger: Logger) -> ServiceGroupConfiguration {
            ServiceGroupConfiguration(services: services, logger: logger)
        }

        /// The gRPC address (`HOST:PORT`) and the JSON URL once both listen; nil if the server stopped first.
        public func addresses() async -> (grpc: String, http: String)? { await bound.wait() }
    }
}

/// The listening addresses, announced once (or never: `close`).
final class BoundAddresses: Sendable {
    private struct State {
        var value: (grpc: String, http: String)?
        var closed = false
        var waiters: [UInt64: CheckedContinuation<(grpc: String, http: String)?, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }
    private let state = Mutex(State())

    func set(grpc: String, http: String) {
        let waiters = state.withLock { state in
            state.value = (grpc, http)
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        for waiter in waiters { waiter.resume(returning: (grpc, http)) }
    }

    /// The addresses, if bound (without waiting).
    var current: (grpc: String, http: String)? { state.withLock { $0.value } }

    func close() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// The addresses once bound; nil if the server stops first, or the caller is cancelled (a webhook
    /// delivery waiting for its console links' base must not outlive its task).
    func wait() async -> (grpc: String, http: String)? {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter &+= 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> (grpc: String, http: String)?? in
                    if let value = state.value { return .some(value) }
                    if state.closed || Task.isCancelled { return .some(nil) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }
}

/// The gRPC listener as a service: serves until the group shuts down, then stops taking calls and
/// finishes those in flight.
struct GRPCServerService: Service {
    let server: GRPCServer<H2GRPCServerTransport>

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The timer service (`CoordinatorTimers.run`): ends with the group.
struct TimerService: Service {
    let body: @Sendable () async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// Logs the listening addresses and writes the ready file once both listeners accept, then waits for
/// the group's shutdown (returning early would race the group's shutdown order: ServiceLifecycle reports
/// a service that ends while another is being shut down as having finished unexpectedly).
struct AnnouncerService: Service {
    let body: @Sendable () async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
        try? await gracefulShutdown()
    }
}

/// Runs `body` when the group begins its graceful shutdown, before the listeners drain (it is the last
/// service, so the first one shut down).
struct ShutdownService: Service {
    let body: @Sendable () -> Void

    func run() async throws {
        try? await gracefulShutdown()
        body()
    }
}

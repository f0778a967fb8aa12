import LockstepCore
import LockstepStore
import LockstepWire

// The coordinator's grant pass: the lease queue between migrations turned into grants, one pass at a
// time, and forced releases (docs/architecture.md, "Service leases").
extension Coordinator {

    /// Grants every service-lease request that is first in line for all its services, as the coordinator.
    ///
    /// One pass at a time: a call made while a pass runs waits for the next pass, which starts after it
    /// and so sees everything folded before the call. Lines are ordered by the requests' global
    /// sequence; two requests acknowledged by the same group commit may be folded, and so served, in
    /// either order. Grants for different migrations are appended up to `grantAppendsInFlightMax` at a
    /// time (1 makes their order follow the queue, which deterministic simulations need).
    public func grantServiceLeases(now: Instant) async {
        // The machine says whether this caller runs the pass (and the next, if any was asked for during
        // it) or waits for the pass after the running one; a pass records the latest time any caller asked with.
        var (caller, word) = await ask { .grantPassWanted($0, now: now) }
        while case .runGrantPass(let passNow, let reconcile) = word {
            if reconcile { await reconcileServiceLeases(now: passNow) }
            await runGrantPass(now: passNow)
            guard let next = feed(.grantPassDone, for: caller) else { return }
            word = next
        }
    }

    /// Records, as the coordinator, the service-lease bookkeeping that migrations of a history written
    /// before service leases existed lack (for example a running step that holds nothing).
    private func reconcileServiceLeases(now: Instant) async {
        let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "reconcile-service-leases")
        for migration in state.unsettledInOrder where !migration.serviceLeaseBookkeeping().isEmpty {
            do throws(CommandError) {
                _ = try await perform(.migration(migration.id, .reconcileServiceLeases), context: context, now: now)
            } catch {
                if case .storage = error { feed(.grantOwed(reconcile: true)) }
            }
        }
    }

    private func runGrantPass(now: Instant) async {
        let through = state.lastSequence
        let grants = state.grantableServiceRequests(through: through, at: now)
        guard !grants.isEmpty else { return }
        let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "lease-queue")
        var next = grants.startIndex
        while next < grants.endIndex {
            let batch = grants[next..<min(grants.endIndex, next + grantAppendsInFlightMax)]
            next = batch.endIndex
            if batch.count == 1, let request = batch.first {
                await grant(request, through: through, context: context, now: now)
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for request in batch {
                    group.addTask { await self.grant(request, through: through, context: context, now: now) }
                }
            }
        }
    }

    private func grant(_ request: ServiceRequest, through: UInt64, context: CommandContext, now: Instant) async {
        do throws(CommandError) {
            _ = try await perform(.serviceLeases(.grant(migration: request.migration, node: request.node, through: through)),
                                  context: context, now: now)
        } catch {
            // A refusal means the request moved on (withdrawn, paused); a storage error (busy, overloaded)
            // must not strand it: the next command, or the server's timer, runs another pass.
            switch error {
            case .storage, .overloaded: feed(.grantOwed(reconcile: false))
            case .rejected: break
            }
        }
    }

    /// Whether a grant pass is owed (a grant failed on storage, or none has run since open): the
    /// server's timer calls `grantServiceLeases` when it is.
    public var grantPassIsOwed: Bool { machine.grantPassOwed }

    /// An operator forces the holder of service `name` to give back its services (all of the holding
    /// node's, since a node holds all or none), with a reason; recorded in the holder's migration with the
    /// operator as actor. Refused while a step of the holding node runs.
    @discardableResult
    public func forceReleaseService(_ name: String, reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        guard let holder = state.holder(ofService: name) else { throw .rejected(.serviceNotLeased(name)) }
        return try await execute(.serviceLeases(.forceRelease(migration: holder.migration, node: holder.node, reason: reason)), context: context, now: now)
    }
}

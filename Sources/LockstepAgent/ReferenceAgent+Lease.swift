import LockstepClient
import LockstepCore
import LockstepWire
import Synchronization

// The reference agent's upkeep of a step's lease (docs/agent.md): heartbeats at the pace the lease can
// be kept at, a watchdog that declares it lost when no heartbeat sent within its TTL was acknowledged,
// and the bounds on what the server says of it (outside input to the agent).

/// What one step's tasks share: the latest progress line (and whether it was sent), why the lease was
/// lost, whether shutdown stopped the handler, and when the newest acknowledged heartbeat was sent.
final class StepShared: Sendable {
    let progress = Mutex<(percent: UInt32, message: String, sent: Bool)>((0, "", true))
    let lost = Mutex<String?>(nil)
    let stoppedForShutdown = Mutex(false)
    /// Why a heartbeat told the step to stop (its migration was paused under `on_pause: stop`).
    let stoppedByCoordinator = Mutex<String?>(nil)
    /// A check's findings: the value of its last `value=` line, and its other output lines (the evidence).
    let check = Mutex<(value: Double?, evidence: String)>((nil, ""))
    /// The lease is good until `acknowledgedSentAt + ttl` as far as the server has told us.
    let lease: Mutex<(acknowledgedSentAt: ContinuousClock.Instant, ttl: Duration)>

    init(ttl: Duration) { lease = Mutex((ContinuousClock.now, ttl)) }
}

extension ReferenceAgent {
    /// The shortest lease TTL a Lockstep server gives (a plan's `timeouts.heartbeat` is held to it). A
    /// step whose lease is shorter (outside input: a broken server's) cannot be kept: its handler is not run.
    package static let leaseTTLMillisMin = UInt32(CoreLimits.leaseTTLMillisMin)

    /// How often a lease of `ttlMillis` is heartbeaten: the server's `heartbeat_interval_ms`, raised to
    /// 50 ms if below, and lowered to a third of the TTL if above (an interval at or past the TTL, outside
    /// input too, would lose the lease between two heartbeats); so under 50 ms only for a TTL under 150 ms.
    package static func heartbeatPace(ttlMillis: UInt32, intervalMillis: UInt32) -> Duration {
        .milliseconds(Int(min(max(intervalMillis, 50), max(ttlMillis / 3, 1))))
    }

    /// The lease is lost: stop the handler (if it still runs) and say why.
    func lose(_ why: String, control: HandlerProcess.Control, shared: StepShared) {
        let first = shared.lost.withLock { lost in
            defer { if lost == nil { lost = why } }
            return lost == nil
        }
        if first { control.stop(grace: .seconds(2)) }
    }

    /// Heartbeats every `heartbeat_interval_ms`. A refused heartbeat means the lease is gone; a
    /// transient failure is tried again next time (the watchdog decides when it is too late).
    func heartbeats(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient, control: HandlerProcess.Control, shared: StepShared) async {
        // At the pace of the lease's current TTL: a heartbeat may answer a new one (shorter: the pace follows).
        func pace() -> Duration {
            let ttl = shared.lease.withLock { $0.ttl }
            return Self.heartbeatPace(ttlMillis: UInt32(clamping: ttl.components.seconds * 1_000 + ttl.components.attoseconds / 1_000_000_000_000_000),
                                      intervalMillis: step.heartbeatIntervalMs)
        }
        // After a transient failure the next try comes soon (it goes to the next address), not a whole
        // interval later: one stuck heartbeat must not cost the lease.
        var pause = pace()
        while !Task.isCancelled {
            do { try await Task.sleep(for: pause) } catch { return }
            // Lost (the watchdog gave up on it, or a heartbeat was refused): the agent will not report on
            // this lease, so it renews it no more (a late acknowledgement would keep the step from the next
            // agent for another TTL).
            if shared.lost.withLock({ $0 != nil }) { return }
            let every = pace()
            pause = every
            let sentAt = ContinuousClock.now
            do throws(LockstepClientError) {
                // Bounded by the interval (200 ms at least): one stuck on a server that froze gives way to
                // the next, on the next address, before the lease runs out.
                let beat = try await lockstep.heartbeat(.with {
                    $0.leaseID = step.leaseID
                    $0.fencingToken = step.fencingToken
                }, timeout: max(every, .milliseconds(200)))
                // A TTL shorter than any server gives is not believed (the watchdog would end the step at
                // once): the next heartbeat, a third of the TTL believed later at most, finds out whether the
                // lease still holds. One that is believed sets the pace of the next.
                shared.lease.withLock { lease in
                    lease.acknowledgedSentAt = max(lease.acknowledgedSentAt, sentAt)
                    if beat.ttlMs >= Self.leaseTTLMillisMin { lease.ttl = .milliseconds(Int(beat.ttlMs)) }
                }
                // The migration was paused and its plan says running steps stop: stop the handler (SIGTERM,
                // SIGKILL after the grace), keep heartbeating until it has, then report it stopped.
                // Marked as the stop is taken, before the handler can be marked finished, so the outcome reads
                // it; a handler that already ended reports how it ended.
                if beat.stop, shared.stoppedByCoordinator.withLock({ $0 == nil }),
                   control.stop(grace: Self.stopGrace, accepted: { shared.stoppedByCoordinator.withLock { $0 = beat.stopReason } }) {
                    say("\(step.migrationID)/\(step.nodeID): told to stop (\(beat.stopReason)); stopping the handler")
                }
            } catch {
                if Task.isCancelled { return }
                if error.isTransient {
                    pause = min(every / 4, .milliseconds(250))
                    continue
                }
                return lose("\(error)", control: control, shared: shared)
            }
        }
    }

    /// Declares the lease lost when no heartbeat sent within the last TTL (less a margin) has been
    /// acknowledged: the server has expired it, or is about to, whatever the calls in flight say.
    func watchLease(control: HandlerProcess.Control, shared: StepShared) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(50)) } catch { return }
            let (sentAt, ttl) = shared.lease.withLock { ($0.acknowledgedSentAt, $0.ttl) }
            let margin = min(ttl / 10, .milliseconds(500))
            if ContinuousClock.now - sentAt > ttl - margin {
                return lose("no heartbeat acknowledged within the lease's TTL (\(ttl))", control: control, shared: shared)
            }
        }
    }
}

import LockstepCore
import LockstepStore

// Freezes and stop-the-line, the shell's side: the core decides each freeze event and each pause; this
// sequences them (docs/gates.md).
extension Coordinator {
    /// What stopping the line did.
    public struct LineStop: Hashable, Sendable {
        public var freeze: Freeze
        /// The running migrations it paused, in id order.
        public var paused: [MigrationID]
        /// Running migrations it touches that it could not pause, each with why (storage, an invalid reason).
        public var notPaused: [MigrationNote]
    }

    /// What ending a freeze did.
    public struct FreezeEnd: Hashable, Sendable {
        public var freeze: Freeze
        /// The migrations its stop of the line had paused and that were resumed now, in id order.
        public var resumed: [MigrationID]
        /// Those that stay paused, each with why (another stop of the line in force covers them, a
        /// rejected gate, storage).
        public var notResumed: [MigrationNote]
    }

    /// A migration a stop or a lift left as it was, and why.
    public struct MigrationNote: Hashable, Sendable {
        public var migration: MigrationID
        public var why: String
    }

    /// Declares `freeze` (its `declaredBy` is the context's actor), then makes the nodes it holds back
    /// that hold their services without having started give them back.
    @discardableResult
    public func declareFreeze(_ freeze: Freeze, context: CommandContext, now: Instant) async throws(CommandError) -> Freeze {
        var freeze = freeze
        freeze.declaredBy = context.actor.id
        // An ended freeze has left the live state but not the log (nor, once archived, the versions the
        // log keeps of its streams): its id stays taken (the append's expected version 0 would refuse it
        // too, as a conflict no retry can resolve).
        if state.freezes[freeze.id] == nil {
            let version: UInt64
            do { version = try await log.streamVersion(of: RecordedFreezeEvent.stream(of: freeze.id)) } catch { throw .storage(error) }
            if version > 0 { throw .rejected(.freezeExists(freeze.id)) }
        }
        _ = try await execute(.freezes(.declare(freeze)), context: context, now: now)
        await yieldServicesToFreezes(now: now)
        return state.freezes[freeze.id] ?? freeze
    }

    /// Stop the line: a freeze of `services` (every service when empty) from now until it is ended,
    /// then a pause of every running migration touching them, each recorded with who and why. Running
    /// steps finish (a pause hands out no new step; reports are taken). Migrations already paused stay
    /// as they are and are not resumed by the lift. Once the freeze is recorded, what could not be
    /// paused is reported, not thrown.
    public func stopTheLine(id: String, services: [String], reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> LineStop {
        let freeze = try await declareFreeze(Freeze(id: id, services: services, from: now, until: nil, reason: reason, declaredBy: "", stopsLine: true),
                                             context: context, now: now)
        let why = "the line was stopped by \(context.actor.id) (freeze \(freeze.id) on \(freeze.scope)): \(reason)".prefix(utf8Bytes: CoreLimits.reasonBytesMax)
        var stop = LineStop(freeze: freeze, paused: [], notPaused: [])
        for migration in state.unsettledInOrder where migration.status == .running && freeze.covers(migration.plan.nodes.flatMap(\.services)) {
            do throws(CommandError) {
                _ = try await execute(.pause(reason: why, lineStop: freeze.id), migration: migration.id, context: context, now: now)
                stop.paused.append(migration.id)
            } catch {
                switch error {
                // Settled, aborting or paused meanwhile: nothing of it to stop.
                case .rejected(.alreadyPaused), .rejected(.migrationNotRunning), .rejected(.migrationSettled): continue
                default: stop.notPaused.append(MigrationNote(migration: migration.id, why: error.description))
                }
            }
        }
        return stop
    }

    /// Ends freeze `id`; when it stopped the line, resumes the migrations it paused that are still paused
    /// by it, except those another stop of the line in force covers (that stop takes them over).
    public func endFreeze(_ id: String, reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> FreezeEnd {
        guard let freeze = state.freezes[id] else { throw .rejected(.freezeNotFound(id)) }
        _ = try await execute(.freezes(.end(id: id, by: context.actor.id, reason: reason)), context: context, now: now)
        var end = FreezeEnd(freeze: freeze, resumed: [], notResumed: [])
        guard freeze.stopsLine else { return end }
        for migration in state.unsettledInOrder where migration.status == .paused && migration.lineStop == id {
            do throws(CommandError) {
                let services = migration.plan.nodes.flatMap(\.services)
                if let other = state.freezesInOrder.first(where: { $0.stopsLine && $0.isActive(at: now) && $0.covers(services) }) {
                    let why = "the line is still stopped (freeze \(other.id) on \(other.scope)): \(other.reason)".prefix(utf8Bytes: CoreLimits.reasonBytesMax)
                    _ = try await execute(.pause(reason: why, lineStop: other.id), migration: migration.id, context: context, now: now)
                    end.notResumed.append(MigrationNote(migration: migration.id, why: "freeze \(other.id) still stops the line on it"))
                    continue
                }
                _ = try await execute(.resume, migration: migration.id, context: context, now: now)
                end.resumed.append(migration.id)
            } catch {
                end.notResumed.append(MigrationNote(migration: migration.id, why: error.description))
            }
        }
        return end
    }

    /// Makes every node a freeze holds back that holds its services without having started give them
    /// back (as the coordinator), so the freeze holds up no other migration. Returns how many did.
    @discardableResult
    public func yieldServicesToFreezes(now: Instant) async -> Int {
        var yielded = 0
        for holder in state.holdersToYield(at: now) {
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "freeze")
            do throws(CommandError) {
                _ = try await execute(.serviceLeases(.yieldToFreeze(migration: holder.migration, node: holder.node)), context: context, now: now)
                yielded += 1
            } catch {
                if case .rejected = error { continue }
                timerFailures.append(error)
            }
        }
        return yielded
    }

    /// The timer's part: ends, as the coordinator, every freeze whose end time has passed at `now`
    /// (resuming what a stop of the line paused). Returns how many ended.
    @discardableResult
    public func endFreezesPastTheirEnd(now: Instant) async -> Int {
        var ended = 0
        for freeze in state.freezesPastTheirEnd(at: now) {
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "freeze-end")
            do throws(CommandError) {
                _ = try await endFreeze(freeze.id, reason: "its end time (\(freeze.until.map(String.init(describing:)) ?? "?")) passed",
                                        context: context, now: now)
                ended += 1
            } catch {
                if case .rejected = error { continue }
                timerFailures.append(error)
            }
        }
        return ended
    }
}

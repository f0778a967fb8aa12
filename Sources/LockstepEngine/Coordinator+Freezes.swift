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
    }

    /// What ending a freeze did.
    public struct FreezeEnd: Hashable, Sendable {
        public var freeze: Freeze
        /// The migrations its stop of the line had paused and that were resumed now, in id order.
        public var resumed: [MigrationID]
        /// Those that stay paused, each with why (a rejected gate, storage).
        public var notResumed: [NotResumed]
    }

    /// A migration a lift left paused, and why.
    public struct NotResumed: Hashable, Sendable {
        public var migration: MigrationID
        public var why: String
    }

    /// Declares `freeze` (its `declaredBy` is the context's actor).
    @discardableResult
    public func declareFreeze(_ freeze: Freeze, context: CommandContext, now: Instant) async throws(CommandError) -> Freeze {
        var freeze = freeze
        freeze.declaredBy = context.actor.id
        _ = try await execute(.freezes(.declare(freeze)), context: context, now: now)
        return state.freezes[freeze.id] ?? freeze
    }

    /// Stop the line: a freeze of `services` (every service when empty) from now until it is ended,
    /// then a pause of every running migration touching them, each recorded with who and why. Running
    /// steps finish (a pause hands out no new step; reports are taken). Migrations already paused stay
    /// as they are and are not resumed by the lift.
    public func stopTheLine(id: String, services: [String], reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> LineStop {
        let freeze = try await declareFreeze(Freeze(id: id, services: services, from: now, until: nil, reason: reason, declaredBy: "", stopsLine: true),
                                             context: context, now: now)
        var paused: [MigrationID] = []
        for migration in state.unsettledInOrder where migration.status == .running && freeze.covers(migration.plan.nodes.flatMap(\.services)) {
            let why = "the line was stopped by \(context.actor.id) (freeze \(freeze.id) on \(freeze.scope)): \(reason)"
            do throws(CommandError) {
                _ = try await execute(.pause(reason: String(decoding: Array(why.utf8.prefix(CoreLimits.reasonBytesMax)), as: UTF8.self), lineStop: freeze.id),
                                  migration: migration.id, context: context, now: now)
                paused.append(migration.id)
            } catch {
                // Settled, aborting or paused meanwhile: nothing of it to stop. Storage: the caller hears it.
                if case .rejected = error { continue }
                throw error
            }
        }
        return LineStop(freeze: freeze, paused: paused)
    }

    /// Ends freeze `id`; when it stopped the line, resumes the migrations it paused that are still paused by it.
    public func endFreeze(_ id: String, reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> FreezeEnd {
        guard let freeze = state.freezes[id] else { throw .rejected(.freezeNotFound(id)) }
        _ = try await execute(.freezes(.end(id: id, by: context.actor.id, reason: reason)), context: context, now: now)
        var end = FreezeEnd(freeze: freeze, resumed: [], notResumed: [])
        guard freeze.stopsLine else { return end }
        for migration in state.unsettledInOrder where migration.status == .paused && migration.lineStop == id {
            do throws(CommandError) {
                _ = try await execute(.resume, migration: migration.id, context: context, now: now)
                end.resumed.append(migration.id)
            } catch {
                end.notResumed.append(NotResumed(migration: migration.id, why: error.description))
            }
        }
        return end
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

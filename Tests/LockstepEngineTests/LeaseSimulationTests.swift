import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Testing

/// A seeded simulation of step leases: agents take steps, heartbeat, stall past their TTL, crash, report
/// late, report twice and report with an old token, while the monotonic and wall clocks move. After every
/// event the history is checked; a failure names its seed, and the same seed replays the same run.
@Suite struct LeaseSimulationTests {
    static let seedsPerBatch = 15

    struct Held { var migration: MigrationID; var node: NodeID; var token: FencingToken; var agent: String }

    @Test(arguments: 0..<4)
    func leaseInvariantsHoldUnderMisbehavingAgents(batch: Int) async throws {
        var expiries = 0
        var staleRefused = 0
        for seed in UInt64(1_000 + batch * Self.seedsPerBatch)..<UInt64(1_000 + (batch + 1) * Self.seedsPerBatch) {
            await yieldToOtherTests()
            let counts = try await run(seed: seed)
            expiries += counts.expiries
            staleRefused += counts.staleRefused
        }
        #expect(expiries > 0, "batch \(batch): no lease ever expired, so expiry was not exercised")
        #expect(staleRefused > 0, "batch \(batch): no stale report was ever tried")
    }

    func run(seed: UInt64) async throws -> (expiries: Int, staleRefused: Int) {
        var random = SeededGenerator(seed: seed)
        let log = InMemoryEventLog()
        let clock = ManualMonotonicClock()
        let coordinator = try await Coordinator.open(log: log, grantAppendsInFlightMax: 1, monotonic: clock.clock)
        let plan = randomPlan(&random)
        let id = MigrationID("sim")
        var wall: Int64 = 0
        _ = try await coordinator.start(id, plan: plan, context: user, now: t(wall))
        var held: [Held] = []
        var expiries = 0
        var staleRefused = 0
        let agents = ["agent-a", "agent-b", "agent-c"]

        for _ in 0..<400 {
            await yieldToOtherTests()
            guard let state = try await coordinator.readMigration(id), !state.status.isSettled else { break }
            switch Int.random(in: 0..<10, using: &random) {
            case 0, 1:
                // Time passes (the wall clock may even jump backwards); due leases expire.
                let millis = UInt64.random(in: 0...1_500, using: &random)
                clock.advance(millis: millis)
                wall += Int.random(in: 0..<8, using: &random) == 0 ? -3_600 : Int64(millis / 1_000 + 1)
                expiries += await coordinator.expireDueLeases(now: t(wall)).count
            case 2, 3:
                // An agent asks for any node (due or not): the coordinator decides.
                let node = plan.nodes[Int.random(in: 0..<plan.nodes.count, using: &random)].id
                let agent = agents[Int.random(in: 0..<agents.count, using: &random)]
                if let result = try? await coordinator.execute(.leaseStep(node: node, agent: agent, ttlMillis: 1_000), migration: id,
                                                                context: CommandContext(actor: Actor(kind: "agent", id: agent), triggeredBy: .agent), now: t(wall)),
                   case .stepLeased(let leased) = result.events.first?.event {
                    held.append(Held(migration: id, node: node, token: leased.token, agent: agent))
                }
            case 4:
                // Approvals from someone who did not start the migration.
                for spec in plan.nodes where state.nodeDisplayStatus(spec.id) == .awaitingApproval {
                    for index in 0..<Int(spec.approval?.minimum ?? 0) {
                        _ = try? await coordinator.execute(.approve(node: spec.id, approver: "owner-\(index)", groups: plan.approverGroups(for: spec), comment: ""),
                                                           migration: id, context: user, now: t(wall))
                    }
                }
            default:
                // A holder (current or long superseded) reports something; sometimes with a token one too old.
                guard !held.isEmpty else { continue }
                let holder = held[Int.random(in: 0..<held.count, using: &random)]
                let oldToken = Int.random(in: 0..<5, using: &random) == 0 && holder.token.rawValue > 1
                let token = oldToken ? FencingToken(holder.token.rawValue - 1) : holder.token
                let command: MigrationCommand
                switch Int.random(in: 0..<4, using: &random) {
                case 0: command = .completeStep(node: holder.node, token: token)
                case 1: command = .failStep(node: holder.node, token: token, reason: "flaky", retryable: true)
                case 2: command = .reportProgress(node: holder.node, token: token, percent: UInt8.random(in: 0...100, using: &random), message: "")
                default:
                    do { try await coordinator.heartbeat(migration: id, node: holder.node, token: token, now: t(wall)) } catch { staleRefused += 1 }
                    continue
                }
                do {
                    _ = try await coordinator.execute(command, migration: id, context: CommandContext(actor: Actor(kind: "agent", id: holder.agent), triggeredBy: .agent), now: t(wall))
                } catch {
                    staleRefused += 1
                }
            }
        }
        try await checkHistory(of: log, plan: plan, seed: seed, live: await coordinator.digest)
        return (expiries, staleRefused)
    }

    /// Reads the whole log back and checks every lease invariant event by event.
    func checkHistory(of log: InMemoryEventLog, plan: PlanSnapshot, seed: UInt64, live: StateDigest) async throws {
        var lastToken: [NodeID: FencingToken] = [:]
        var liveLease: [NodeID: FencingToken] = [:]
        var succeeded: Set<NodeID> = []
        for stored in try await log.read(after: 0, limit: EventLogLimits.readPageEventsMax) {
            guard case .migration(let recorded) = try EventRecordCodec.decodeAny(stored.record) else { continue }
            switch recorded.event {
            case .stepLeased(let leased):
                #expect(liveLease[leased.node] == nil, "seed \(seed): \(leased.node) leased at \(stored.sequence) while a lease was live")
                #expect(leased.token > lastToken[leased.node, default: FencingToken(0)], "seed \(seed): token did not grow at \(stored.sequence)")
                if leased.kind == .forward {
                    #expect(plan.node(leased.node)!.needs.allSatisfy(succeeded.contains), "seed \(seed): \(leased.node) started before its needs")
                }
                lastToken[leased.node] = leased.token
                liveLease[leased.node] = leased.token
            case .stepCompleted(let report):
                #expect(liveLease[report.node] == report.token, "seed \(seed): a report with token \(report.token) was accepted at \(stored.sequence)")
                liveLease[report.node] = nil
                if report.kind == .forward { succeeded.insert(report.node) }
            case .stepFailed(let report):
                #expect(liveLease[report.node] == report.token, "seed \(seed): a failure with token \(report.token) was accepted at \(stored.sequence)")
                liveLease[report.node] = nil
            case .stepProgress(let report):
                #expect(liveLease[report.node] == report.token, "seed \(seed): progress with token \(report.token) was accepted at \(stored.sequence)")
            case .migrationAborted(let report):
                for node in report.abandoned { liveLease[node] = nil }
            default:
                break
            }
        }
        #expect(try await History.replay(log).digest == live, "seed \(seed): replay differs from the live state")
    }
}

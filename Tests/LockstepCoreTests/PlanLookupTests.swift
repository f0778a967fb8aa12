import LockstepCore
import Testing

/// `PlanSnapshot` finds nodes and services by id through a lookup it keeps beside `nodes` and
/// `services`. These check it against a search in order, after every kind of change a caller can make.
@Suite struct PlanLookupTests {
    /// What the lookups answered before there was an index: a walk in order.
    struct Walked: Equatable, CustomStringConvertible {
        var nodeIndex: [Int?]
        var declares: [Bool]
        var approvers: [[String]]
        var needing: [[Int]]
        var timersAndWindows: [Bool]
        var transitioned: Set<String>
        var windowLevels: [[[ChangeWindow]]]
        var description: String { "\(nodeIndex) \(declares) \(approvers) \(needing) \(timersAndWindows) \(windowLevels) \(transitioned)" }

        init(_ plan: PlanSnapshot, ids: [NodeID], services: [String]) {
            nodeIndex = ids.map { id in plan.nodes.indices.first { plan.nodes[$0].id == id } }
            declares = services.map { service in plan.services.contains { $0.name == service } }
            approvers = plan.nodes.map { node in
                if let gate = node.approval, !gate.from.isEmpty { return gate.from }
                var groups: [String] = []
                for service in plan.services where node.services.contains(service.name) {
                    for owner in service.owners where !groups.contains(owner) { groups.append(owner) }
                }
                return groups
            }
            needing = ids.map { id in plan.nodes.indices.filter { plan.nodes[$0].needs.contains(id) } }
            transitioned = Set(plan.nodes.flatMap(\.services))
            timersAndWindows = [plan.nodes.contains { $0.timeouts.scheduleToStartMillis != nil },
                                !plan.windows.isEmpty || plan.services.contains { !$0.windows.isEmpty } || plan.nodes.contains { !$0.windows.isEmpty }]
            windowLevels = plan.nodes.map { node in
                var levels: [[ChangeWindow]] = plan.windows.isEmpty ? [] : [plan.windows]
                for service in plan.services where !service.windows.isEmpty && node.services.contains(service.name) { levels.append(service.windows) }
                return node.windows.isEmpty ? levels : levels + [node.windows]
            }
        }

        init(lookedUp plan: PlanSnapshot, ids: [NodeID], services: [String]) {
            nodeIndex = ids.map { plan.nodeIndex($0) }
            declares = services.map { plan.declares(service: $0) }
            approvers = plan.nodes.map { plan.approverGroups(for: $0) }
            needing = ids.map { plan.nodesNeeding($0) }
            transitioned = plan.transitionedServices
            timersAndWindows = [plan.schedulesToStart, plan.hasWindows]
            windowLevels = plan.nodes.map { plan.windowLevels(of: $0) }
        }
    }

    @Test(arguments: 0..<20)
    func lookupsAnswerAsAWalkInOrderDoesAfterEveryChange(seed: Int) {
        var random = Seeded(state: UInt64(seed) &+ 1)
        let ids = (0..<12).map { NodeID("n\($0)") }
        let names = (0..<6).map { "s\($0)" }
        func node() -> NodeSpec {
            // Ids and services repeat on purpose: lookups must find the first, as a walk does.
            var spec = NodeSpec(id: ids[random.next(ids.count)], services: (0..<(1 + random.next(3))).map { (_: Int) in names[random.next(names.count)] },
                                phase: .custom, action: "a", needs: (0..<random.next(3)).map { (_: Int) in ids[random.next(ids.count)] })
            if random.next(3) == 0 { spec.approval = ApprovalGate(minimum: 1, from: random.next(2) == 0 ? [] : ["gate-group"]) }
            if random.next(6) == 0 { spec.timeouts.scheduleToStartMillis = 60_000 }
            if random.next(6) == 0 { spec.windows = [window] }
            return spec
        }
        let window = ChangeWindow(days: 0x1F, startMinute: 540, endMinute: 1_020, zone: "UTC")
        func service() -> ServiceSpec {
            ServiceSpec(name: names[random.next(names.count)], owners: (0..<random.next(3)).map { (_: Int) in "team-\(random.next(4))" },
                        windows: random.next(4) == 0 ? [ChangeWindow(days: 0x1F, startMinute: UInt16(random.next(600)), endMinute: 1_200, zone: "UTC")] : [])
        }
        var plan = PlanSnapshot(name: "p", version: 1, contentHash: "", services: (0..<4).map { _ in service() },
                                nodes: (0..<6).map { _ in node() })
        for step in 0..<40 {
            switch random.next(12) {
            case 0: plan.nodes.append(node())
            case 1: if !plan.nodes.isEmpty { plan.nodes.remove(at: random.next(plan.nodes.count)) }
            case 2: if !plan.nodes.isEmpty { plan.nodes[random.next(plan.nodes.count)].id = ids[random.next(ids.count)] }
            case 3: plan.nodes.reverse()
            case 7: if !plan.nodes.isEmpty { plan.nodes[random.next(plan.nodes.count)].needs = [ids[random.next(ids.count)]] }
            case 8: if !plan.nodes.isEmpty { plan.nodes[random.next(plan.nodes.count)].timeouts.scheduleToStartMillis = nil }
            case 9: if !plan.nodes.isEmpty { plan.nodes[random.next(plan.nodes.count)].windows = [] }
            case 10: plan.windows = plan.windows.isEmpty ? [window] : []
            case 4: plan.services.append(service())
            case 5: if !plan.services.isEmpty { plan.services[random.next(plan.services.count)].name = names[random.next(names.count)] }
            case 6: if !plan.services.isEmpty { plan.services.swapAt(0, random.next(plan.services.count)) }
            default: plan = PlanSnapshot(name: "p", version: 1, contentHash: "", services: plan.services, nodes: plan.nodes)
            }
            let walked = Walked(plan, ids: ids + [NodeID("absent")], services: names + ["absent"])
            #expect(Walked(lookedUp: plan, ids: ids + [NodeID("absent")], services: names + ["absent"]) == walked, "seed \(seed), step \(step)")
            for (index, spec) in plan.nodes.enumerated() {
                #expect(plan.node(spec.id) == plan.nodes[walked.nodeIndex[ids.firstIndex(of: spec.id)!]!], "seed \(seed), step \(step), node \(index)")
            }
        }
    }

    @Test func theLookupIsNotPartOfEquality() {
        let nodes = [NodeSpec(id: NodeID("a"), services: ["s"], phase: .custom, action: "x"), NodeSpec(id: NodeID("b"), services: ["s"], phase: .custom, action: "x")]
        let built = PlanSnapshot(name: "p", version: 1, contentHash: "", nodes: nodes)
        var changed = PlanSnapshot(name: "p", version: 1, contentHash: "", nodes: nodes.reversed())
        #expect(changed != built)
        changed.nodes = nodes
        #expect(changed == built)
        #expect(changed.hashValue == built.hashValue)
        #expect(changed.nodeIndex(NodeID("b")) == 1 && built.nodeIndex(NodeID("b")) == 1)
    }

    /// A migration's node state is found through its plan: renamed or reordered state (which a valid log
    /// never holds) is still found, by a walk.
    @Test func aMigrationFindsItsNodesThroughThePlanAndFallsBackToAWalk() {
        let plan = PlanSnapshot(name: "p", version: 1, contentHash: "",
                                nodes: (0..<5).map { NodeSpec(id: NodeID("n\($0)"), services: ["s"], phase: .custom, action: "x") })
        var state = MigrationState(id: MigrationID("m"), plan: plan, status: .running, startedAt: t(0), statusReason: nil,
                                   nodes: plan.nodes.map { NodeState(id: $0.id) }, version: 1)
        #expect(plan.nodes.map { state.nodeIndex($0.id) } == [0, 1, 2, 3, 4])
        state.nodes.reverse()
        #expect(plan.nodes.map { state.nodeIndex($0.id) } == [4, 3, 2, 1, 0])
        #expect(state.nodeIndex(NodeID("absent")) == nil)
    }
}

import LockstepCore
@testable import LockstepPlan
import Testing

/// Lint's dependency rows (`Ancestry`) against the transitive closure walked the slow way, and the
/// findings that use them on plans of the largest size.
@Suite struct AncestryTests {
    struct Seeded {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    /// Everything `id` depends on, by following needs one by one (first node with an id, as lookups find it).
    static func walkedAncestors(of position: Int, in plan: PlanSnapshot) -> Set<Int> {
        var seen = Set<Int>()
        var pending = [position]
        while let next = pending.popLast() {
            for need in plan.nodes[next].needs {
                guard let index = plan.nodes.firstIndex(where: { $0.id == need }), seen.insert(index).inserted else { continue }
                pending.append(index)
            }
        }
        return seen
    }

    @Test(arguments: 0..<12)
    func rowsAreTheTransitiveClosure(seed: Int) {
        var random = Seeded(state: UInt64(seed) &+ 7)
        // Up to 150 nodes (more than two words a row), needs only on earlier ids (acyclic), some unknown,
        // some ids twice.
        let count = 1 + random.next(150)
        var nodes: [NodeSpec] = []
        for index in 0..<count {
            let id = random.next(20) == 0 && index > 0 ? nodes[random.next(index)].id : NodeID("n\(index)")
            let needs = index == 0 ? [] : (0..<random.next(4)).map { (_: Int) -> NodeID in
                random.next(10) == 0 ? NodeID("unknown") : nodes[random.next(index)].id
            }
            nodes.append(NodeSpec(id: id, services: ["s"], phase: .custom, action: "x", needs: needs))
        }
        let plan = PlanSnapshot(name: "p", version: 1, contentHash: "", nodes: nodes)
        guard PlanValidation.cycle(in: plan) == nil else { return }  // (a repeated id can close a loop)
        let ancestry = Ancestry(plan)
        let irreversible = Set((0..<count).filter { _ in random.next(5) == 0 })
        let mask = ancestry.row { irreversible.contains($0) }
        for node in 0..<count {
            let walked = Self.walkedAncestors(of: node, in: plan)
            let rows = Set((0..<count).filter { ancestry.depends(node, on: $0) })
            #expect(rows == walked, "seed \(seed), node \(node)")
            #expect(ancestry.depends(node, onAnyOf: mask) == !walked.isDisjoint(with: irreversible), "seed \(seed), node \(node)")
        }
    }

    @Test func aCycleEndsTheRowsShortInsteadOfLooping() {
        let plan = PlanSnapshot(name: "p", version: 1, contentHash: "", nodes: [
            NodeSpec(id: NodeID("a"), services: ["s"], phase: .custom, action: "x", needs: [NodeID("b")]),
            NodeSpec(id: NodeID("b"), services: ["s"], phase: .custom, action: "x", needs: [NodeID("a")]),
        ])
        let ancestry = Ancestry(plan)
        #expect(ancestry.depends(0, on: 1))
    }

    /// A contract node that misses many movers of its service gets one finding naming the first five,
    /// not one per mover; the plan of the largest size lints as a whole.
    @Test func missedMoversAreOneFindingPerNodeAndService() {
        var yaml = "name: p\nservices:\n  orders: { owners: [orders-team] }\nnodes:\n"
        for index in 0..<CoreLimits.planNodesMax - 1 {
            yaml += "  - { id: move-\(index), service: orders, phase: dual_write, action: x, rollback: { action: u }"
                + (index == 0 ? "" : ", needs: [move-\(index - 1)]") + " }\n"
        }
        yaml += "  - { id: contract, service: orders, phase: contract, action: x, approvals: { minimum: 1 }, irreversible: true, needs: [move-3] }\n"
        let load = PlanFile.lint(yaml: yaml)
        #expect(load.errors.map(\.message) == [
            "contract node contract does not depend on move-4, move-5, move-6, move-7, move-8 (and 990 more), which move orders's readers or writers; add them to needs",
        ])
        // Needing the last mover covers them all, through the chain.
        #expect(PlanFile.lint(yaml: yaml.replacingOccurrences(of: "irreversible: true, needs: [move-3]", with: "irreversible: true, needs: [move-998]")).errors == [])
        // A cycle through every node is named by its first twelve.
        let cycle = PlanFile.lint(yaml: yaml.replacingOccurrences(of: "id: move-0, service: orders, phase: dual_write, action: x, rollback: { action: u }",
                                                                  with: "id: move-0, service: orders, phase: dual_write, action: x, rollback: { action: u }, needs: [move-998]"))
        #expect(cycle.errors.map(\.message) == ["dependency cycle: move-0 -> move-998 -> move-997 -> move-996 -> move-995 -> move-994 -> move-993 "
                                                    + "-> move-992 -> move-991 -> move-990 -> move-989 -> move-988 -> (987 more) -> move-0"])
    }
}

import LockstepCore
import Testing

/// `NodeStates` keeps a migration's nodes in copy-on-write chunks, with a bit per node for a held step
/// lease. It must read, write, copy and compare as the array it replaced, and its leased positions must
/// always be the nodes whose `lease` is set.
@Suite struct NodeStatesTests {
    static func lease(_ token: UInt64) -> StepLease {
        StepLease(token: FencingToken(token), agent: "a", grantedAt: t(0), expiresAt: t(30))
    }

    @Test(arguments: [0, 1, 31, 32, 33, 64, 65, 200])
    func changesAtRandomReadAsTheSameChangesToAnArray(length: Int) {
        var random = Seeded(state: UInt64(length) &+ 7)
        let built = (0..<length).map { NodeState(id: NodeID("n\($0)")) }
        var nodes = NodeStates(built)
        var array = built
        var copies: [(NodeStates, [NodeState])] = []
        for round in 0..<(length == 0 ? 1 : 300) {
            if length > 0 {
                let index = random.next(length)
                switch random.next(4) {
                case 0:
                    nodes[index].lease = Self.lease(UInt64(round))
                    array[index].lease = Self.lease(UInt64(round))
                case 1:
                    nodes[index].lease = nil
                    array[index].lease = nil
                case 2:
                    nodes[index].status = .running
                    array[index].status = .running
                default:
                    var replaced = array[index]
                    replaced.attempts += 1
                    replaced.lease = random.next(2) == 0 ? nil : Self.lease(UInt64(round))
                    nodes[index] = replaced
                    array[index] = replaced
                }
            }
            if random.next(10) == 0 { copies.append((nodes, array)) }
            #expect(nodes.count == array.count)
            #expect(Array(nodes) == array)
            #expect(nodes.leased == array.indices.filter { array[$0].lease != nil })
        }
        // Copies taken along the way kept what they held when taken.
        for (copy, expected) in copies {
            #expect(Array(copy) == expected)
            #expect(copy.leased == expected.indices.filter { expected[$0].lease != nil })
            #expect((copy == NodeStates(expected)) && copy.hashValue == NodeStates(expected).hashValue)
        }
    }

    @Test func equalContentsAreEqualHoweverTheyWereBuilt() {
        let plain = (0..<40).map { NodeState(id: NodeID("n\($0)")) }
        var changed = NodeStates(plain)
        changed[35].lease = Self.lease(1)
        changed[35].lease = nil
        changed[3].status = .running
        changed[3].status = .pending
        #expect(changed == NodeStates(plain))
        #expect(changed.hashValue == NodeStates(plain).hashValue)
        changed[39].attempts = 1
        #expect(changed != NodeStates(plain))
        #expect(NodeStates(plain) != NodeStates(plain.dropLast()))
    }

    /// `MutableCollection`'s own algorithms write through the same subscript: the leased positions follow.
    @Test func swapsSortsAndReversesKeepTheLeasedPositions() {
        var array = (0..<70).map { index in
            var node = NodeState(id: NodeID("n\(index)"))
            node.attempts = UInt32((index * 37) % 70)
            if index % 9 == 0 { node.lease = Self.lease(UInt64(index)) }
            return node
        }
        var nodes = NodeStates(array)
        nodes.swapAt(0, 65)
        array.swapAt(0, 65)
        nodes.sort { $0.attempts < $1.attempts }
        array.sort { $0.attempts < $1.attempts }
        nodes.reverse()
        array.reverse()
        _ = nodes.partition { $0.lease != nil }
        _ = array.partition { $0.lease != nil }
        nodes[40...].sort { $0.attempts < $1.attempts }
        array[40...].sort { $0.attempts < $1.attempts }
        #expect(Array(nodes) == array)
        #expect(nodes.leased == array.indices.filter { array[$0].lease != nil })
        #expect(nodes.leased.count == 8)
    }

    @Test func aCopyChangedLeavesTheOriginalAsItWas() {
        let original = NodeStates((0..<100).map { NodeState(id: NodeID("n\($0)")) })
        var copy = original
        copy[70].lease = Self.lease(2)
        copy[5].status = .succeeded
        #expect(original[70].lease == nil && original[5].status == .pending && original.leased.isEmpty)
        #expect(copy.leased == [70] && copy[5].status == .succeeded)
    }
}

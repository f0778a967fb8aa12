@testable import LockstepCore
import Testing

/// `ServiceLeaseIndex.isGrantable` (a grant's own check) answers as `grantable(...).contains` does, for
/// every request of many generated lines: held services, overlapping requests, requests recorded after
/// `through`, and requests set aside.
@Suite struct GrantableTests {
    /// A small deterministic generator (SplitMix64): the same lines on every machine.
    struct Generator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
    }

    @Test func aGrantsOwnCheckAgreesWithTheListOfGrantableRequests() {
        var generator = Generator(state: 17)
        let services = ["a", "b", "c", "d", "e", "f"]
        var compared = 0
        var grantable = 0
        for _ in 0..<500 {
            var index = ServiceLeaseIndex()
            var sequence: UInt64 = 0
            for request in 0..<(1 + generator.next(10)) {
                sequence += UInt64(1 + generator.next(3))
                let names = Array(Set((0...generator.next(3)).map { _ in services[generator.next(services.count)] })).sorted()
                let node = NodeID("n\(request)")
                let migration = MigrationID("m\(generator.next(3))")
                if generator.next(4) == 0 {
                    index.apply(.serviceLeasesGranted(ServiceLeasesGranted(node: node, services: names, at: Instant(millisecondsSinceEpoch: 0))),
                                of: migration, sequence: sequence)
                } else {
                    index.apply(.serviceLeasesRequested(ServiceLeasesRequested(node: node, services: names, kind: generator.next(2) == 0 ? .forward : .rollback)),
                                of: migration, sequence: sequence)
                }
            }
            let through = UInt64(generator.next(Int(sequence) + 2))
            let asideNodes = Set(index.queue.filter { _ in generator.next(4) == 0 }.map(\.node))
            let setAside: (ServiceRequest) -> Bool = { asideNodes.contains($0.node) }
            let listed = index.grantable(through: through, setAside: setAside)
            for request in index.queue {
                let expected = listed.contains { $0.migration == request.migration && $0.node == request.node }
                #expect(index.isGrantable(migration: request.migration, node: request.node, through: through, setAside: setAside) == expected,
                        "\(request) through \(through) in \(index.queue), held \(index.holders.keys.sorted()), set aside \(asideNodes)")
                compared += 1
                if expected { grantable += 1 }
            }
            #expect(!index.isGrantable(migration: MigrationID("nobody"), node: NodeID("n0"), through: through, setAside: setAside))
        }
        // Both answers occur often enough to mean something.
        #expect(compared > 1_000 && grantable > 200 && compared - grantable > 200, "\(grantable) of \(compared)")
    }
}

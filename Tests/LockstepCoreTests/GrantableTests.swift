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

    /// The rule as written, over the whole queue in line order: a request is grantable when none of its
    /// services is held or named by an earlier request that is not set aside (the index keeps one line
    /// per service instead, and looks at the heads only).
    static func reference(_ index: ServiceLeaseIndex, through: UInt64, setAside: (ServiceRequest) -> Bool) -> [ServiceRequest] {
        var named = Set<String>()
        var result: [ServiceRequest] = []
        for request in index.queue {
            guard request.sequence <= through else { break }
            if setAside(request) { continue }
            if request.services.allSatisfy({ index.holders[$0] == nil && !named.contains($0) }) { result.append(request) }
            named.formUnion(request.services)
        }
        return result
    }

    /// The waits as written: each service's holder, or the first request before the node's own in the whole queue naming it.
    static func referenceWaits(_ index: ServiceLeaseIndex, migration: MigrationID, node: NodeID, services: [String]) -> [ServiceWait] {
        let queue = index.queue
        let position = queue.firstIndex { $0.migration == migration && $0.node == node } ?? queue.endIndex
        return services.compactMap { service in
            if let holder = index.holders[service] {
                return holder.migration == migration && holder.node == node ? nil
                    : ServiceWait(service: service, migration: holder.migration, node: holder.node, holds: true)
            }
            return queue[..<position].first { $0.services.contains(service) }.map {
                ServiceWait(service: service, migration: $0.migration, node: $0.node, holds: false)
            }
        }
    }

    /// The per-service lines answer as the whole queue would, after requests folded out of sequence
    /// order, asked again, withdrawn and granted: the grantable list (its members and their order), a
    /// grant's own check, the waits, and the queue itself against a state decoded from the same requests.
    @Test func theLinesAnswerAsTheWholeQueueDoes() {
        var generator = Generator(state: 29)
        let services = ["a", "b", "c", "d", "e", "f", "g"]
        var listed = 0
        var waited = 0
        for _ in 0..<400 {
            var index = ServiceLeaseIndex()
            var live: [(MigrationID, NodeID)] = []
            // Sequences handed out in order, folded a little out of order (as group commits acknowledge).
            var sequences = Array(UInt64(1)...UInt64(40))
            for offset in stride(from: 0, to: sequences.count - 1, by: 2) where generator.next(3) == 0 { sequences.swapAt(offset, offset + 1) }
            for sequence in sequences.prefix(8 + generator.next(30)) {
                let migration = MigrationID("m\(generator.next(4))")
                let node = NodeID("n\(generator.next(6))")
                let names = (0...generator.next(3)).map { _ in services[generator.next(services.count)] }  // duplicates too
                switch generator.next(10) {
                case 0..<6:
                    index.apply(.serviceLeasesRequested(ServiceLeasesRequested(node: node, services: names, kind: generator.next(2) == 0 ? .forward : .rollback)),
                                of: migration, sequence: sequence)
                    live.append((migration, node))
                case 6, 7:
                    if let (migration, node) = live.isEmpty ? nil : live[generator.next(live.count)] {
                        index.apply(.serviceLeasesWithdrawn(node: node, reason: "test"), of: migration, sequence: sequence)
                    }
                case 8:
                    index.apply(.serviceLeasesGranted(ServiceLeasesGranted(node: node, services: names, at: Instant(millisecondsSinceEpoch: 0))),
                                of: migration, sequence: sequence)
                default:
                    if let holder = index.holdersInOrder.first?.holder {
                        index.apply(.serviceLeasesReleased(ServiceLeasesReleased(node: holder.node, services: services, reason: "test")),
                                    of: holder.migration, sequence: sequence)
                    }
                }
            }
            let queue = index.queue
            #expect(zip(queue, queue.dropFirst()).allSatisfy { $0.sequence < $1.sequence }, "\(queue)")
            #expect(index.hasRequests == !queue.isEmpty)
            let through = UInt64(generator.next(44))
            let asideNodes = Set(queue.filter { _ in generator.next(5) == 0 }.map(\.node))
            let setAside: (ServiceRequest) -> Bool = { asideNodes.contains($0.node) }
            let expected = Self.reference(index, through: through, setAside: setAside)
            #expect(index.grantable(through: through, setAside: setAside) == expected, "through \(through) in \(queue), held \(index.holders)")
            listed += expected.count
            for request in queue {
                let node = request.node, migration = request.migration
                #expect(index.isGrantable(migration: migration, node: node, through: through, setAside: setAside)
                        == expected.contains { $0.migration == migration && $0.node == node })
                let waits = index.waits(migration: migration, node: node, services: services)
                #expect(waits == Self.referenceWaits(index, migration: migration, node: node, services: services))
                waited += waits.count
                #expect(index.hasRequests(forAnyOf: request.services))
            }
            for service in services {
                #expect(index.hasRequests(forAnyOf: [service]) == queue.contains { $0.services.contains(service) })
            }
            #expect(index.waits(migration: MigrationID("nobody"), node: NodeID("n0"), services: services)
                    == Self.referenceWaits(index, migration: MigrationID("nobody"), node: NodeID("n0"), services: services))
        }
        #expect(listed > 300 && waited > 1_000, "\(listed) listed, \(waited) waits")
    }
}

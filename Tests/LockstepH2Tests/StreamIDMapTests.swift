@testable import LockstepH2
import LockstepTestSupport
import Testing

/// The engine's map by stream id (`StreamIDMap`): the same answers as a `Dictionary` under any sequence
/// of inserts, updates and removals, including ids that all want the same slot (which the peer could
/// choose), removals in the middle of a run of them, runs that wrap past the table's end, and growth.
@Suite struct StreamIDMapTests {
    /// `map` holds exactly `model`: every id answers as the model does, and so do the counts and entries.
    func expectSame(_ map: StreamIDMap<Int>, _ model: [Int32: Int], probing ids: some Sequence<Int32>) {
        #expect(map.count == model.count)
        #expect(map.isEmpty == model.isEmpty)
        for id in ids {
            #expect(map[id] == model[id], "id \(id)")
            #expect(map.contains(id) == (model[id] != nil), "id \(id)")
        }
        let entries = Dictionary(uniqueKeysWithValues: map.entries.map { ($0.id, $0.value) })
        #expect(entries == model)
    }

    @Test(arguments: [1, 2, 3])
    func answersAsADictionaryDoesUnderRandomUse(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var map = StreamIDMap<Int>()
        var model: [Int32: Int] = [:]
        // Ids from a small range, so inserts, updates and removals of the same ids mix.
        let ids = (0..<200).map { Int32($0 * 2 + 1) }
        for step in 0..<20_000 {
            let id = ids.randomElement(using: &generator)!
            switch Int.random(in: 0..<3, using: &generator) {
            case 0, 1:
                map[id] = step
                model[id] = step
            default:
                #expect(map.removeValue(forKey: id) == model.removeValue(forKey: id))
            }
            if step % 1_000 == 0 { expectSame(map, model, probing: ids) }
        }
        expectSame(map, model, probing: ids)
        map.removeAll()
        model.removeAll()
        expectSame(map, model, probing: ids)
    }

    /// Ids that all hash to one slot: a run longer than the table's end wraps to its start, and removing
    /// from its front, middle or end keeps every other id reachable.
    @Test(arguments: [0, 3, 6])
    func collidingIdsStayReachableAfterAnyRemoval(removedAt: Int) {
        // Seven entries fill a map to 16 slots (room for 8): odd ids whose home there is the last slot.
        var map = StreamIDMap<Int>()
        let colliding = Array((1..<Int32(100_000)).lazy.filter { $0 % 2 == 1 }
            .filter { StreamIDMap<Int>.home($0, shift: 28) == 15 }.prefix(7))
        #expect(colliding.count == 7)
        var model: [Int32: Int] = [:]
        for (value, id) in colliding.enumerated() {
            map[id] = value
            model[id] = value
        }
        expectSame(map, model, probing: colliding)
        #expect(map.capacity == 8, "seven entries sit in 16 slots, so they share one run")
        #expect(map.removeValue(forKey: colliding[removedAt]) == removedAt)
        model[colliding[removedAt]] = nil
        expectSame(map, model, probing: colliding)
        // Put back, and the rest removed one by one from the other end.
        map[colliding[removedAt]] = 99
        model[colliding[removedAt]] = 99
        for id in colliding.reversed() {
            #expect(map.removeValue(forKey: id) == model.removeValue(forKey: id))
            expectSame(map, model, probing: colliding)
        }
    }

    @Test func holdsNothingUntilItsFirstEntry() {
        var map = StreamIDMap<Int>()
        #expect(map.capacity == 0 && map.isEmpty && map[1] == nil && !map.contains(1) && map.removeValue(forKey: 1) == nil)
        map.removeAll()
        #expect(map.entries.isEmpty)
        map[1] = 10
        #expect(map.capacity == 4 && map[1] == 10 && map.count == 1)
    }

    @Test func growsPastItsFirstCapacityAndAnswersForIdsItNeverHeld() {
        var map = StreamIDMap<Int>()
        var model: [Int32: Int] = [:]
        let ids = (0..<1_000).map { Int32($0 * 2 + 1) }
        for id in ids {
            map[id] = Int(id) * 10
            model[id] = Int(id) * 10
        }
        expectSame(map, model, probing: ids + [2, 4, 2_001, Int32.max, -1, 0])
        #expect(map.capacity >= 1_000)
        #expect(map[0] == nil)
        #expect(!map.contains(0))
        #expect(map.removeValue(forKey: 0) == nil)
        // Setting nil removes.
        map[ids[5]] = nil
        model[ids[5]] = nil
        expectSame(map, model, probing: ids)
    }

    @Test func asASetOfIds() {
        var set = StreamIDMap<Void>()
        set.insert(1)
        set.insert(3)
        set.insert(1)
        #expect(set.count == 2)
        #expect(set.contains(1) && set.contains(3) && !set.contains(5))
        set.remove(1)
        set.remove(7)
        #expect(set.count == 1 && !set.contains(1) && set.contains(3))
    }
}

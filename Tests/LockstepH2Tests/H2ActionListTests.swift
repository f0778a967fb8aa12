@testable import LockstepH2
import Testing

/// The list the server handler gathers one event's actions in: two kept inline, the rest (a flood's
/// terminate after them) in an array. Each action comes out once, in order, and the list is empty after.
@Suite struct H2ActionListTests {
    @Test(arguments: [0, 1, 2, 3, 5])
    func everyActionComesOutOnceInOrder(count: Int) {
        let actions = (0..<count).map { H2Action.reset(Int32($0 * 2 + 1), .cancel) }
        var list = ActionList()
        #expect(list.isEmpty)
        for action in actions { list.append(action) }
        #expect(list.isEmpty == (count == 0))
        var out: [H2Action] = []
        list.drain { out.append($0) }
        #expect(out == actions)
        #expect(list.isEmpty)
        // Drained, it holds nothing, and is used again from its first slot, its array too.
        list.drain { out.append($0) }
        #expect(out.count == count)
        let more: [H2Action] = [.awaitBody(7), .awaitBody(9), .cancelled(11, code: 8)]
        for action in more { list.append(action) }
        var again: [H2Action] = []
        list.drain { again.append($0) }
        #expect(again == more)
    }
}

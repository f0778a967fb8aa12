// What H2ServerHandler gathers while the state machine decides one event, before performing it.

/// The actions of one event, in order, kept on the stack: an event has at most two but for a flood's
/// terminate, so the array behind them is for what never happens.
struct ActionList {
    private var first: H2Action?
    private var second: H2Action?
    private var more: [H2Action] = []

    var isEmpty: Bool { first == nil }

    mutating func append(_ action: consuming H2Action) {
        if first == nil {
            first = action
        } else if second == nil {
            second = action
        } else {
            more.append(action)
        }
    }

    /// Hands each action to `body` in order, moving it out (no copy of a request's head and body).
    mutating func drain(_ body: (consuming H2Action) -> Void) {
        guard let first = first.take() else { return }
        body(first)
        guard let second = second.take() else { return }
        body(second)
        for action in more { body(action) }
        more = []
    }
}

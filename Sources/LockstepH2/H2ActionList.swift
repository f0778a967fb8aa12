// What H2ServerHandler gathers while the state machine decides one event, before performing it.

/// The actions of one event, in order, kept on the stack: an event has at most two but for a flood's
/// terminate, so the array behind them is for what never happens.
///
/// How many are held is counted, not read off the optionals: asking an `H2Action?` whether it is nil
/// went through the enum's value witnesses (`getEnumTagSinglePayload`), for a question asked once per
/// HTTP/2 event (every header field): 1.7 % of the server's samples answering JSON calls (`perf`), and
/// about 2 % more JSON calls/s once counted (docs/benchmarks-api-history.md, session 34).
struct ActionList {
    private var first: H2Action?
    private var second: H2Action?
    private var more: [H2Action] = []
    private var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func append(_ action: consuming H2Action) {
        switch count {
        case 0: first = action
        case 1: second = action
        default: more.append(action)
        }
        count += 1
    }

    /// Hands each action to `body` in order, moving it out (no copy of a request's head and body).
    mutating func drain(_ body: (consuming H2Action) -> Void) {
        let held = count
        count = 0
        guard held > 0, let first = first.take() else { return }
        body(first)
        guard held > 1, let second = second.take() else { return }
        body(second)
        guard held > 2 else { return }
        for action in more { body(action) }
        more = []
    }
}

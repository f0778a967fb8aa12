import LockstepPostgres
import Synchronization
import Testing

/// `PostgresDeadline`, without a database: a call that outlives its bound is answered for, and the calls
/// left running past their bound are limited, so a database that hangs for an hour piles up no tasks.
@Suite struct CallDeadlineTests {
    /// A call that never answers in time: its body waits until the test opens the gate (any number of
    /// bodies at once).
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if !state.open { state.waiters.append(continuation) }
                    return state.open
                }
                if now { continuation.resume() }
            }
        }
        func open() {
            let waiters = state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    final class Flag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    @Test func aCallPastItsBoundIsAnsweredForAndCounted() async throws {
        let overruns = PostgresDeadline.Overruns(callsMax: 3)
        let gate = Gate()
        // In time: its own answer.
        #expect(try await PostgresDeadline.run(within: .seconds(30), overruns: overruns) { 7 } == 7)
        #expect(overruns.count == 0)
        // Past its bound: the watchdog's answer, and the call counted while it runs on.
        for round in 1...3 {
            await #expect(throws: PostgresDeadline.Overran.self) {
                try await PostgresDeadline.run(within: .milliseconds(20), overruns: overruns) { await gate.wait(); return 0 }
            }
            #expect(overruns.count == round)
        }
        // At the limit: refused at once, its body never run.
        let ran = Flag()
        let refused = await #expect(throws: PostgresDeadline.TooManyOverrun.self) {
            try await PostgresDeadline.run(within: .seconds(30), overruns: overruns) { ran.set(); return 0 }
        }
        #expect(!ran.isSet, "the refused call's body ran")
        #expect(refused?.count == 3)
        #expect(refused.map { "\($0)" } == "3 calls to PostgreSQL are still running past their time bound; not sending another until some end")
        // The database answers again: the calls end, the count with them, and calls go through again.
        gate.open()
        try await eventually("no overruns are left", seconds: 10, every: .milliseconds(10)) { overruns.count == 0 }
        #expect(try await PostgresDeadline.run(within: .seconds(30), overruns: overruns) { 8 } == 8)
    }

    /// A body's error is the call's.
    @Test func aFailingCallFailsWithItsOwnError() async {
        struct Refused: Error {}
        let overruns = PostgresDeadline.Overruns(callsMax: 1)
        await #expect(throws: Refused.self) {
            try await PostgresDeadline.run(within: .seconds(30), overruns: overruns) { () async throws -> Int in throw Refused() }
        }
        #expect(overruns.count == 0)
    }
}

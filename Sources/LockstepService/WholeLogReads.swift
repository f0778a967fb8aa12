import LockstepCore
import Synchronization

/// History calls that read the whole log, running at once: at most `max` over all principals and
/// `perPrincipalMax` per principal. Past either, a call is refused at once with `too_many_history_reads`
/// (429, retry later), not queued: a console's as-of slider held down, or a script, cannot pile them up
/// on the server. The server keeps two: the calls that replay or check the log from its start (the state
/// at a point, a verification, a diff: `APILimits.historyReadsMax`, `historyReadsPerPrincipalMax`), and
/// exports (`exportsMax`, `exportsPerPrincipalMax`), which read at their reader's pace and hold their
/// place as long as it reads.
package final class WholeLogReads: Sendable {
    private struct State {
        var running = 0
        var byPrincipal: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// Calls at once, in calls, and per principal.
    package let max: Int
    package let perPrincipalMax: Int
    /// What the calls are, for the refusal ("history reads of the whole log (…)").
    private let what: String

    package init(max: Int, perPrincipalMax: Int, what: String = "history reads of the whole log (a state at a point, a verification, a diff)") {
        self.max = Swift.max(1, max)
        self.perPrincipalMax = Swift.max(1, perPrincipalMax)
        self.what = what
    }

    /// Calls running now (for tests and metrics).
    package var running: Int { state.withLock { $0.running } }

    /// Runs `body` in a place of `principal`'s, or refuses it when none is free.
    package func run<Result>(for principal: String, _ body: () async throws(APIError) -> Result) async throws(APIError) -> Result {
        try enter(for: principal)
        defer { leave(for: principal) }
        return try await body()
    }

    /// Takes a place of `principal`'s, or refuses the call; each place taken is given back by `leave`.
    package func enter(for principal: String) throws(APIError) {
        let admitted = state.withLock { state -> Bool in
            guard fits(principal, in: state) else { return false }
            state.running += 1
            state.byPrincipal[principal, default: 0] += 1
            return true
        }
        guard admitted else { throw refusal }
    }

    /// Whether `principal` would be admitted now (a stream's route asks before it answers 200; `enter`
    /// still decides).
    package func hasRoom(for principal: String) -> Bool {
        state.withLock { fits(principal, in: $0) }
    }

    private func fits(_ principal: String, in state: State) -> Bool {
        state.running < max && state.byPrincipal[principal, default: 0] < perPrincipalMax
    }

    /// What a call past the limits is answered.
    package var refusal: APIError {
        APIError(.tooManyHistoryReads, "\(max) \(what) run at once at most, \(perPrincipalMax) per principal; retry when one has ended")
    }

    package func leave(for principal: String) {
        state.withLock { state in
            state.running -= 1
            state.byPrincipal[principal, default: 1] -= 1
            if state.byPrincipal[principal] == 0 { state.byPrincipal[principal] = nil }
        }
    }
}

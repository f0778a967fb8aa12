import LockstepCore
import Synchronization

/// The history calls that read the whole log (the state at a sequence or time, a verification, a diff
/// of two states: each replays or checks the log from its start, a core's work for as long as the log
/// is long) running at once: at most `APILimits.historyReadsMax` over all principals and
/// `historyReadsPerPrincipalMax` per principal. Past either, a call is refused at once with
/// `too_many_history_reads` (429, retry later), not queued: a console's as-of slider held down, or a
/// script, cannot pile them up on the server.
package final class WholeLogReads: Sendable {
    private struct State {
        var running = 0
        var byPrincipal: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// Whole-log reads at once, in calls, and per principal.
    package let max: Int
    package let perPrincipalMax: Int

    package init(max: Int, perPrincipalMax: Int) {
        self.max = Swift.max(1, max)
        self.perPrincipalMax = Swift.max(1, perPrincipalMax)
    }

    /// Whole-log reads running now (for tests and metrics).
    package var running: Int { state.withLock { $0.running } }

    /// Runs `body` in a place of `principal`'s, or refuses it when none is free.
    package func run<Result>(for principal: String, _ body: () async throws(APIError) -> Result) async throws(APIError) -> Result {
        let admitted = state.withLock { state -> Bool in
            guard state.running < max, state.byPrincipal[principal, default: 0] < perPrincipalMax else { return false }
            state.running += 1
            state.byPrincipal[principal, default: 0] += 1
            return true
        }
        guard admitted else {
            throw APIError(.tooManyHistoryReads, "\(max) history reads of the whole log run at once at most, \(perPrincipalMax) per principal (a state at a "
                           + "point, a verification, a diff); retry when one has ended")
        }
        defer {
            state.withLock { state in
                state.running -= 1
                state.byPrincipal[principal, default: 1] -= 1
                if state.byPrincipal[principal] == 0 { state.byPrincipal[principal] = nil }
            }
        }
        return try await body()
    }
}

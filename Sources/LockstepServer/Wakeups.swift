/// Parked long-polls and watches, and what wakes them: every change of the live state bumps a
/// generation and resumes every parked caller, which then looks again. A caller that read generation
/// `n` before looking waits only if nothing changed since, so no change between its look and its wait
/// is missed. Parking is bounded, follows task cancellation, and ends for everyone at shutdown.
actor Wakeups {
    enum Outcome: Equatable {
        /// Something changed, or the wait timed out: look again.
        case lookAgain
        /// Too many are parked (overall or for this principal): answer now.
        case full
        /// The server is shutting down: answer now.
        case closed
        /// The waiting task was cancelled (its caller went away): stop.
        case cancelled
    }

    private(set) var generation: UInt64 = 0
    private var parked: [UInt64: (owner: String, continuation: CheckedContinuation<Void, Never>)] = [:]
    private var parkedByOwner: [String: Int] = [:]
    private var nextID: UInt64 = 0
    private var closed = false
    /// Most callers parked at once, and per principal.
    let parkedMax: Int
    let parkedPerOwnerMax: Int

    init(parkedMax: Int, parkedPerOwnerMax: Int) {
        self.parkedMax = parkedMax
        self.parkedPerOwnerMax = parkedPerOwnerMax
    }

    var parkedCount: Int { parked.count }

    func signal() {
        generation &+= 1
        let waking = parked
        parked = [:]
        parkedByOwner = [:]
        for entry in waking.values { entry.continuation.resume() }
    }

    /// Wakes everyone and parks nobody from now on (graceful shutdown).
    func close() {
        closed = true
        signal()
    }

    /// Waits until a change after generation `seen`, `millis` pass, or the task is cancelled.
    /// `enforceLimit: false` lets a caller already admitted (a watch re-parking) past the limits.
    func wait(after seen: UInt64, millis: Int, owner: String, enforceLimit: Bool = true) async -> Outcome {
        if closed { return .closed }
        if Task.isCancelled { return .cancelled }
        guard generation == seen else { return .lookAgain }
        if enforceLimit {
            guard parked.count < parkedMax, parkedByOwner[owner, default: 0] < parkedPerOwnerMax else { return .full }
        }
        let id = nextID
        nextID &+= 1
        parkedByOwner[owner, default: 0] += 1
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(millis))
            self.wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { parked[id] = (owner, $0) }
        } onCancel: {
            Task { await self.wake(id) }
        }
        timer.cancel()
        if closed { return .closed }
        return Task.isCancelled ? .cancelled : .lookAgain
    }

    private func wake(_ id: UInt64) {
        guard let entry = parked.removeValue(forKey: id) else { return }
        parkedByOwner[entry.owner, default: 1] -= 1
        if parkedByOwner[entry.owner] == 0 { parkedByOwner[entry.owner] = nil }
        entry.continuation.resume()
    }
}

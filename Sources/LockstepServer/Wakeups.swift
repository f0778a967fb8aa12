/// Parked long-polls and watches, and what wakes them: every change of the live state bumps one
/// generation and resumes the parked callers whose key it concerns (a poll's service, a watch's
/// migration), which then look again. A caller that read generation `n` before looking waits only if
/// nothing at all changed since, so no change between its look and its wait is missed, and no
/// per-key state is kept. Parking is bounded, follows task cancellation, and ends for everyone at shutdown.
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
    private var parked: [UInt64: (owner: String, key: String, continuation: CheckedContinuation<Void, Never>)] = [:]
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

    /// A change concerning `keys` (nil: everyone).
    func signal(_ keys: Set<String>? = nil) {
        generation &+= 1
        guard let keys else {
            let waking = parked
            parked = [:]
            parkedByOwner = [:]
            for entry in waking.values { entry.continuation.resume() }
            return
        }
        guard !keys.isEmpty else { return }
        for (id, entry) in parked where keys.contains(entry.key) { wake(id) }
    }

    /// Wakes everyone and parks nobody from now on (graceful shutdown).
    func close() {
        closed = true
        signal()
    }

    /// Waits until a change after generation `seen`, `millis` pass, or the task is cancelled.
    /// `enforceLimit: false` lets a caller already admitted (a watch re-parking) past the limits.
    func wait(after seen: UInt64, millis: Int, owner: String, key: String = "", enforceLimit: Bool = true) async -> Outcome {
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
            await withCheckedContinuation { parked[id] = (owner, key, $0) }
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

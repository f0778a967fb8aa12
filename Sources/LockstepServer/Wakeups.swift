/// Parked long-polls and what wakes them: every change of the live state bumps a generation and
/// resumes every parked poll, which then looks again. A poll that read generation `n` before looking
/// waits only if nothing changed since, so no change between its look and its wait is missed.
actor Wakeups {
    private(set) var generation: UInt64 = 0
    private var parked: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextID: UInt64 = 0
    /// Most polls parked at once; beyond it a poll is answered at once with a delay (`retry_after_ms`).
    let parkedMax: Int

    init(parkedMax: Int) { self.parkedMax = parkedMax }

    var parkedCount: Int { parked.count }

    func signal() {
        generation &+= 1
        let waking = parked
        parked = [:]
        for continuation in waking.values { continuation.resume() }
    }

    /// Waits until a change after generation `seen`, or `millis` pass. False when the poll could not be
    /// parked (the limit) and should be answered now.
    func wait(after seen: UInt64, millis: Int) async -> Bool {
        guard generation == seen else { return true }
        guard parked.count < parkedMax else { return false }
        let id = nextID
        nextID &+= 1
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(millis))
            self.expire(id)
        }
        await withCheckedContinuation { parked[id] = $0 }
        timer.cancel()
        return true
    }

    private func expire(_ id: UInt64) { parked.removeValue(forKey: id)?.resume() }
}

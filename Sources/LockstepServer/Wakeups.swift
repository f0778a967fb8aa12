/// Parked long-polls and what wakes them: every change of the live state bumps a generation and
/// resumes every parked poll, which then looks again. A poll that read generation `n` before looking
/// waits only if nothing changed since, so no change between its look and its wait is missed.
actor Wakeups {
    private(set) var generation: UInt64 = 0
    private var parked: [UInt64: (owner: String, continuation: CheckedContinuation<Void, Never>)] = [:]
    private var parkedByOwner: [String: Int] = [:]
    private var nextID: UInt64 = 0
    /// Most polls parked at once, and per principal; beyond either a poll is answered at once.
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

    /// Waits until a change after generation `seen`, or `millis` pass. False when the poll could not be
    /// parked (a limit) and should be answered now.
    func wait(after seen: UInt64, millis: Int, owner: String) async -> Bool {
        guard generation == seen else { return true }
        guard parked.count < parkedMax, parkedByOwner[owner, default: 0] < parkedPerOwnerMax else { return false }
        let id = nextID
        nextID &+= 1
        parkedByOwner[owner, default: 0] += 1
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(millis))
            self.expire(id)
        }
        await withCheckedContinuation { parked[id] = (owner, $0) }
        timer.cancel()
        return true
    }

    private func expire(_ id: UInt64) {
        guard let entry = parked.removeValue(forKey: id) else { return }
        parkedByOwner[entry.owner, default: 1] -= 1
        if parkedByOwner[entry.owner] == 0 { parkedByOwner[entry.owner] = nil }
        entry.continuation.resume()
    }
}

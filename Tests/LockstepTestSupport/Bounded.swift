import Synchronization

// Waits with a bound: a test whose code under test loses a wake-up, a claim or a shutdown fails within
// the bound instead of hanging the whole suite (Swift Testing's time limit cancels a test, but an await
// that ignores cancellation, such as a task's value, still waits for ever).

/// Whether `task` ends within `limit`. Waiting for a task's result cannot be cancelled, so the wait and
/// the limit each run in a task of their own, and the first to finish answers (a task that ends stops
/// the limit's; one that does not is left behind).
public func ends<Success: Sendable, Failure: Error>(_ task: Task<Success, Failure>, within limit: Duration) async -> Bool {
    let once = Once()
    return await withCheckedContinuation { (answer: CheckedContinuation<Bool, Never>) in
        let timer = Task {
            // Cancelled: the task ended, and its end answers. (Going on after a cancelled sleep raced the
            // end's answer, and a task that ended at once was once reported as not ending.)
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            // Let the jobs queued behind a pool that other tests kept busy run first (the task's own end
            // may be among them), so a starved pool is not taken for a task that never ends.
            for _ in 0..<32 { await Task.yield() }
            if once.take() { answer.resume(returning: false) }
        }
        Task {
            _ = await task.result
            if once.take() { answer.resume(returning: true) }
            timer.cancel()
        }
    }
}

/// `task`'s value, waited for at most `limit`; past that the task is cancelled and the wait fails,
/// naming `what`. The bound is for code that loses a wake-up, not for a slow machine: the whole suite
/// runs at once on two cores, and a test has been seen to stall for tens of seconds behind others.
public func value<Success: Sendable, Failure: Error>(of task: Task<Success, Failure>, within limit: Duration = .seconds(120),
                                                     _ what: String = "the task") async throws -> Success {
    guard await ends(task, within: limit) else {
        task.cancel()
        throw TestFailure("\(what) did not end within \(limit)")
    }
    return try await task.result.get()
}

/// A flag taken once.
private final class Once: Sendable {
    private let taken = Mutex(false)
    func take() -> Bool { taken.withLock { taken in defer { taken = true }; return !taken } }
}

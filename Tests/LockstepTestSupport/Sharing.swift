/// Offers the thread to the other work of the test process (of equal or higher priority) for a moment.
///
/// Every test of a run shares Swift's cooperative pool: one thread per core, two on the CI machines. A
/// test that runs seconds of CPU between real suspensions (a simulation over an in-memory log, a fuzz
/// loop: awaiting a free actor does not suspend) holds its thread all that time, and two such tests
/// hold every thread: the other tests, and the in-process servers' work off their event loops, wait,
/// and a test with a deadline can fail for want of a thread. Loops of that kind call this between
/// rounds. docs/testing.md ("Threads") has the measurements.
public func yieldToOtherTests() async {
    await Task.yield()
}

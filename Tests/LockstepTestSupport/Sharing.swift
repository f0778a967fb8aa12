/// Gives the thread back to the other tests of the process for a moment.
///
/// Every test of a run shares Swift's cooperative pool: one thread per core, two on the CI machines. A
/// test that runs seconds of CPU between real suspensions (a simulation over an in-memory log, a fuzz
/// loop: awaiting a free actor does not suspend) holds its thread all that time, and two such tests
/// hold every thread: each other test, the servers tests start in-process included, then stands still
/// for seconds, and a test with a deadline fails for want of a thread (measured: a 1 ms sleep took
/// 0.5–3 s under the whole suite). Loops of that kind call this between rounds.
public func yieldToOtherTests() async {
    await Task.yield()
}

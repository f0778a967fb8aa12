@testable import LockstepStore
import Synchronization
import Testing

/// `SQLiteAppendQueue`'s decisions, without threads: what an append, a batch, the end of a commit in
/// place and other work on the writer's queue do, at given instants.
@Suite struct SQLiteAppendQueueTests {
    typealias Queue = SQLiteAppendQueue<Int>
    let start = ContinuousClock.now

    /// A queue whose writer has committed once (taking `took`) and has been idle since `start`.
    func idleQueue(took: Duration? = .microseconds(200)) -> Queue {
        var queue = Queue()
        #expect(queue.enqueue(0, events: 1, limit: 10, rule: nil, checkpointRunning: false, now: start) == .wakeWriter)
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: start) == [0])
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: took, now: start) == [])
        #expect(queue.phase == .idle(since: start))
        return queue
    }

    @Test func anAppendToAnIdleWriterCommitsInPlaceAndTheNextWaitsForTheHandOn() {
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .commitInPlace)
        #expect(queue.phase == .committingInPlace)
        #expect(queue.enqueue(2, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .queued)
        #expect(queue.takeBatch(eventsMax: 1, lastCommitTook: nil, now: start) == [1])
        // One queued meanwhile: handed on, the writer's queue drains it.
        let end = queue.endCommitInPlace(checkpointDue: false, lastCommitTook: .microseconds(300), now: start)
        #expect(end.handOn && end.held.isEmpty)
        #expect(queue.phase == .draining && queue.lastCommitTook == .microseconds(300))
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: .microseconds(300), now: start) == [2])
        let later = start + .milliseconds(1)
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: .microseconds(400), now: later) == [])
        #expect(queue.phase == .idle(since: later) && queue.lastCommitTook == .microseconds(400))
    }

    @Test func aCommitInPlaceWithNothingQueuedLeavesTheWriterIdleUnlessACheckpointIsDue() {
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .commitInPlace)
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: start) == [1])
        let end = start + .microseconds(500)
        #expect(!queue.endCommitInPlace(checkpointDue: false, lastCommitTook: .microseconds(250), now: end).handOn)
        #expect(queue.phase == .idle(since: end))
        #expect(queue.enqueue(2, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: end) == .commitInPlace)
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: end) == [2])
        #expect(queue.endCommitInPlace(checkpointDue: true, lastCommitTook: .microseconds(250), now: end).handOn)
        #expect(queue.phase == .draining)
    }

    @Test func theWritersQueueCommitsWhenAnythingSaysSo() {
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: nil, checkpointRunning: false, now: start) == .wakeWriter, "turned off")
        queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: true, now: start) == .wakeWriter,
                "a background checkpoint runs")
        queue = idleQueue(took: nil)
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .wakeWriter,
                "no commit timed")
        queue = idleQueue()
        #expect(queue.otherWorkArrives({}) != nil)
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .wakeWriter,
                "other work on the queue")
        queue.otherWorkEnded()
        #expect(queue.otherWork == 0)
        let rule = SQLiteEventLog.CommitsInPlace()
        queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: rule, checkpointRunning: false, now: start + .microseconds(149)) == .wakeWriter,
                "idle 149 µs")
        queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: rule, checkpointRunning: false, now: start + .microseconds(150)) == .commitInPlace,
                "idle 150 µs")
        queue = idleQueue(took: .microseconds(1_001))
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: rule, checkpointRunning: false, now: start + .seconds(1)) == .wakeWriter,
                "the last commit took 1,001 µs")
    }

    /// Other work arriving during a commit in place is held, and handed back when it ends, so the
    /// appending thread, between its decision and its `sync`, never finds it ahead on the queue.
    @Test func otherWorkDuringACommitInPlaceIsHeldUntilItEnds() {
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .commitInPlace)
        #expect(queue.otherWorkArrives({}) == nil)
        #expect(queue.otherWork == 1 && queue.otherWorkHeld.count == 1)
        _ = queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: start)
        let end = queue.endCommitInPlace(checkpointDue: false, lastCommitTook: .microseconds(250), now: start)
        #expect(end.held.count == 1 && queue.otherWorkHeld.isEmpty)
        #expect(queue.otherWork == 1, "counted until it ends on the queue")
    }

    /// Work held during a commit in place is handed back in the order it arrived (the log enqueues it
    /// in that order, under the queue's lock, so later work cannot overtake it).
    @Test func heldWorkIsHandedBackInTheOrderItArrived() {
        final class Ran: Sendable { let order = Mutex<[Int]>([]) }
        let ran = Ran()
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .commitInPlace)
        for index in 0..<3 {
            #expect(queue.otherWorkArrives({ ran.order.withLock { $0.append(index) } }) == nil)
        }
        _ = queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: start)
        let end = queue.endCommitInPlace(checkpointDue: false, lastCommitTook: .microseconds(250), now: start)
        end.held.forEach { $0() }
        #expect(ran.order.withLock { $0 } == [0, 1, 2])
    }

    @Test func batchesKeepTheirLimitAndTheQueueItsOwn() {
        var queue = Queue()
        #expect(queue.enqueue(0, events: 3, limit: 10, rule: nil, checkpointRunning: false, now: start) == .wakeWriter)
        #expect(queue.enqueue(1, events: 3, limit: 10, rule: nil, checkpointRunning: false, now: start) == .queued)
        #expect(queue.enqueue(2, events: 5, limit: 10, rule: nil, checkpointRunning: false, now: start)
                == .refuse(.overloaded("6 events are waiting for a commit; the limit is 10 events")))
        #expect(queue.enqueue(3, events: 4, limit: 10, rule: nil, checkpointRunning: false, now: start) == .queued)
        #expect(queue.takeBatch(eventsMax: 6, lastCommitTook: nil, now: start) == [0, 1])
        #expect(queue.takeBatch(eventsMax: 1, lastCommitTook: nil, now: start) == [3], "at least one append")
        #expect(queue.queuedEvents == 0)
    }

    /// Writes stop (a checkpoint failed on its own queue) during a commit in place: the queued append is
    /// refused by the stop, the batch is empty, and the commit's end leaves the writer idle.
    @Test func aStopDuringACommitInPlaceLeavesTheWriterIdle() {
        var queue = idleQueue()
        #expect(queue.enqueue(1, events: 1, limit: 10, rule: .always, checkpointRunning: false, now: start) == .commitInPlace)
        #expect(queue.stop(.writesStopped(reason: "checkpoint failed")) == [1])
        #expect(queue.takeBatch(eventsMax: 10, lastCommitTook: nil, now: start) == [])
        #expect(queue.phase == .committingInPlace)
        #expect(!queue.endCommitInPlace(checkpointDue: false, lastCommitTook: .microseconds(200), now: start).handOn)
        #expect(queue.phase == .idle(since: start))
    }

    @Test func stoppingReturnsTheQueuedAndRefusesTheRest() {
        var queue = Queue()
        _ = queue.enqueue(0, events: 1, limit: 10, rule: nil, checkpointRunning: false, now: start)
        _ = queue.enqueue(1, events: 1, limit: 10, rule: nil, checkpointRunning: false, now: start)
        #expect(queue.stop(.writesStopped(reason: "disk")) == [0, 1])
        #expect(queue.stop(.writesStopped(reason: "later")) == [])
        #expect(queue.enqueue(2, events: 1, limit: 10, rule: nil, checkpointRunning: false, now: start) == .refuse(.writesStopped(reason: "disk")))
    }
}

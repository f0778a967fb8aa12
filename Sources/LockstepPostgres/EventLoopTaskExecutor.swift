import NIOCore

/// Runs a task's jobs on one SwiftNIO event loop: an append transaction's code runs on the thread of
/// the connection it talks to, so each of its round trips resumes without a switch to another thread
/// (on one writer those switches were half of the log's CPU time; see docs/benchmarks.md).
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

import NIOCore

/// Runs a task's jobs on one SwiftNIO event loop. A connection's requests run in a task group on the
/// connection's own loop: a request reaches its handler, and a default actor it calls (the coordinator),
/// on the thread that read it, and its answer is written there, with no thread switch on the way
/// (a task executor preference is inherited by child tasks, and default actors run their jobs on it:
/// SE-0417). docs/http2-engine.md, "Where requests run".
package final class LoopTaskExecutor: TaskExecutor {
    package let loop: any EventLoop

    package init(_ loop: any EventLoop) { self.loop = loop }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

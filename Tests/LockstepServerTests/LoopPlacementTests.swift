import LockstepH2
import NIOCore
import NIOPosix
import Testing

/// Where a connection's requests run (`LoopTaskExecutor`): on its event loop, and so does a default actor
/// they call (the coordinator is one) while it is free, so the request, the actor and the answer share the
/// thread that read the request; work asked for from Swift's global executor leaves the loop, and so does
/// the actor it calls.
@Suite struct LoopPlacementTests {
    actor Counter {
        var calls = 0
        func call(_ loop: any EventLoop) -> Bool {
            calls += 1
            return loop.inEventLoop
        }
    }

    @Test func aRequestsTaskAndTheActorItCallsRunOnTheLoopUnlessTheGlobalExecutorIsAskedFor() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let counter = Counter()
        let (onLoop, actorOnLoop, globalOnLoop, actorFromGlobal, backOnLoop) = await withTaskExecutorPreference(LoopTaskExecutor(loop)) {
            let onLoop = loop.inEventLoop
            let actorOnLoop = await counter.call(loop)
            let (globalOnLoop, actorFromGlobal) = await withTaskExecutorPreference(globalConcurrentExecutor) {
                (loop.inEventLoop, await counter.call(loop))
            }
            return (onLoop, actorOnLoop, globalOnLoop, actorFromGlobal, loop.inEventLoop)
        }
        #expect(onLoop && actorOnLoop && backOnLoop, "the request's task and the actor it calls run on the loop")
        #expect(!globalOnLoop && !actorFromGlobal, "work on the global executor, and the actor it calls, run elsewhere")
        #expect(await counter.calls == 2)
    }
}

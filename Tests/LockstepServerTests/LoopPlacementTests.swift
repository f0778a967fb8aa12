import LockstepH2
import LockstepService
import NIOCore
import NIOPosix
import Testing

/// Where work runs: a connection's requests on its event loop (`LoopTaskExecutor`, so a request and a
/// default actor it calls run on the thread that read it), and what may take long (`offLoop`: a replay,
/// a whole-log verify, a large plan's parse) on Swift's global executor, never holding a loop.
@Suite struct LoopPlacementTests {
    actor Counter {
        var calls = 0
        func call(_ loop: any EventLoop) -> Bool {
            calls += 1
            return loop.inEventLoop
        }
    }

    @Test func aRequestsTaskAndTheActorItCallsRunOnTheLoopAndOffLoopLeavesIt() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let counter = Counter()
        let (onLoop, actorOnLoop, offLoopOnLoop, actorFromOffLoop, backOnLoop) = try await withTaskExecutorPreference(LoopTaskExecutor(loop)) {
            () async throws(APIError) -> (Bool, Bool, Bool, Bool, Bool) in
            let onLoop = loop.inEventLoop
            let actorOnLoop = await counter.call(loop)
            let (offLoopOnLoop, actorFromOffLoop) = try await offLoop { () async throws(APIError) -> (Bool, Bool) in
                (loop.inEventLoop, await counter.call(loop))
            }
            return (onLoop, actorOnLoop, offLoopOnLoop, actorFromOffLoop, loop.inEventLoop)
        }
        #expect(onLoop && actorOnLoop && backOnLoop, "the request's task and the actor it calls run on the loop")
        #expect(!offLoopOnLoop && !actorFromOffLoop, "offLoop's work, and the actor it calls, run elsewhere")
        #expect(await counter.calls == 2)
    }

    @Test func offLoopPassesItsErrorOn() async {
        await #expect(throws: APIError(.invalidRequest, "no")) {
            try await offLoop { () async throws(APIError) -> Int in throw APIError(.invalidRequest, "no") }
        }
    }
}

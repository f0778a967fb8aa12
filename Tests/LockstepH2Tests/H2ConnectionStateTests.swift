import LockstepH2
import NIOCore
import Testing

/// The engine's own limits, decided by the pure state machine from tables of events (no socket, no
/// libnghttp2): what libnghttp2 1.52 does not enforce.
@Suite struct H2ConnectionStateTests {
    static let second: UInt64 = 1_000_000_000

    func state(_ configure: (inout H2Limits) -> Void = { _ in }) -> H2ConnectionState {
        var limits = H2Limits()
        configure(&limits)
        return H2ConnectionState(limits: limits, nowNanos: 0)
    }

    func request(_ id: Int32, path: String = "/echo", extra: [(String, String)] = []) -> [H2Event] {
        [.requestBegan(id), .header(id, name: ":method", value: "GET"), .header(id, name: ":scheme", value: "http"),
         .header(id, name: ":authority", value: "here"), .header(id, name: ":path", value: path)]
            + extra.map { .header(id, name: $0.0, value: $0.1) }
    }

    func feed(_ state: inout H2ConnectionState, _ events: [H2Event], at now: UInt64 = 0) -> [H2Action] {
        events.flatMap { state.on($0, nowNanos: now) }
    }

    @Test func aCompleteRequestIsDispatchedWithItsHeadAndNoPseudoHeaders() {
        var state = state()
        let actions = feed(&state, request(1, extra: [("accept", "application/json")]) + [.headersEnded(1, endStream: true)])
        #expect(actions == [.dispatch(1, H2RequestHead(method: "GET", scheme: "http", authority: "here", path: "/echo",
                                                       headers: [("accept", "application/json")]), body: ByteBuffer())])
        #expect(state.handlersInFlight == 1)
    }

    @Test func aBodyIsHandedOverWholeAndEachChunkGoesBackToTheWindowsAsItArrives() {
        var state = state()
        // A body larger than the stream window must be able to arrive: its bytes are given back at once.
        #expect(feed(&state, request(1) + [.headersEnded(1, endStream: false), .data(1, ByteBuffer(string: "hel")),
                                          .dataFrame(1, length: 3, endStream: false), .data(1, ByteBuffer(string: "lo"))])
                    == [.consume(1, bytes: 3, streamOpen: true), .consume(1, bytes: 2, streamOpen: true)])
        let actions = feed(&state, [.dataFrame(1, length: 2, endStream: true)])
        guard case .dispatch(1, _, let body)? = actions.first, actions.count == 1 else { Issue.record("\(actions)"); return }
        #expect(String(buffer: body) == "hello")
    }

    @Test func trailersEndARequestAsEndStreamOnDataDoes() {
        var state = state()
        _ = feed(&state, request(1) + [.headersEnded(1, endStream: false), .data(1, ByteBuffer(string: "body"))])
        let actions = feed(&state, [.otherHeaders(1, length: 12, endStream: true)])
        guard case .dispatch(1, _, let body)? = actions.first, actions.count == 1 else { Issue.record("\(actions)"); return }
        #expect(String(buffer: body) == "body")
    }

    @Test func requestBytesHeldPerConnectionAreCappedAndTheRequestOverIsRefused() {
        var state = state { $0.connectionBufferedBytesMax = 10 }
        _ = feed(&state, request(1) + [.headersEnded(1, endStream: false)] + request(3) + [.headersEnded(3, endStream: false)])
        #expect(feed(&state, [.data(1, ByteBuffer(string: "1234567"))]) == [.consume(1, bytes: 7, streamOpen: true)])
        #expect(feed(&state, [.data(3, ByteBuffer(string: "abcd"))]) == [.reset(3, .refusedStream), .consume(3, bytes: 4, streamOpen: true)])
        // Stream 1's bytes are no longer held once it is handed over: room for a new request.
        #expect(feed(&state, [.dataFrame(1, length: 7, endStream: true)]).count == 1)
        _ = feed(&state, request(5) + [.headersEnded(5, endStream: false)])
        #expect(feed(&state, [.data(5, ByteBuffer(string: "0123456789"))]) == [.consume(5, bytes: 10, streamOpen: true)])
    }

    @Test func aHeaderListOverItsBytesIsAnswered431AndKeepsNothing() {
        var state = state { $0.headerListBytesMax = 200 }
        // ":method GET" is 10 + 32 bytes; four pseudo-headers and a 100-byte value pass 200.
        let actions = feed(&state, request(1, extra: [("x-big", String(repeating: "a", count: 100))]) + [.headersEnded(1, endStream: true)])
        #expect(actions == [.answer(1, status: 431)])
        #expect(state.handlersInFlight == 0)
        // The next request on the connection is served.
        #expect(feed(&state, request(3) + [.headersEnded(3, endStream: true)]).count == 1)
    }

    @Test func aHeaderListTheSessionFoundTooLargeIsAnswered431AndAnAbusiveOneClosesTheConnection() {
        var state = state()
        // `H2HeaderBudget` in the session decides on the bytes as received; the fields after are not decoded.
        let actions = feed(&state, request(1, extra: [("x-kept", "v")]) + [.headerListTooLarge(1), .headersEnded(1, endStream: true)])
        #expect(actions == [.answer(1, status: 431)])
        #expect(feed(&state, request(3) + [.headerListAbusive(3)]) == [.terminate(.enhanceYourCalm, reason: "a header block past 4× its limits (16384 bytes, 100 fields)")])
        #expect(feed(&state, request(5) + [.headersEnded(5, endStream: true)]).isEmpty)
    }

    @Test func theHundredAndFirstFieldIsAnswered431() {
        var state = state()
        let hundred = (1...96).map { ("x-\($0)", "v") }  // 4 pseudo-headers + 96 = 100 fields
        #expect(feed(&state, request(1, extra: hundred) + [.headersEnded(1, endStream: true)]).count == 1)
        #expect(feed(&state, request(3, extra: hundred + [("x-one-more", "v")]) + [.headersEnded(3, endStream: true)]) == [.answer(3, status: 431)])
    }

    @Test func aBodyOverItsLimitIsAnswered413AndLaterBytesAreGivenBackAtOnce() {
        var state = state { $0.requestBodyBytesMax = 4 }
        _ = feed(&state, request(1) + [.headersEnded(1, endStream: false)])
        #expect(feed(&state, [.data(1, ByteBuffer(string: "12345"))]) == [.answer(1, status: 413), .consume(1, bytes: 5, streamOpen: true)])
        #expect(feed(&state, [.data(1, ByteBuffer(string: "678"))]) == [.consume(1, bytes: 3, streamOpen: true)])
        #expect(feed(&state, [.dataFrame(1, length: 3, endStream: true)]) == [])
        #expect(state.handlersInFlight == 0)
    }

    @Test func aBodyNotEndedInTimeIsAnswered408AndLaterBytesAreGivenBackAtOnce() {
        var state = state { $0.requestBodyMillisMax = 1_500 }
        // A request with its body to come asks for the check; one ended by its head does not.
        #expect(feed(&state, request(1) + [.headersEnded(1, endStream: false)]) == [.awaitBody(1)])
        #expect(feed(&state, request(3) + [.headersEnded(3, endStream: true)]).count == 1)
        _ = feed(&state, [.data(1, ByteBuffer(string: "{"))])
        #expect(state.bodyOverdue(1) == [.answer(1, status: 408)])
        #expect(feed(&state, [.data(1, ByteBuffer(string: " "))]) == [.consume(1, bytes: 1, streamOpen: true)])
        #expect(feed(&state, [.dataFrame(1, length: 1, endStream: true)]) == [], "a refused request is never handed over")
        // Checked again, or for a request already handed over, nothing happens.
        #expect(state.bodyOverdue(1) == [] && state.bodyOverdue(3) == [] && state.bodyOverdue(99) == [])
        // Without the limit nothing is asked.
        var unlimited = self.state()
        #expect(feed(&unlimited, request(1) + [.headersEnded(1, endStream: false)]) == [])
    }

    @Test func handlersStillRunningOnResetStreamsCountAgainstTheStreamLimit() {
        var state = state { $0.concurrentStreamsMax = 2 }
        for id: Int32 in [1, 3] {
            _ = feed(&state, request(id) + [.headersEnded(id, endStream: true)])
            // Rapid reset: the client resets at once; the handler is told, and still counts until it finishes.
            #expect(feed(&state, [.streamClosed(id, code: 8)]) == [.cancelled(id, code: 8)])
        }
        #expect(feed(&state, [.requestBegan(5)]) == [.reset(5, .refusedStream)])
        state.handlerFinished(1)
        #expect(feed(&state, request(7) + [.headersEnded(7, endStream: true)]).count == 1)
    }

    @Test func aStreamClosedBeforeItsRequestEndedReleasesWhatItHeld() {
        var state = state { $0.connectionBufferedBytesMax = 4 }
        _ = feed(&state, request(1) + [.headersEnded(1, endStream: false), .data(1, ByteBuffer(string: "abc"))])
        #expect(feed(&state, [.streamClosed(1, code: 8)]) == [])
        _ = feed(&state, request(3) + [.headersEnded(3, endStream: false)])
        #expect(feed(&state, [.data(3, ByteBuffer(string: "defg"))]) == [.consume(3, bytes: 4, streamOpen: true)])
    }

    @Test(arguments: [
        (H2Event.ping, 20, UInt64(5)),
        (H2Event.settings, 10, UInt64(2)),
        (H2Event.dataFrame(1, length: 0, endStream: false), 100, UInt64(10)),
    ])
    func floodsAreCutOffAtTheirBurstAndAllowedAtTheirRate(event: H2Event, burst: Int, perSecond: UInt64) {
        var state = state()
        _ = feed(&state, request(1) + [.headersEnded(1, endStream: false)])
        // A steady client at the rate is never cut off, however long it runs.
        for tick in 0..<UInt64(200) {
            #expect(state.on(event, nowNanos: tick * Self.second / perSecond) == [], "tick \(tick)")
        }
        // A burst: exactly `burst` more pass (the bucket refilled over a long quiet spell), the next closes.
        let later = 1_000 * Self.second
        for index in 0..<burst { #expect(state.on(event, nowNanos: later) == [], "frame \(index)") }
        guard case .terminate(.enhanceYourCalm, let reason)? = state.on(event, nowNanos: later).first else {
            Issue.record("not cut off")
            return
        }
        #expect(reason.contains("\(burst) at once"))
        // Once closing, nothing else is decided.
        #expect(state.on(.requestBegan(9), nowNanos: later) == [])
    }

    @Test func aClockThatJumpsFarDoesNotOverflowTheBuckets() {
        var state = state()
        #expect(state.on(.ping, nowNanos: .max) == [])
        #expect(state.on(.ping, nowNanos: 0) == [], "a clock read out of order takes a token without refilling")
    }
}

import Logging
import NIOCore

/// Serves HTTP/2 on one connection with libnghttp2 (`H2Session`), deciding with `H2ConnectionState`: this
/// handler only moves bytes and performs the state machine's actions. Bytes in go to the session as they
/// arrive; bytes out are gathered into one buffer and written once per read burst or per loop tick.
public final class H2ServerHandler: ChannelInboundHandler, RemovableChannelHandler, H2SessionDelegate {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let session: H2Session
    var state: H2ConnectionState
    private let responder: any H2Responder
    let logger: Logger
    private let clock: @Sendable () -> UInt64
    var context: ChannelHandlerContext?
    /// Streams handed to the application and not closed, each with the promise behind its
    /// `H2Response.closed`, made only when someone asks (most answers never do: a promise is an allocation
    /// and, for a generic class, run-time metadata look-ups when it is made and freed).
    var open = StreamIDMap<ClosedListener>()

    struct ClosedListener {
        var promise: EventLoopPromise<UInt32>?
    }
    /// Writers waiting for their stream's buffer to drain (`H2Response.write`'s future), one per stream,
    /// each with its stall cut-off.
    var pacing = StreamIDMap<(promise: EventLoopPromise<Void>, stall: Scheduled<Void>?)>()
    /// Requests that were waiting for their body, in arrival order, each with when it is overdue
    /// (`requestBodyMillisMax`, the same for every request, so the first is always the soonest). One
    /// timer, armed for the first, checks them: a request per timer cost a scheduled task per POST. Those
    /// handed over or closed leave from the front as soon as they get there.
    private var awaitingBody = CircularBuffer<(id: Int32, dueNanos: UInt64)>()
    private var bodyTimer: Scheduled<Void>?
    /// Inside `channelRead`: answers given now are flushed by `channelReadComplete`.
    private var reading = false
    private var flushScheduled = false
    private var draining = false
    private var closing = false
    private var closed = false

    let observer: (any H2StreamObserver)?
    /// Armed while no stream is open: GOAWAY and close at `connectionIdleMillisMax`.
    private var idleTimer: Scheduled<Void>?
    /// Armed by a graceful shutdown: close at `shutdownGraceMillis`, whatever is still in flight.
    private var graceTimer: Scheduled<Void>?
    /// The keepalive check, and when the connection last read anything and last pinged (monotonic ns).
    private var keepalive: Scheduled<Void>?
    private var lastReadNanos: UInt64 = 0
    private var pingSentNanos: UInt64?
    /// Streams the client reset, until they close (what the observer counts).
    private var resetByPeer = StreamIDMap<Void>()

    /// `clock` gives monotonic nanoseconds (the flood limits' buckets); tests pass their own.
    public init(limits: H2Limits, responder: any H2Responder, logger: Logger, observer: (any H2StreamObserver)? = nil,
                clock: @escaping @Sendable () -> UInt64 = { NIODeadline.now().uptimeNanoseconds }) throws {
        self.observer = observer
        session = try H2Session(limits: limits)
        state = H2ConnectionState(limits: limits, nowNanos: clock())
        self.responder = responder
        self.logger = logger
        self.clock = clock
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        session.delegate = self
        // Our SETTINGS go out first, before the client's preface is read.
        if context.channel.isActive {
            armIdle(context)
            startKeepalive(context)
            flush()
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        armIdle(context)
        startKeepalive(context)
        flush()
        context.fireChannelActive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        session.delegate = nil
        release()
        self.context = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    /// The connection is gone: timers stop, every open stream's `closed` completes, waiting writers fail.
    private func release() {
        stopKeepalive()
        idleTimer?.cancel()
        idleTimer = nil
        graceTimer?.cancel()
        graceTimer = nil
        // Emptied first: a close callback that asks `closed` for another stream gets a completed future,
        // not a promise nobody would complete.
        let listeners = open.entries
        open.removeAll()
        for (_, listener) in listeners { listener.promise?.succeed(0) }
        for (id, _) in pacing.entries { dropWriter(id) }  // dropWriter changes the map
        bodyTimer?.cancel()
        bodyTimer = nil
        awaitingBody.removeAll()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        lastReadNanos = clock()
        pingSentNanos = nil
        reading = true
        defer { reading = false }
        if let failed = session.receive(unwrapInboundIn(data)) {
            logger.notice("closing an HTTP/2 connection: \(failed)")
            closeAfterDraining()
        }
    }

    /// Decides an event as libnghttp2 reports it (inside its callback) and performs the actions.
    public func session(_ event: consuming H2Event) {
        // The session reports only between handlerAdded and handlerRemoved (the delegate is set after the
        // context and cleared before it), so actions always have a context to be performed on.
        assert(context != nil, "an HTTP/2 event with no channel to act on")
        // What is done after the state machine, noted before it takes the event: only a stream opening or
        // closing changes what is tracked, and a header field, the commonest event, needs nothing more.
        enum After { case nothing, opened, closed(Int32, code: UInt32), peerReset(Int32) }
        let after: After
        switch event {
        case .requestBegan: after = .opened
        case .streamClosed(let id, let code): after = .closed(id, code: code)
        case .peerReset(let id): after = .peerReset(id)
        default: after = .nothing
        }
        let before = state.streamsTracked
        // Gathered first, performed after: performing reads and changes `state` too. Within a read, the
        // time it began (the flood limits' buckets need no finer clock): one clock read per read, not per frame.
        var actions = ActionList()
        state.on(event, nowNanos: reading ? lastReadNanos : clock()) { actions.append($0) }
        if !actions.isEmpty, let context { actions.drain { perform($0, context: context) } }
        switch after {
        case .nothing:
            break
        case .opened:
            guard state.streamsTracked > before else { return }
            observer?.streamOpened()
            if let idle = idleTimer {
                idle.cancel()
                idleTimer = nil
            }
        case .closed(let id, let code):
            open.removeValue(forKey: id)?.promise?.succeed(code)
            dropWriter(id)
            forgetBodiesArrived()
            let reset = !resetByPeer.isEmpty && resetByPeer.removeValue(forKey: id) != nil
            let tracked = state.streamsTracked
            if tracked < before { observer?.streamClosed(reset: reset) }
            if tracked == 0, let context { armIdle(context) }
        case .peerReset(let id):
            resetByPeer.insert(id)
        }
    }

    /// Pings a connection that has been silent for `keepaliveMillis`, and closes it if it stays silent
    /// `keepaliveTimeoutMillis` more (checked every quarter of the shorter of the two).
    private func startKeepalive(_ context: ChannelHandlerContext) {
        guard keepalive == nil, let millis = state.limits.keepaliveMillis, millis > 0 else { return }
        lastReadNanos = clock()
        scheduleKeepalive(context, silentMillis: millis)
    }

    private func scheduleKeepalive(_ context: ChannelHandlerContext, silentMillis: Int64) {
        let timeout = max(1, state.limits.keepaliveTimeoutMillis)
        let every = TimeAmount.milliseconds(max(10, min(silentMillis, timeout) / 4))
        keepalive = context.eventLoop.assumeIsolated().scheduleTask(in: every) { [self] in
            guard !closing, self.context != nil else { return }
            let now = clock()
            if let sent = pingSentNanos {
                if now &- sent >= UInt64(timeout) * 1_000_000 {
                    logger.notice("closing an HTTP/2 connection: no answer to a PING in \(timeout) ms")
                    closeAfterDraining()
                    return
                }
            } else if now &- lastReadNanos >= UInt64(silentMillis) * 1_000_000 {
                pingSentNanos = now
                session.ping()
                flush()
            }
            scheduleKeepalive(context, silentMillis: silentMillis)
        }
    }

    private func stopKeepalive() {
        keepalive?.cancel()
        keepalive = nil
    }

    private func armIdle(_ context: ChannelHandlerContext) {
        guard idleTimer == nil, let millis = state.limits.connectionIdleMillisMax, !closing else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(millis)) { [self] in
            idleTimer = nil
            guard state.streamsTracked == 0, !closing else { return }
            logger.debug("closing an idle HTTP/2 connection")
            session.goaway()
            closeAfterDraining()
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        flush()
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flush() }
        context.fireChannelWritabilityChanged()
    }

    /// A graceful shutdown (`ChannelShouldQuiesceEvent`): GOAWAY naming the last stream taken; the
    /// streams in flight finish, then the connection closes; at `shutdownGraceMillis` it closes anyway.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            session.goaway()
            flush()
            if graceTimer == nil, let millis = state.limits.shutdownGraceMillis {
                graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(max(0, millis))) { [self] in
                    graceTimer = nil
                    guard let context = self.context, !closed, context.channel.isActive else { return }
                    logger.notice("closing an HTTP/2 connection still open \(millis) ms after the shutdown began (shutdown_grace)")
                    close(context)
                }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/2 connection error: \(error)")
        context.close(promise: nil)
    }

    // MARK: Actions

    private func perform(_ action: consuming H2Action, context: ChannelHandlerContext) {
        switch consume action {
        case .dispatch(let id, let head, let body):
            forgetBodiesArrived()
            open[id] = ClosedListener()
            let response = H2Response(handler: NIOLoopBound(self, eventLoop: context.eventLoop), stream: id)
            responder.respond(to: H2Request(stream: id, head: head, body: body, channel: context.channel), response)
        case .answer(let id, let status):
            let refusal = responder.refusal(status: status)
            do {
                try session.respond(id, status: refusal.status, headers: refusal.headers, body: refusal.body != nil)
                if let body = refusal.body {
                    // Small (an error document), and written once: within the response buffer's limit.
                    if !session.write(id, body) { session.reset(id, .internalError) } else { session.finish(id, trailers: nil) }
                }
            } catch {
                session.reset(id, .internalError)
            }
        case .awaitBody(let id):
            guard let millis = state.limits.requestBodyMillisMax else { break }
            let (product, overflow) = UInt64(clamping: max(0, millis)).multipliedReportingOverflow(by: 1_000_000)
            let (sum, past) = (reading ? lastReadNanos : clock()).addingReportingOverflow(product)
            let due = overflow || past ? UInt64.max : sum
            // Those handed over behind a slow first one wait to leave from the front; past twice the
            // streams a client may have open at once, they all leave now (at most that many still wait):
            // the buffer stays bounded by the stream limit, not by how fast the client sends.
            if awaitingBody.count > 2 * Int(state.limits.concurrentStreamsMax) + 16 {
                awaitingBody = CircularBuffer(awaitingBody.filter { state.awaitsBody($0.id) })
            }
            awaitingBody.append((id, due))
            if bodyTimer == nil { armBodyTimer(context) }
        case .reset(let id, let code):
            session.reset(id, code)
        case .consume(let id, let bytes, let streamOpen):
            session.consume(id, bytes: bytes, streamOpen: streamOpen)
        case .cancelled(let id, let code):
            open.removeValue(forKey: id)?.promise?.succeed(code)
        case .terminate(let code, let reason):
            logger.notice("closing an HTTP/2 connection: \(reason)", metadata: ["peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"])
            session.terminate(code)
            closeAfterDraining()
        }
    }

    /// Drops, from the front, the requests no longer waiting for their body. The timer stays armed (it
    /// finds nothing when it fires, and then stays off): cancelling it whenever the buffer empties, which
    /// is after almost every request, would schedule a task per POST again.
    private func forgetBodiesArrived() {
        while let first = awaitingBody.first, !state.awaitsBody(first.id) { awaitingBody.removeFirst() }
    }

    /// Arms the body-time timer for the first request waiting; when it fires, every request overdue by
    /// then is refused (408) and the timer is armed for the next.
    private func armBodyTimer(_ context: ChannelHandlerContext) {
        guard let first = awaitingBody.first else { return }
        let now = clock()
        let wait = first.dueNanos > now ? first.dueNanos - now : 0
        bodyTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(clamping: wait))) { [self] in
            bodyTimer = nil
            guard let context = self.context, !closing else { return }
            let now = clock()
            while let first = awaitingBody.first, first.dueNanos <= now {
                awaitingBody.removeFirst()
                for action in state.bodyOverdue(first.id) { perform(action, context: context) }
            }
            forgetBodiesArrived()
            armBodyTimer(context)
            scheduleFlush()
        }
    }

    // MARK: Bytes out

    /// One flush per loop tick for answers given outside a read (a read burst flushes at its end).
    func scheduleFlush() {
        guard !reading, !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flush()
        }
    }

    /// Writes what the session has to send, while the socket takes it; closes once the session is done.
    private func flush() {
        // Never inside libnghttp2's own send (a stream closing while it writes reports from in there).
        // (Nothing more once closed: the last frames were written, and the output is being shut.)
        guard !draining, !closed, let context, context.channel.isActive else { return }
        draining = true
        defer { draining = false }
        if context.channel.isWritable {
            var out = context.channel.allocator.buffer(capacity: 0)
            let drained = session.drain(into: &out, bytesMax: Self.flushBytesMax)
            wakeWriters()
            if out.readableBytes > 0 {
                // More than one flush's worth waiting (a large answer): the next part once this one is written.
                let more = drained >= Self.flushBytesMax
                context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenSuccess { [self] in if more { scheduleFlush() } }
            }
        }
        if session.isDone || closing { close(context) }
    }

    private func closeAfterDraining() {
        closing = true
        if !reading { flush() }
    }

    /// Bytes gathered into one write.
    private static let flushBytesMax = 256 * 1_024

    private func close(_ context: ChannelHandlerContext) {
        guard !closed else { return }
        closing = true
        closed = true
        var out = context.channel.allocator.buffer(capacity: 0)
        session.drain(into: &out)
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        Self.lingeringClose(context.channel)
    }
}

import NIOCore

// What `H2Response` calls, on the connection's event loop: an answer's head, body, trailers and reset,
// the stream's `closed` future, and the pacing of a writer by the client's window.
extension H2ServerHandler {
    /// `H2Response.closed` for stream `id`: its promise's future, made now if nobody asked before; a
    /// stream already closed gives a future already completed, with 0 (its code was not kept).
    func closed(_ id: Int32, on eventLoop: any EventLoop) -> EventLoopFuture<UInt32> {
        guard let listener = open[id] else { return eventLoop.makeSucceededFuture(0) }
        if let promise = listener.promise { return promise.futureResult }
        let promise = eventLoop.makePromise(of: UInt32.self)
        open[id]?.promise = promise
        return promise.futureResult
    }

    func head(_ id: Int32, status: Int, headers: [(String, String)], body: Bool) {
        // A stream that closed before its handler answered: the handler is done with it all the same
        // (else its slot counted against the stream limit for ever).
        guard open[id] != nil else { return state.handlerFinished(id) }
        do {
            try session.respond(id, status: status, headers: headers, body: body)
        } catch {
            logger.warning("an HTTP/2 answer could not be sent: \(error)")
            session.reset(id, .internalError)
            state.handlerFinished(id)
        }
        if !body { state.handlerFinished(id) }
        scheduleFlush()
    }

    func write(_ id: Int32, _ bytes: ByteBuffer, paced: EventLoopPromise<Void>?) {
        // Gone, or its answer already ended: a late write (a handler cancelled as it finished) is dropped.
        // Resetting here would put RST_STREAM ahead of the trailers still queued (a gRPC deadline's
        // status arrived as CANCELLED).
        guard open[id] != nil, !session.isFinished(id) else {
            paced?.fail(H2StreamGone(stream: id))
            return
        }
        if !session.write(id, bytes) {
            logger.notice("resetting an HTTP/2 stream: its writer went on past \(state.limits.responseBufferBytesMax) bytes not yet sent, or wrote after the end")
            paced?.fail(H2StreamGone(stream: id))
            session.reset(id, .cancel)
            state.handlerFinished(id)
        } else if let paced {
            if session.bufferedBytes(id) <= state.limits.responseBufferLowBytes {
                paced.succeed()
            } else if let waiting = pacing[id] {
                waiting.promise.futureResult.cascade(to: paced)
            } else {
                pacing[id] = (paced, stallCutoff(id))
            }
        }
        scheduleFlush()
    }

    /// Wakes the writers whose stream has drained to `responseBufferLowBytes` (after libnghttp2 took bytes).
    func wakeWriters() {
        guard !pacing.isEmpty else { return }
        // The drained ones first (an array only when some are): waking a writer may pace another.
        var drained: [Int32] = []
        pacing.forEach { id, _ in if session.bufferedBytes(id) <= state.limits.responseBufferLowBytes { drained.append(id) } }
        for id in drained {
            guard session.bufferedBytes(id) <= state.limits.responseBufferLowBytes, let waiting = pacing.removeValue(forKey: id) else { continue }
            waiting.stall?.cancel()
            if open[id] != nil { waiting.promise.succeed() } else { waiting.promise.fail(H2StreamGone(stream: id)) }
        }
    }

    /// Resets stream `id` if its writer is still waiting `stalledReaderMillisMax` from now.
    private func stallCutoff(_ id: Int32) -> Scheduled<Void>? {
        guard let millis = state.limits.stalledReaderMillisMax, let context else { return nil }
        return context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(millis)) { [self] in
            guard let waiting = pacing.removeValue(forKey: id) else { return }
            logger.notice("resetting an HTTP/2 stream: its client read nothing for \(millis) ms")
            waiting.promise.fail(H2StreamGone(stream: id))
            observer?.streamStalled()
            // Ended or not: a reader that takes nothing more does not hold the stream.
            if open[id] != nil { session.reset(id, .cancel) }
            state.handlerFinished(id)
            scheduleFlush()
        }
    }

    /// Fails a stream's waiting writer (its stream closed).
    func dropWriter(_ id: Int32) {
        guard !pacing.isEmpty, let waiting = pacing.removeValue(forKey: id) else { return }
        waiting.stall?.cancel()
        waiting.promise.fail(H2StreamGone(stream: id))
    }

    func finish(_ id: Int32, trailers: [(String, String)]?) {
        guard open[id] != nil else { return state.handlerFinished(id) }
        session.finish(id, trailers: trailers)
        state.handlerFinished(id)
        scheduleFlush()
    }

    func reset(_ id: Int32, _ code: H2ErrorCode) {
        // An answer that has ended is left to be sent whole (its trailers are its status).
        guard open[id] != nil, !session.isFinished(id) else { return state.handlerFinished(id) }
        session.reset(id, code)
        state.handlerFinished(id)
        scheduleFlush()
    }
}

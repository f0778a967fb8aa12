import NIOCore

/// What libnghttp2 reported while it read a client's bytes (`H2Session` turns its callbacks into these, in
/// order). Stream ids are the client's (odd, positive).
public enum H2Event: Equatable, Sendable {
    /// A HEADERS frame opened a request stream.
    case requestBegan(Int32)
    /// One field of that request's header list (names arrive lowercased and checked by libnghttp2).
    case header(Int32, name: String, value: String)
    /// That request's header list passed its limits (`H2HeaderBudget`): its later fields never become Strings.
    case headerListTooLarge(Int32)
    /// A header block passed `H2HeaderBudget.abuseFactor` times the limits: none of the rest of it becomes a String.
    case headerListAbusive(Int32)
    /// The request's header list ended; `endStream` when it has no body.
    case headersEnded(Int32, endStream: Bool)
    /// Request body bytes (one DATA frame's payload, without padding).
    case data(Int32, ByteBuffer)
    /// A DATA frame was received whole: its payload length and whether it ended the request.
    case dataFrame(Int32, length: Int, endStream: Bool)
    /// A HEADERS frame that is not a request (trailers): its payload length and whether it ended the stream.
    case otherHeaders(Int32, length: Int, endStream: Bool)
    /// A PING that asks for an answer (libnghttp2 answers it).
    case ping
    /// A SETTINGS frame that is not an acknowledgement (libnghttp2 applies and acknowledges it).
    case settings
    /// The client sent RST_STREAM (reported before the stream's `streamClosed`).
    case peerReset(Int32)
    /// A stream closed: `code` 0 when both sides ended it, otherwise the RST_STREAM error code.
    case streamClosed(Int32, code: UInt32)
}

/// A request's head as the engine hands it to the application.
public struct H2RequestHead: Equatable, Sendable {
    public var method: String
    public var scheme: String
    public var authority: String
    public var path: String
    /// Regular fields in arrival order, pseudo-headers left out.
    public var headers: [(name: String, value: String)]

    public init(method: String, scheme: String, authority: String, path: String, headers: [(name: String, value: String)]) {
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.headers = headers
    }

    /// The first value of field `name` (lowercase).
    public func first(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    public static func == (a: Self, b: Self) -> Bool {
        a.method == b.method && a.scheme == b.scheme && a.authority == b.authority && a.path == b.path
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

/// HTTP/2 error codes the engine sends (RFC 9113 §7).
public enum H2ErrorCode: UInt32, Sendable {
    case noError = 0x0, protocolError = 0x1, internalError = 0x2, flowControlError = 0x3, streamClosed = 0x5
    case refusedStream = 0x7, cancel = 0x8, enhanceYourCalm = 0xb
}

/// What the handler must do after an event; the state machine decides, `H2ServerHandler` performs.
public enum H2Action: Equatable, Sendable {
    /// Hand a complete request to the application (its body is at most `requestBodyBytesMax`).
    case dispatch(Int32, H2RequestHead, body: ByteBuffer)
    /// Refuse a request without the application: 431 (its header list is too large) or 413 (its body).
    /// The application says how (`H2Responder.refusal`): gRPC answers with a status in trailers.
    case answer(Int32, status: Int)
    /// A request's body is still to come: ask `bodyOverdue` after `H2Limits.requestBodyMillisMax`.
    case awaitBody(Int32)
    /// Reset a stream.
    case reset(Int32, H2ErrorCode)
    /// Give `bytes` of request body back to the client's flow-control windows (the stream's, and the
    /// connection's; `streamOpen` false when only the connection's is left). Sent as each chunk arrives.
    case consume(Int32, bytes: Int, streamOpen: Bool)
    /// The stream closed while its handler ran: tell the application, which stops its work.
    case cancelled(Int32, code: UInt32)
    /// Close the connection with GOAWAY and this code (a flood).
    case terminate(H2ErrorCode, reason: String)
}

/// One connection's streams and abuse accounting, as a value: events in, actions out, time passed in as
/// monotonic nanoseconds. No channel, no libnghttp2, no clock, so every limit is tested with tables of events.
///
/// Streams live in a table of slots (`StreamTable`): a request's fields and body are changed where they are
/// stored, never copied out and back, and the events of one stream, which libnghttp2 reports one after
/// another, find it without hashing.
public struct H2ConnectionState: Sendable {
    public let limits: H2Limits
    private var streams = StreamTable()
    /// Request body bytes held for requests not yet handed over, all streams together.
    private(set) var bufferedBytes = 0
    /// Streams handed to the application whose handler has not finished, open or reset.
    private var handlersRunning = StreamIDMap<Void>()
    private var pings: H2TokenBucket
    private var settings: H2TokenBucket
    private var emptyFrames: H2TokenBucket
    /// Set once the connection is being closed for abuse: later events are ignored.
    private(set) var terminated = false

    struct Stream: Sendable {
        var method = "", scheme = "", authority = "", path = ""
        var headers: [(name: String, value: String)] = []
        var headerBytes = 0
        var headerFields = 0
        var headersTooLarge = false
        var body = ByteBuffer()
        /// Handed to the application (or answered by the engine): later body bytes are discarded.
        var dispatched = false
    }

    public init(limits: H2Limits, nowNanos: UInt64) {
        self.limits = limits
        pings = H2TokenBucket(limits.pings, nowNanos: nowNanos)
        settings = H2TokenBucket(limits.settingsFrames, nowNanos: nowNanos)
        emptyFrames = H2TokenBucket(limits.emptyFrames, nowNanos: nowNanos)
    }

    /// Streams the engine is tracking (open, or with a handler still running).
    public var streamsTracked: Int { streams.count }
    public var handlersInFlight: Int { handlersRunning.count }

    /// The actions for `event`, in order.
    public mutating func on(_ event: H2Event, nowNanos: UInt64) -> [H2Action] {
        var actions: [H2Action] = []
        on(event, nowNanos: nowNanos) { actions.append($0) }
        return actions
    }

    /// Decides `event`, handing each action to `perform` in order (no array per event on the hot path).
    /// The event is taken: a header field's strings and a chunk's bytes move into the stream.
    public mutating func on(_ event: consuming H2Event, nowNanos: UInt64, _ perform: (consuming H2Action) -> Void) {
        guard !terminated else { return }
        switch consume event {
        case .requestBegan(let id):
            // libnghttp2 refuses streams over SETTINGS_MAX_CONCURRENT_STREAMS itself; handlers still running
            // on reset streams are ours to count.
            if handlersRunning.count >= Int(limits.concurrentStreamsMax) {
                return perform(.reset(id, .refusedStream))
            }
            // A request start on an id already open (libnghttp2 never reports one): what it held is dropped.
            bufferedBytes -= streams.open(id)
        case .header(let id, let name, let value):
            guard let slot = streams.find(id) else { return }
            Self.add(header: name, value, to: &streams.slots[slot], listBytesMax: limits.headerListBytesMax, fieldsMax: limits.headerFieldsMax)
        case .headerListTooLarge(let id):
            guard let slot = streams.find(id) else { return }
            streams.slots[slot].headersTooLarge = true
            streams.slots[slot].headers = []
        case .headerListAbusive:
            perform(terminate("a header block past \(H2HeaderBudget.abuseFactor)× its limits (\(limits.headerListBytesMax) bytes, \(limits.headerFieldsMax) fields)"))
        case .headersEnded(let id, let endStream):
            guard let slot = streams.find(id) else { return }
            if streams.slots[slot].headersTooLarge {
                streams.slots[slot].dispatched = true
                return perform(.answer(id, status: 431))
            }
            if endStream { return dispatch(id, slot: slot, perform) }
            if limits.requestBodyMillisMax != nil { perform(.awaitBody(id)) }
        case .otherHeaders(let id, let length, let endStream):
            if length == 0 && !endStream && !emptyFrames.take(nowNanos: nowNanos) {
                return perform(terminate("more empty frames than \(limits.emptyFrames.burst) at once or \(limits.emptyFrames.perSecond)/s"))
            }
            // Trailers end the request as END_STREAM on DATA does (their fields are not kept).
            if endStream, let slot = streams.find(id) { dispatch(id, slot: slot, perform) }
        case .data(let id, var bytes):
            guard let slot = streams.find(id) else { return }
            let count = bytes.readableBytes
            // Every byte goes back to the client's windows at once (a body larger than the stream window
            // must be able to arrive); what is kept is bounded per stream and per connection instead.
            let consumed = H2Action.consume(id, bytes: count, streamOpen: true)
            if streams.slots[slot].dispatched { return perform(consumed) }
            if streams.slots[slot].body.readableBytes.addingSaturating(count) > limits.requestBodyBytesMax {
                bufferedBytes -= Self.drop(&streams.slots[slot])
                perform(.answer(id, status: 413))
                return perform(consumed)
            }
            if bufferedBytes.addingSaturating(count) > limits.connectionBufferedBytesMax {
                // Other requests of this connection hold the rest: this one is refused, and may be retried.
                bufferedBytes -= Self.drop(&streams.slots[slot])
                perform(.reset(id, .refusedStream))
                return perform(consumed)
            }
            bufferedBytes += count
            if streams.slots[slot].body.readableBytes == 0 {
                streams.slots[slot].body = bytes  // the first chunk, commonly the whole body: kept, not copied
            } else {
                streams.slots[slot].body.writeBuffer(&bytes)
            }
            perform(consumed)
        case .dataFrame(let id, let length, let endStream):
            if length == 0 && !endStream && !emptyFrames.take(nowNanos: nowNanos) {
                return perform(terminate("more empty frames than \(limits.emptyFrames.burst) at once or \(limits.emptyFrames.perSecond)/s"))
            }
            if endStream, let slot = streams.find(id) { dispatch(id, slot: slot, perform) }
        case .ping:
            if !pings.take(nowNanos: nowNanos) {
                perform(terminate("more PING frames than \(limits.pings.burst) at once or \(limits.pings.perSecond)/s"))
            }
        case .settings:
            if !settings.take(nowNanos: nowNanos) {
                perform(terminate("more SETTINGS frames than \(limits.settingsFrames.burst) at once or \(limits.settingsFrames.perSecond)/s"))
            }
        case .peerReset:
            break
        case .streamClosed(let id, let code):
            guard let slot = streams.find(id) else { return }
            bufferedBytes -= streams.slots[slot].body.readableBytes
            streams.close(id, slot: slot)
            if handlersRunning.contains(id) { perform(.cancelled(id, code: code)) }
        }
    }

    /// `requestBodyMillisMax` has passed since stream `id`'s head: a request still waiting for its body
    /// is refused (408) and its body given up; one handed over or gone is left alone.
    public mutating func bodyOverdue(_ id: Int32) -> [H2Action] {
        guard !terminated, let slot = streams.find(id), !streams.slots[slot].dispatched else { return [] }
        bufferedBytes -= Self.drop(&streams.slots[slot])
        return [.answer(id, status: 408)]
    }

    /// Whether stream `id` is still waiting for the rest of its body (not handed over, refused or closed).
    public func awaitsBody(_ id: Int32) -> Bool {
        streams.peek(id).map { !streams.slots[$0].dispatched } ?? false
    }

    /// The application finished stream `id` (answered, reset, or gave up after a cancel).
    public mutating func handlerFinished(_ id: Int32) {
        handlersRunning.remove(id)
    }

    private mutating func dispatch(_ id: Int32, slot: Int, _ perform: (consuming H2Action) -> Void) {
        guard !streams.slots[slot].dispatched else { return }
        let (head, body) = Self.take(&streams.slots[slot])
        bufferedBytes -= body.readableBytes
        handlersRunning.insert(id)
        perform(.dispatch(id, head, body: body))
    }

    /// Takes a stream's request out of it (head and body), marking it handed over.
    private static func take(_ stream: inout Stream) -> (H2RequestHead, ByteBuffer) {
        stream.dispatched = true
        var head = H2RequestHead(method: "", scheme: "", authority: "", path: "", headers: [])
        swap(&head.method, &stream.method)
        swap(&head.scheme, &stream.scheme)
        swap(&head.authority, &stream.authority)
        swap(&head.path, &stream.path)
        swap(&head.headers, &stream.headers)
        var body = ByteBuffer()
        swap(&body, &stream.body)
        return (head, body)
    }

    /// One field of a stream's header list. Counted before it is kept: a list over the limit keeps nothing
    /// more (HPACK still decodes it, so the connection's compression state stays in step).
    private static func add(header name: String, _ value: String, to stream: inout Stream, listBytesMax: Int, fieldsMax: Int) {
        guard !stream.dispatched else { return }
        stream.headerBytes = stream.headerBytes.addingSaturating(name.utf8.count + value.utf8.count + 32)
        stream.headerFields += 1
        if stream.headerBytes > listBytesMax || stream.headerFields > fieldsMax {
            stream.headersTooLarge = true
            stream.headers = []
        } else if !stream.headersTooLarge {
            switch name {
            case ":method": stream.method = value
            case ":scheme": stream.scheme = value
            case ":authority": stream.authority = value
            case ":path": stream.path = value
            default:
                guard name.utf8.first != UInt8(ascii: ":") else { return }
                if stream.headers.isEmpty { stream.headers.reserveCapacity(8) }  // one allocation for a usual request's fields
                stream.headers.append((name, value))
            }
        }
    }

    /// Gives up a request's body (refused, or its stream closed first): the bytes no longer buffered here.
    private static func drop(_ stream: inout Stream) -> Int {
        let freed = stream.body.readableBytes
        stream.body = ByteBuffer()
        stream.dispatched = true
        return freed
    }

    private mutating func terminate(_ reason: String) -> H2Action {
        terminated = true
        return .terminate(.enhanceYourCalm, reason: reason)
    }
}

/// The streams of one connection: slots reused as streams close (so the storage stays as large as the
/// most streams open at once), found by id through one map (`StreamIDMap`), and the last one found
/// remembered, since a stream's events (its header fields, its data) arrive one after another.
struct StreamTable: Sendable {
    /// Indexed by slot; a free slot holds an empty stream.
    var slots: ContiguousArray<H2ConnectionState.Stream> = []
    private var free: [Int] = []
    private var slotOf = StreamIDMap<Int>()
    /// The stream found last and its slot (`id` 0: none; client streams are odd and positive).
    private var last: (id: Int32, slot: Int) = (0, 0)

    var count: Int { slotOf.count }

    /// Opens stream `id` in a free slot; the request-body bytes dropped (when `id` was open already).
    mutating func open(_ id: Int32) -> Int {
        if let existing = find(id) {
            let dropped = slots[existing].body.readableBytes
            slots[existing] = .init()
            return dropped
        }
        let slot: Int
        if let reused = free.popLast() {
            slot = reused
        } else {
            slot = slots.count
            slots.append(.init())
        }
        slotOf[id] = slot
        last = (id, slot)
        return 0
    }

    mutating func find(_ id: Int32) -> Int? {
        if id != 0, last.id == id { return last.slot }
        guard let slot = slotOf[id] else { return nil }
        last = (id, slot)
        return slot
    }

    func peek(_ id: Int32) -> Int? {
        if id != 0, last.id == id { return last.slot }
        return slotOf[id]
    }

    /// Frees stream `id`'s slot (found at `slot`), dropping what it held.
    mutating func close(_ id: Int32, slot: Int) {
        slotOf[id] = nil
        slots[slot] = .init()
        free.append(slot)
        if last.id == id { last = (0, 0) }
    }
}

extension Int {
    /// `self + other`, or `Int.max` where that would overflow.
    func addingSaturating(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}

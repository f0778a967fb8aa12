import CNGHTTP2
import NIOCore

/// libnghttp2 answered `nghttp2_session_mem_recv` with an error: the connection cannot go on. GOAWAY, when
/// the library queued one, is still in `drain`.
public struct H2SessionError: Error, Equatable, CustomStringConvertible, Sendable {
    /// libnghttp2's error code (`nghttp2_error`), for example -903 bad client magic, -904 flooded, -905 too
    /// many CONTINUATION frames.
    public let code: Int
    public var description: String { "http2_session_failed: libnghttp2 \(code) (\(String(cString: nghttp2_strerror(Int32(clamping: code)))))" }
}

/// Told what libnghttp2 reports (`H2Session.delegate`), inside its callbacks.
public protocol H2SessionDelegate: AnyObject {
    /// Takes the event (its fields and bytes move on without a copy).
    func session(_ event: consuming H2Event)
}

/// The one place that calls libnghttp2: an `nghttp2_session` on the server side with `H2Limits` set, its
/// callbacks turned into `H2Event`s, and response bodies served from per-stream queues.
///
/// Not thread-safe, like the C session it owns: one connection's event loop uses it. Callback data
/// pointers are valid only during the callback, so every byte is copied out before it returns.
public final class H2Session {
    private let session: OpaquePointer
    public let limits: H2Limits
    /// Where events go, as libnghttp2 reports them: while it reads (`receive`), and while it writes
    /// (`drain`: a stream closes once its last frame is sent). Called inside libnghttp2's callbacks, so it
    /// may submit frames and terminate the session (a flood is cut off at the frame that crossed the limit,
    /// and libnghttp2 ignores the rest of the bytes), never read or drain. Not retained: the delegate owns
    /// the session, and clears this before it goes.
    public unowned(unsafe) var delegate: (any H2SessionDelegate)?
    /// Response bodies not yet taken by libnghttp2, by stream: references, so a body's queue is changed
    /// where it is, never copied out of the table and back.
    private var outbound = StreamIDMap<Outbound>()
    private let allocator = ByteBufferAllocator()
    /// The last `:path`, `:authority` and `user-agent` of this connection's requests, whose values its
    /// next requests mostly repeat (`H2HeaderText.Repeated`).
    private var repeated = H2HeaderText.Repeated()
    /// The header block being decoded, counted before its fields become Strings.
    private var headerBudget = H2HeaderBudget()

    final class Outbound {
        /// Queued body bytes in order: the first chunk here (most answers are one write, and need no
        /// queue), those behind it in `rest`. `first` is nil only when nothing is queued.
        var first: ByteBuffer?
        var rest: CircularBuffer<ByteBuffer>?
        var bufferedBytes = 0
        var finished = false
        var trailers: [(String, String)]?
        /// libnghttp2 was told there is nothing to send yet; `resume_data` wakes it.
        var deferred = false
    }

    public init(limits: H2Limits) throws {
        self.limits = limits
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else { throw H2SessionError(code: Int(NGHTTP2_ERR_NOMEM.rawValue)) }
        defer { nghttp2_session_callbacks_del(callbacks) }
        Self.install(callbacks)

        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else { throw H2SessionError(code: Int(NGHTTP2_ERR_NOMEM.rawValue)) }
        defer { nghttp2_option_del(option) }
        // Window updates only for bytes handed over (`consume`): the connection window bounds what is buffered.
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_outbound_ack(option, limits.outboundAcksMax)
        nghttp2_option_set_max_settings(option, limits.settingsEntriesMax)
        nghttp2_option_set_stream_reset_rate_limit(option, UInt64(limits.resets.burst), UInt64(limits.resets.perSecond))
        nghttp2_option_set_max_continuations(option, limits.continuationsMax)
        nghttp2_option_set_max_send_header_block_length(option, limits.sendHeaderBlockBytesMax)
        nghttp2_option_set_max_deflate_dynamic_table_size(option, Int(limits.headerTableBytes))
        // No closed streams kept: with RFC 7540 priorities off they would serve nothing. A frame on a stream
        // that has closed is then ignored, which RFC 9113 §5.1 allows ("MAY treat ... as a connection error").
        nghttp2_option_set_no_closed_streams(option, 1)

        var created: OpaquePointer?
        // `self` is not complete yet: the user data is set right after, before any callback can run.
        guard nghttp2_session_server_new2(&created, callbacks, nil, option) == 0, let created else {
            throw H2SessionError(code: Int(NGHTTP2_ERR_NOMEM.rawValue))
        }
        session = created
        nghttp2_session_set_user_data(session, Unmanaged.passUnretained(self).toOpaque())

        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: limits.concurrentStreamsMax),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: limits.streamWindowBytes),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: limits.frameBytesMax),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(clamping: limits.headerListBytesMax)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_HEADER_TABLE_SIZE.rawValue), value: limits.headerTableBytes),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        try Self.check(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count))
        try Self.check(nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, limits.connectionWindowBytes))
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: Bytes in and out

    /// Feeds a client's bytes to the session; its events go to `delegate`.
    public func receive(_ bytes: ByteBuffer) -> H2SessionError? {
        let read = bytes.withUnsafeReadableBytes { raw in
            nghttp2_session_mem_recv(session, raw.bindMemory(to: UInt8.self).baseAddress, raw.count)
        }
        return read < 0 ? H2SessionError(code: read) : nil
    }

    /// Appends every byte the session has to send (frames, window updates, acknowledgements, GOAWAY) to
    /// `buffer`, stopping once it holds `bytesMax` or more; the number appended.
    @discardableResult
    public func drain(into buffer: inout ByteBuffer, bytesMax: Int = 1 << 20) -> Int {
        var written = 0
        while written < bytesMax {
            var chunk: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &chunk)
            guard count > 0, let chunk else { break }
            buffer.writeBytes(UnsafeRawBufferPointer(start: chunk, count: count))
            written += count
        }
        return written
    }

    /// False once neither side has anything more to say (after GOAWAY both ways, or a fatal error): close.
    public var isDone: Bool { nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 }

    // MARK: Answering

    /// Starts the response on stream `id`. With `body` false, the headers end the stream; otherwise the body
    /// comes from `write` and `finish`.
    public func respond(_ id: Int32, status: Int, headers: [(String, String)], body: Bool) throws {
        if body {
            outbound[id] = Outbound()
            var provider = nghttp2_data_provider()
            provider.read_callback = Self.readBody
            try Self.withFields(headers, status: status) { try Self.check(nghttp2_submit_response(session, id, $0, $1, &provider)) }
        } else {
            try Self.withFields(headers, status: status) { try Self.check(nghttp2_submit_response(session, id, $0, $1, nil)) }
        }
    }

    /// Queues body bytes on a stream answered with `body: true`; false when the stream is gone, ended, or
    /// already had more than `responseBufferBytesMax` waiting (a writer that does not wait for its pace;
    /// the caller resets it). One write of any size is taken: a large message is not refused for its size.
    public func write(_ id: Int32, _ bytes: ByteBuffer) -> Bool {
        guard let stream = outbound[id], !stream.finished, stream.bufferedBytes <= limits.responseBufferBytesMax else { return false }
        stream.bufferedBytes = stream.bufferedBytes.addingSaturating(bytes.readableBytes)
        if stream.first == nil {
            stream.first = bytes
        } else {
            if stream.rest == nil { stream.rest = CircularBuffer(initialCapacity: 4) }
            stream.rest?.append(bytes)
        }
        if stream.deferred {
            stream.deferred = false
            nghttp2_session_resume_data(session, id)
        }
        return true
    }

    /// Ends a body started with `respond(body: true)`, with trailers (gRPC's status) or without.
    public func finish(_ id: Int32, trailers: [(String, String)]?) {
        guard let stream = outbound[id], !stream.finished else { return }
        stream.finished = true
        stream.trailers = trailers
        if stream.deferred {
            stream.deferred = false
            nghttp2_session_resume_data(session, id)
        }
    }

    /// Whether stream `id`'s answer has ended (`finish`), its last frames perhaps not sent yet.
    public func isFinished(_ id: Int32) -> Bool { outbound[id]?.finished ?? false }

    /// Response bytes stream `id` has queued and libnghttp2 has not taken (the client's window is closed).
    public func bufferedBytes(_ id: Int32) -> Int { outbound[id]?.bufferedBytes ?? 0 }

    public func reset(_ id: Int32, _ code: H2ErrorCode) {
        outbound[id] = nil
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, code.rawValue)
    }

    /// Gives `bytes` back to the client's windows: the stream's and the connection's, or the connection's
    /// alone once the stream is closed.
    public func consume(_ id: Int32, bytes: Int, streamOpen: Bool) {
        guard bytes > 0 else { return }
        if streamOpen, nghttp2_session_consume(session, id, bytes) == 0 { return }
        nghttp2_session_consume_connection(session, bytes)
    }

    /// GOAWAY with `code` after the last stream processed; nothing new is accepted.
    public func terminate(_ code: H2ErrorCode) {
        nghttp2_session_terminate_session(session, code.rawValue)
    }

    /// A PING the client must acknowledge (liveness).
    public func ping() {
        nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
    }

    /// GOAWAY naming the last stream we will process: streams up to it finish, no new one is taken.
    public func goaway() {
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session), H2ErrorCode.noError.rawValue, nil, 0)
    }

    // MARK: Callbacks

    /// Reports `event` to the delegate, from inside a callback (`user` is the session, alive for the call:
    /// it is neither retained nor released).
    private static func report(_ user: UnsafeMutableRawPointer?, _ event: consuming H2Event) {
        guard let delegate = Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef({ $0.delegate }) else { return }
        delegate.session(event)
    }

    private static func install(_ callbacks: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            guard let frame else { return 0 }
            Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef { $0.headerBudget.reset() }
            if frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
                H2Session.report(user, .requestBegan(frame.pointee.hd.stream_id))
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameCount, value, valueCount, _, user in
            guard let frame, let name, let value, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
            let id = frame.pointee.hd.stream_id
            // Every block is counted (trailers too, whose fields are not kept); a request's fields past the
            // limits are not decoded, and past the abuse ceiling libnghttp2 is told to skip the rest of the
            // block (it resets the stream; the connection is closing).
            switch Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef({ me in
                me.headerBudget.count(nameBytes: nameCount, valueBytes: valueCount, limits: me.limits)
            }) {
            case .keep:
                break
            case .drop:
                if frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST { H2Session.report(user, .headerListTooLarge(id)) }
                return 0
            case .abusive:
                H2Session.report(user, .headerListAbusive(id))
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
            }
            guard frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
            let field = H2HeaderText.name(UnsafeBufferPointer(start: name, count: nameCount))
            let text = Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef {
                $0.repeated.value(UnsafeBufferPointer(start: value, count: valueCount), of: field)
            }
            H2Session.report(user, .header(id, name: field, value: text))
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, id, data, count, user in
            guard let data else { return 0 }
            Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef { me in
                var bytes = me.allocator.buffer(capacity: count)
                bytes.writeBytes(UnsafeRawBufferPointer(start: data, count: count))
                me.delegate?.session(.data(id, bytes))
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { session, frame, user in
            guard let frame else { return 0 }
            let header = frame.pointee.hd
            let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch Int(header.type) {
            case Int(NGHTTP2_HEADERS.rawValue):
                if frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
                    H2Session.report(user, .headersEnded(header.stream_id, endStream: endStream))
                } else {
                    H2Session.report(user, .otherHeaders(header.stream_id, length: header.length, endStream: endStream))
                }
            case Int(NGHTTP2_DATA.rawValue):
                H2Session.report(user, .dataFrame(header.stream_id, length: header.length, endStream: endStream))
            case Int(NGHTTP2_RST_STREAM.rawValue):
                // Only for a stream that is still there: a reset of one already closed gets no close to match.
                if nghttp2_session_find_stream(session, header.stream_id) != nil { H2Session.report(user, .peerReset(header.stream_id)) }
            case Int(NGHTTP2_PING.rawValue):
                if header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 { H2Session.report(user, .ping) }
            case Int(NGHTTP2_SETTINGS.rawValue):
                if header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 { H2Session.report(user, .settings) }
            default:
                break
            }
            return 0
        }
        // A HEADERS frame of ours that could not be sent (its block over `sendHeaderBlockBytesMax`):
        // libnghttp2 drops it and leaves the stream open, so the stream is reset, never left hanging.
        nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks) { session, frame, _, _ in
            guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), frame.pointee.hd.stream_id > 0 else { return 0 }
            nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), frame.pointee.hd.stream_id, H2ErrorCode.internalError.rawValue)
            return 0
        }
        // Our answer ended its stream while the client's request is still coming (a body refused at 413,
        // a gRPC status sent before the client's half-close): RST_STREAM NO_ERROR asks the client to stop
        // sending (RFC 9113 §8.1), so bytes nobody will read do not keep flowing.
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { session, frame, _ in
            guard let frame, frame.pointee.hd.stream_id > 0, frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
                  frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) || frame.pointee.hd.type == UInt8(NGHTTP2_DATA.rawValue),
                  nghttp2_session_get_stream_remote_close(session, frame.pointee.hd.stream_id) == 0 else { return 0 }
            nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), frame.pointee.hd.stream_id, H2ErrorCode.noError.rawValue)
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, code, user in
            Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef { $0.outbound[id] = nil }
            H2Session.report(user, .streamClosed(id, code: code))
            return 0
        }
    }

    /// libnghttp2 asks for up to `length` body bytes of stream `id`.
    private static let readBody: nghttp2_data_source_read_callback = { session, id, buffer, length, flags, _, user in
        guard let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        guard let stream = Unmanaged<H2Session>.fromOpaque(user!)._withUnsafeGuaranteedRef({ $0.outbound[id] }) else {
            flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
            return 0
        }
        return fill(stream, session: session, id: id, buffer: buffer, length: length, flags: flags)
    }

    /// Copies up to `length` queued bytes of `stream` into `buffer`, setting libnghttp2's flags (the end,
    /// trailers after it); `NGHTTP2_ERR_DEFERRED` when nothing is queued yet.
    private static func fill(_ stream: Outbound, session: OpaquePointer?, id: Int32, buffer: UnsafeMutablePointer<UInt8>, length: Int,
                             flags: UnsafeMutablePointer<UInt32>) -> Int {
        var copied = 0
        while copied < length, var chunk = stream.first {
            let take = min(length - copied, chunk.readableBytes)
            chunk.readWithUnsafeReadableBytes { raw in
                if take > 0 { (buffer + copied).update(from: raw.bindMemory(to: UInt8.self).baseAddress!, count: take) }
                return take
            }
            copied += take
            if chunk.readableBytes > 0 {
                stream.first = chunk
            } else if let next = stream.rest?.popFirst() {
                stream.first = next
            } else {
                stream.first = nil
            }
        }
        stream.bufferedBytes -= copied
        if stream.first == nil {
            if stream.finished {
                flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
                if let trailers = stream.trailers {
                    flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
                    // Allowed inside this callback (the header's note on nghttp2_submit_trailer).
                    _ = H2Session.withFields(trailers) { nghttp2_submit_trailer(session, id, $0, $1) }
                }
            } else if copied == 0 {
                stream.deferred = true
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        return copied
    }

    // MARK: Helpers

    /// Calls `body` with the fields as an `nghttp2_nv` array pointing into bytes that live for the call
    /// (libnghttp2 copies fields when a frame is submitted). `status`, when given, goes first as `:status`.
    /// Both the bytes and the array are temporary: on the stack when they are small, as an answer's are.
    private static func withFields<T>(_ fields: [(String, String)], status: Int? = nil,
                                      _ body: (UnsafePointer<nghttp2_nv>, Int) throws -> T) rethrows -> T {
        let statusText = status.map { String($0) } ?? ""
        var byteCount = status == nil ? 0 : 7 + statusText.utf8.count
        for (name, value) in fields { byteCount = byteCount.addingSaturating(name.utf8.count + value.utf8.count) }
        let count = fields.count + (status == nil ? 0 : 1)
        return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, byteCount)) { bytes in
            try withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(1, count)) { nvs in
                var used = 0
                var next = 0
                func add(_ name: String, _ value: String) {
                    let nameAt = bytes.baseAddress! + used
                    used += copy(name, to: nameAt)
                    let valueAt = bytes.baseAddress! + used
                    used += copy(value, to: valueAt)
                    nvs.initializeElement(at: next, to: nghttp2_nv(name: nameAt, value: valueAt, namelen: valueAt - nameAt, valuelen: bytes.baseAddress! + used - valueAt,
                                                                   flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
                    next += 1
                }
                if status != nil { add(":status", statusText) }
                for (name, value) in fields { add(name, value) }
                return try body(UnsafePointer(nvs.baseAddress!), count)
            }
        }
    }

    /// Copies `string`'s UTF-8 bytes to `destination`; how many.
    private static func copy(_ string: String, to destination: UnsafeMutablePointer<UInt8>) -> Int {
        let copied = string.utf8.withContiguousStorageIfAvailable { utf8 in
            if let source = utf8.baseAddress { destination.initialize(from: source, count: utf8.count) }
            return utf8.count
        }
        if let copied { return copied }
        // A string without contiguous UTF-8 (bridged): byte by byte.
        var count = 0
        for byte in string.utf8 {
            (destination + count).initialize(to: byte)
            count += 1
        }
        return count
    }

    private static func check(_ result: Int32) throws {
        if result != 0 { throw H2SessionError(code: Int(result)) }
    }
}

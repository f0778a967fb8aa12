import CNGHTTP2
import Foundation

/// What went wrong with a call or the connection, in words.
struct H2CallError: Error, CustomStringConvertible {
    let description: String
}

/// One HTTP/2 connection (h2c with prior knowledge) on a blocking socket, driven by a libnghttp2 client
/// session, making one unary gRPC call at a time: the cheapest client a thread can be, so a benchmark's
/// figure is the server's (docs/benchmarks.md, "The lease client"). Not thread-safe: one thread owns it.
///
/// A call gathers every frame the session has to send (the request's HEADERS and DATA, and any window
/// updates and SETTINGS acknowledgements queued since the last call) into one write, then reads until
/// its stream closes. A read waits at most `readTimeoutSeconds`, so a server that stops answering fails
/// the call instead of hanging the client.
final class H2GRPCConnection {
    static let readTimeoutSeconds = 10

    private let socket: Int32
    private var session: OpaquePointer?
    private let authority: String
    /// Request headers by path, kept for the connection's life so the session need not copy them.
    private var headerBlocks: [String: HeaderBlock] = [:]
    private let readBuffer: UnsafeMutableBufferPointer<UInt8>
    /// The frames of one flush, gathered for one write.
    private var outgoing: [UInt8] = []

    // The call in flight.
    private var stream: Int32 = 0
    private var body: [UInt8] = []
    private var bodySent = 0
    private var answer: [UInt8] = []
    private var grpcStatus: Int?
    private var grpcMessage = ""
    private var closed = false
    private var closeCode: UInt32 = 0

    /// Connects to `target` (`IPV4:PORT`) and sends the connection preface and an empty SETTINGS.
    init(target: String) throws {
        authority = target
        socket = try Self.connected(to: target)
        // Everything is initialised from here: a throw below runs `deinit`, which closes and frees.
        readBuffer = .allocate(capacity: 64 * 1024)
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        Self.install(callbacks!)
        var created: OpaquePointer?
        guard nghttp2_session_client_new(&created, callbacks, nil) == 0 else { throw H2CallError(description: "nghttp2_session_client_new failed") }
        session = created
        nghttp2_session_set_user_data(session, Unmanaged.passUnretained(self).toOpaque())
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil, 0)
        try flush()
    }

    deinit {
        nghttp2_session_del(session)
        close(socket)
        readBuffer.deallocate()
    }

    /// A TCP socket connected to `target`, with `TCP_NODELAY` and the read timeout; closed if anything fails.
    private static func connected(to target: String) throws -> Int32 {
        let parts = target.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw H2CallError(description: "target \(target): want IPV4:PORT") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &address.sin_addr) == 1 else { throw H2CallError(description: "target \(target): not an IPv4 address") }
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw H2CallError(description: "socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let error = errno
            close(socket)
            throw H2CallError(description: "connect \(target): errno \(error)")
        }
        return socket
    }

    /// Calls the unary (or client-half-closed streaming) method at `path` with one message and returns
    /// the first message of the answer; throws on any status but OK.
    func call(_ path: String, _ message: [UInt8]) throws -> [UInt8] {
        // The gRPC message frame: uncompressed, a 4-byte big-endian length, the message.
        body.removeAll(keepingCapacity: true)
        body.append(0)
        withUnsafeBytes(of: UInt32(message.count).bigEndian) { body.append(contentsOf: $0) }
        body.append(contentsOf: message)
        bodySent = 0
        answer.removeAll(keepingCapacity: true)
        grpcStatus = nil
        grpcMessage = ""
        closed = false
        closeCode = 0

        let block = headerBlock(for: path)
        var provider = nghttp2_data_provider()
        provider.read_callback = Self.readBody
        stream = nghttp2_submit_request(session, nil, block.fields, block.count, &provider, nil)
        guard stream > 0 else { throw H2CallError(description: "\(path): nghttp2_submit_request \(stream)") }
        while !closed {
            try flush()
            if closed { break }
            // A request the session will not send (after a GOAWAY) never opens its stream: nothing would answer.
            guard nghttp2_session_want_read(session) != 0 else { throw H2CallError(description: "\(path): the session has ended (GOAWAY)") }
            let count = read(socket, readBuffer.baseAddress, readBuffer.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                throw H2CallError(description: count == 0 ? "\(path): the server closed the connection" : "\(path): read: errno \(errno)")
            }
            let taken = nghttp2_session_mem_recv(session, readBuffer.baseAddress, count)
            guard taken >= 0 else { throw H2CallError(description: "\(path): nghttp2_session_mem_recv \(taken)") }
        }
        guard closeCode == 0 else { throw H2CallError(description: "\(path): stream reset (HTTP/2 error \(closeCode))") }
        guard let status = grpcStatus else { throw H2CallError(description: "\(path): no grpc-status") }
        guard status == 0 else { throw H2CallError(description: "\(path): grpc-status \(status) \(grpcMessage)") }
        guard answer.count >= 5 else { throw H2CallError(description: "\(path): no message in the answer") }
        let size = Int(answer[1]) << 24 | Int(answer[2]) << 16 | Int(answer[3]) << 8 | Int(answer[4])
        guard answer[0] == 0, answer.count >= 5 + size else { throw H2CallError(description: "\(path): a malformed message frame") }
        return Array(answer[5..<(5 + size)])
    }

    /// Writes everything the session has queued, in one write (`mem_send` hands over one frame at a time).
    private func flush() throws {
        outgoing.removeAll(keepingCapacity: true)
        while true {
            var data: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &data)
            guard count >= 0 else { throw H2CallError(description: "nghttp2_session_mem_send \(count)") }
            guard count > 0, let data else { break }
            outgoing.append(contentsOf: UnsafeBufferPointer(start: data, count: count))
        }
        var written = 0
        while written < outgoing.count {
            // MSG_NOSIGNAL: a connection the server has reset fails the call instead of raising SIGPIPE.
            let wrote = outgoing.withUnsafeBytes { send(socket, $0.baseAddress! + written, $0.count - written, Int32(MSG_NOSIGNAL)) }
            if wrote < 0, errno == EINTR { continue }
            guard wrote > 0 else { throw H2CallError(description: "send: errno \(errno)") }
            written += wrote
        }
    }

    // MARK: Headers

    /// A request's header fields as `nghttp2_nv`s over bytes that live as long as the connection.
    private final class HeaderBlock {
        let fields: UnsafeMutablePointer<nghttp2_nv>
        let count: Int
        private var strings: [UnsafeMutablePointer<CChar>] = []

        init(_ pairs: [(String, String)]) {
            count = pairs.count
            fields = .allocate(capacity: pairs.count)
            for (index, (name, value)) in pairs.enumerated() {
                let n = strdup(name)!, v = strdup(value)!
                strings += [n, v]
                let flags = UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue)
                (fields + index).initialize(to: nghttp2_nv(
                    name: UnsafeMutableRawPointer(n).assumingMemoryBound(to: UInt8.self),
                    value: UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt8.self),
                    namelen: strlen(n), valuelen: strlen(v), flags: flags))
            }
        }

        deinit {
            fields.deinitialize(count: count)
            fields.deallocate()
            strings.forEach { free($0) }
        }
    }

    private func headerBlock(for path: String) -> HeaderBlock {
        if let block = headerBlocks[path] { return block }
        let block = HeaderBlock([
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        headerBlocks[path] = block
        return block
    }

    // MARK: Callbacks (`user` is the connection, alive for the call)

    private static func me(_ user: UnsafeMutableRawPointer?) -> H2GRPCConnection {
        Unmanaged<H2GRPCConnection>.fromOpaque(user!).takeUnretainedValue()
    }

    private static func install(_ callbacks: OpaquePointer) {
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameCount, value, valueCount, _, user in
            guard let frame, let name, let value else { return 0 }
            let me = H2GRPCConnection.me(user)
            guard frame.pointee.hd.stream_id == me.stream else { return 0 }
            let field = String(decoding: UnsafeBufferPointer(start: name, count: nameCount), as: UTF8.self)
            if field == "grpc-status" {
                me.grpcStatus = Int(String(decoding: UnsafeBufferPointer(start: value, count: valueCount), as: UTF8.self))
            } else if field == "grpc-message" {
                me.grpcMessage = String(decoding: UnsafeBufferPointer(start: value, count: valueCount), as: UTF8.self)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, id, data, count, user in
            guard let data else { return 0 }
            let me = H2GRPCConnection.me(user)
            if id == me.stream { me.answer.append(contentsOf: UnsafeBufferPointer(start: data, count: count)) }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, code, user in
            let me = H2GRPCConnection.me(user)
            if id == me.stream {
                me.closed = true
                me.closeCode = code
            }
            return 0
        }
    }

    /// libnghttp2 asks for up to `length` bytes of the request's body.
    private static let readBody: nghttp2_data_source_read_callback = { _, _, buffer, length, flags, _, user in
        guard let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        let me = H2GRPCConnection.me(user)
        let take = min(length, me.body.count - me.bodySent)
        me.body.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress! + me.bodySent, count: take) }
        me.bodySent += take
        if me.bodySent == me.body.count { flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue) }
        return take
    }
}

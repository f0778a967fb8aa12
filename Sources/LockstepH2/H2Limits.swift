/// Every limit an HTTP/2 connection served by the engine runs under, each with its unit. Some are handed to
/// libnghttp2 (`H2Session` sets them as options or SETTINGS and tests read them back); the rest libnghttp2
/// 1.52 does not have, and `H2ConnectionState` enforces them (the header list received, PING, SETTINGS and
/// empty-frame floods, handlers still running after their stream was reset, request and response bytes).
public struct H2Limits: Sendable, Equatable {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); the next gets
    /// RST_STREAM REFUSED_STREAM. Requests whose handler still runs count too, even once their stream
    /// was reset (rapid reset: a reset frees the protocol's slot before the work stops).
    public var concurrentStreamsMax: UInt32 = 256
    /// Request bytes a client may send on one stream before it must wait for a WINDOW_UPDATE
    /// (SETTINGS_INITIAL_WINDOW_SIZE).
    public var streamWindowBytes: UInt32 = 256 * 1024
    /// Request bytes a client may have in flight on the whole connection.
    public var connectionWindowBytes: Int32 = 1 << 20
    /// Request body bytes held for requests not yet handed to the application, all streams of a
    /// connection together; a chunk that would pass it gets its stream refused (RST_STREAM
    /// REFUSED_STREAM: nothing was processed, the client may retry).
    public var connectionBufferedBytesMax: Int = 8 << 20
    /// The largest frame payload a client may send (SETTINGS_MAX_FRAME_SIZE).
    public var frameBytesMax: UInt32 = 16_384
    /// A request's header list, counted as RFC 9113 §6.5.2 does (name + value + 32 bytes per field);
    /// over it the request is answered 431 and its fields are not kept. Advertised as
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    public var headerListBytesMax: Int = 16_384
    /// Fields in one request's header list; over it, 431 as above.
    public var headerFieldsMax: Int = 100
    /// The HPACK dynamic table the client's encoder may use, and ours (SETTINGS_HEADER_TABLE_SIZE).
    public var headerTableBytes: UInt32 = 4_096
    /// Entries in one SETTINGS frame; more closes the connection (libnghttp2's option).
    public var settingsEntriesMax: Int = 16
    /// CONTINUATION frames after one HEADERS; more closes the connection (CVE-2024-27316).
    public var continuationsMax: Int = 8
    /// PING and SETTINGS acknowledgements queued and not yet sent (a client that floods while not
    /// reading); more closes the connection.
    public var outboundAcksMax: Int = 100
    /// The largest header block we send (response headers or trailers).
    public var sendHeaderBlockBytesMax: Int = 32 * 1_024
    /// A request's body; over it the request is answered 413 and the stream reset.
    public var requestBodyBytesMax: Int = 1 << 20
    /// Response bytes a stream may have buffered and not yet sent (the client's window is closed or the
    /// socket is slow); a handler that writes past it has its stream reset (CANCEL).
    public var responseBufferBytesMax: Int = 1 << 20
    /// A writer that waits on `H2Response.write` resumes once its stream has this many bytes or fewer
    /// not yet sent (the pace of the client's reading).
    public var responseBufferLowBytes: Int = 64 * 1_024
    /// RST_STREAM frames a client may send (CVE-2023-44487); when spent, GOAWAY (libnghttp2's limiter).
    public var resets = Rate(burst: 256, perSecond: 33)
    /// PING frames a client may send (CVE-2019-9512); when spent, GOAWAY ENHANCE_YOUR_CALM.
    public var pings = Rate(burst: 20, perSecond: 5)
    /// SETTINGS frames a client may send (CVE-2019-9515); when spent, GOAWAY ENHANCE_YOUR_CALM.
    public var settingsFrames = Rate(burst: 10, perSecond: 2)
    /// Frames that carry nothing: DATA of length 0 without END_STREAM, and HEADERS with an empty block
    /// (CVE-2019-9518); when spent, GOAWAY ENHANCE_YOUR_CALM.
    public var emptyFrames = Rate(burst: 100, perSecond: 10)

    /// A writer waiting this long for the client to read (`H2Response.write`'s future, its stream over
    /// `responseBufferLowBytes`) has its stream reset (CANCEL): a client that stopped reading a watch
    /// does not hold it for ever (nil: never).
    public var stalledReaderMillisMax: Int64? = nil
    /// A connection from which nothing has been read this long is sent a PING; if nothing (its
    /// acknowledgement included) arrives within `keepaliveTimeoutMillis` more, it is closed: a client
    /// that died without closing does not hold its parked streams until they end (nil: never).
    public var keepaliveMillis: Int64? = nil
    public var keepaliveTimeoutMillis: Int64 = 10_000
    /// A request whose body has not ended this long after its head is refused (`H2Responder.refusal`
    /// with 408) and its stream reset: a body trickled byte by byte does not hold a stream (nil: never).
    public var requestBodyMillisMax: Int64? = nil
    /// A connection with no stream open this long gets GOAWAY and is closed (nil: never).
    public var connectionIdleMillisMax: Int64? = nil
    /// After a graceful shutdown's GOAWAY, a connection still open this long later is closed, its
    /// streams in flight with it: a client that stopped reading a watch does not hold the shutdown for
    /// the stalled-reader limit (nil: never).
    public var shutdownGraceMillis: Int64? = nil

    public init() {}

    /// A token bucket: `burst` at once, refilled at `perSecond`.
    public struct Rate: Sendable, Equatable {
        public var burst: UInt32
        public var perSecond: UInt32
        public init(burst: UInt32, perSecond: UInt32) {
            self.burst = burst
            self.perSecond = perSecond
        }
    }
}

/// A token bucket on the monotonic clock (nanoseconds passed in: the state machine reads no clock).
struct H2TokenBucket: Sendable, Equatable {
    let rate: H2Limits.Rate
    private var tokens: UInt64
    private var refilledAtNanos: UInt64

    init(_ rate: H2Limits.Rate, nowNanos: UInt64) {
        self.rate = rate
        tokens = UInt64(rate.burst) * Self.scale
        refilledAtNanos = nowNanos
    }

    /// Takes one token; false when the bucket is empty.
    mutating func take(nowNanos: UInt64) -> Bool {
        // Whole nanoseconds of refill, saturating: a clock read far apart cannot overflow.
        let elapsed = nowNanos >= refilledAtNanos ? nowNanos - refilledAtNanos : 0
        let (refill, overflow) = elapsed.multipliedReportingOverflow(by: UInt64(rate.perSecond))
        let ceiling = UInt64(rate.burst) * Self.scale
        tokens = overflow ? ceiling : min(ceiling, tokens &+ refill)
        refilledAtNanos = max(refilledAtNanos, nowNanos)
        guard tokens >= Self.scale else { return false }
        tokens -= Self.scale
        return true
    }

    /// One token in the bucket's units: tokens are counted in token-nanoseconds so a refill of
    /// `perSecond` tokens per second adds `perSecond` units per nanosecond exactly.
    private static let scale: UInt64 = 1_000_000_000
}

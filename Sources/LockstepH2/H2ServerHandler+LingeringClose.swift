import NIOCore

// How a connection closes: its last frames first, then the end, whatever the client does meanwhile.
extension H2ServerHandler {
    /// How long a connection closed after its last frames (a GOAWAY) goes on reading, and discarding, what
    /// the client still sends.
    static let lingerMillis: Int64 = 2_000

    /// Closes `channel` after its last frames without losing them: closing a socket with unread input makes
    /// the kernel send a reset, which can destroy the GOAWAY before the client reads it (a flood's client is
    /// still sending). So the output is shut once the writes queued before it are out (NIO queues the
    /// half-close behind them; over TLS it sends close_notify first): the client reads the GOAWAY, then the
    /// end. The input is read and discarded meanwhile (`channelRead` drops it while closing) until the
    /// client closes, which closes the channel, or `lingerMillis` after this call, when it is closed
    /// whatever the client does (one that reads nothing cannot hold it). A channel that cannot half-close
    /// closes at once.
    static func lingeringClose(_ channel: any Channel) {
        channel.eventLoop.scheduleTask(in: .milliseconds(lingerMillis)) { channel.close(promise: nil) }
        let shut = channel.eventLoop.makePromise(of: Void.self)
        channel.close(mode: .output, promise: shut)
        shut.futureResult.whenFailure { _ in channel.close(promise: nil) }
    }
}

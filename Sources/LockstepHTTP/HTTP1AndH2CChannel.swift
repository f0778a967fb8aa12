import HummingbirdCore
import HummingbirdHTTP2
import Logging
import NIOCore
import NIOHTTP2
import LockstepService

// The child channel set-up that serves HTTP/1.1 and h2c on one port, on top of the sniffing handler
// in H2CSniffing.swift (which says how it works).

/// A child channel that serves HTTP/1.1 and plaintext HTTP/2 with prior knowledge (h2c) on the same port.
/// It uses Hummingbird's own `HTTP1Channel` and `HTTP2Channel` pipelines. Compare `HTTP2UpgradeChannel`,
/// which chooses between the same two pipelines using TLS ALPN.
@available(macOS 14, iOS 17, tvOS 17, visionOS 1, *)
public struct HTTP1AndH2CChannel: HTTPChannelHandler {
    public struct Configuration: Sendable {
        /// Configuration for connections detected as HTTP/1.x.
        public var http1: HTTP1Channel.Configuration
        /// Configuration for connections detected as HTTP/2 (h2c). `http2.streamConfiguration` applies to each
        /// HTTP/2 stream.
        public var http2: HTTP2Channel.Configuration
        /// How long a new connection may take to send enough bytes for a decision (one byte for HTTP/1, all 24
        /// preface bytes for HTTP/2) before it is closed. `nil` disables the timeout (not recommended).
        public var prefaceReadTimeout: TimeAmount?
        /// Makes the handler that closes an HTTP/2 connection with no open stream outright, whatever its
        /// client does with the GOAWAY the idle timeout sent, and counts its peer's stream resets
        /// (`HTTP2IdleBackstop`). `nil`: none.
        var http2IdleBackstop: (@Sendable (any Channel) -> HTTP2IdleBackstop)?

        /// - Parameters:
        ///   - http1: Configuration for HTTP/1.x connections
        ///   - http2: Configuration for HTTP/2 (h2c) connections
        ///   - prefaceReadTimeout: Maximum time to wait for the first bytes of a connection
        public init(
            http1: HTTP1Channel.Configuration = .init(),
            http2: HTTP2Channel.Configuration = .init(),
            prefaceReadTimeout: TimeAmount? = .seconds(30)
        ) {
            self.http1 = http1
            self.http2 = http2
            self.prefaceReadTimeout = prefaceReadTimeout
        }

        /// This configuration with `make` building each HTTP/2 connection's backstop.
        package func withHTTP2IdleBackstop(_ make: @escaping @Sendable (any Channel) -> HTTP2IdleBackstop) -> Self {
            var copy = self
            copy.http2IdleBackstop = make
            return copy
        }
    }

    public struct Value: ServerChildChannelValue {
        let negotiatedHTTPVersion: EventLoopFuture<NIONegotiatedHTTPVersion<HTTP1Channel.Value, HTTP2Channel.Value>>
        public let channel: any Channel
    }

    private let http1: HTTP1Channel
    private let http2: HTTP2Channel
    public let configuration: Configuration
    public var responder: Responder {
        self.http1.responder
    }

    /// - Parameters:
    ///   - responder: Function returning an HTTP response for an HTTP request
    ///   - configuration: Channel configuration
    public init(
        responder: @escaping HTTPChannelHandler.Responder,
        configuration: Configuration = .init()
    ) {
        self.configuration = configuration
        self.http1 = HTTP1Channel(responder: responder, configuration: configuration.http1)
        self.http2 = HTTP2Channel(responder: responder, configuration: configuration.http2)
    }

    /// Set up the child channel: install the sniffer. The HTTP/1 or HTTP/2 pipeline is added once the first
    /// bytes have been read.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let sniffer = H2CPriorKnowledgeSniffingHandler<NIONegotiatedHTTPVersion<HTTP1Channel.Value, HTTP2Channel.Value>>(
                eventLoop: channel.eventLoop,
                timeout: self.configuration.prefaceReadTimeout
            ) { detected, channel in
                switch detected {
                case .http1:
                    return self.http1.setup(channel: channel, logger: logger).map { .http1_1($0) }
                case .http2:
                    return self.http2.setup(channel: channel, logger: logger).flatMapThrowing { value in
                        if let make = self.configuration.http2IdleBackstop {
                            try channel.pipeline.syncOperations.addHandler(make(channel))
                        }
                        return .http2(value)
                    }
                }
            }
            do {
                try channel.pipeline.syncOperations.addHandler(sniffer)
            } catch {
                sniffer.notAdded(error)
                throw error
            }
            return Value(negotiatedHTTPVersion: sniffer.protocolNegotiationResult, channel: channel)
        }
    }

    /// Wait for the protocol decision, then pass the connection to Hummingbird's HTTP/1 or HTTP/2 handler.
    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiatedHTTPVersion.get() {
            case .http1_1(let http1):
                await self.http1.handle(value: http1, logger: logger)
            case .http2(let http2):
                await self.http2.handle(value: http2, logger: logger)
            }
        } catch {
            logger.debug("Closing connection before HTTP version was detected: \(error)")
        }
    }
}

// MARK: - HTTPServerBuilder

@available(macOS 14, iOS 17, tvOS 17, visionOS 1, *)
extension HTTPServerBuilder {
    /// Build a plaintext server that accepts both HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port.
    ///
    /// ```
    /// let app = Application(
    ///     router: router,
    ///     server: .http1AndH2C(configuration: .init(http1: .init(idleTimeout: .seconds(60))))
    /// )
    /// ```
    /// - Parameter configuration: HTTP/1, HTTP/2 and sniffing configuration
    /// - Returns: HTTPServerBuilder
    public static func http1AndH2C(
        configuration: HTTP1AndH2CChannel.Configuration = .init()
    ) -> HTTPServerBuilder {
        .init { responder in
            HTTP1AndH2CChannel(responder: responder, configuration: configuration)
        }
    }
}

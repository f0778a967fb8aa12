#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import Synchronization
import LockstepService

/// Open connections on both listeners, overall and per peer address, and the refusal of those over
/// the limits. One gate serves both listeners, so the overall limit is the process's.
///
/// A refused connection is accepted and closed at once (before any byte is read), counted in
/// `lockstep_connections_refused_total{reason}` and logged (at most once a second, with how many were
/// refused since the last line), so an operator sees why a client could not connect.
package final class ConnectionGate: Sendable {
    package enum Refusal: String, Sendable {
        case overall = "connections_max"
        case perPeer = "connections_per_peer_max"
        case resets = "stream_resets_per_peer_max"
    }

    package struct Limits: Hashable, Sendable {
        /// Most connections open at once on both listeners together.
        var connectionsMax: Int
        /// Most connections open at once from one peer address (IP, whatever the port).
        var connectionsPerPeerMax: Int
        /// Most HTTP/2 streams one peer address may reset (or have reset) in `resetWindow`, over all its
        /// connections: past it the peer's connections are closed and new ones refused until the window
        /// ends. NIOHTTP2 limits resets per connection; this is the budget a client cannot escape by
        /// reconnecting (rapid reset, CVE-2023-44487).
        var streamResetsPerPeerMax = 1_000
        var resetWindow: Duration = .seconds(10)

        package init(connectionsMax: Int, connectionsPerPeerMax: Int, streamResetsPerPeerMax: Int = 1_000, resetWindow: Duration = .seconds(10)) {
            self.connectionsMax = connectionsMax
            self.connectionsPerPeerMax = connectionsPerPeerMax
            self.streamResetsPerPeerMax = streamResetsPerPeerMax
            self.resetWindow = resetWindow
        }
    }

    private struct ResetCount {
        var since: ContinuousClock.Instant
        var count: Int
    }

    private struct State {
        var open = 0
        var perPeer: [String: Int] = [:]
        var refusedSinceLog = 0
        var lastLog: ContinuousClock.Instant?
        /// Resets per peer in the current window; peers over budget, until when.
        var resets: [String: ResetCount] = [:]
        var penalized: [String: ContinuousClock.Instant] = [:]
    }

    /// Peers tracked for resets (and peers penalized) at most. Past it, expired entries are dropped, and
    /// if more than half the table is still live (many peers resetting at once), only the newer half is
    /// kept: the table never grows past the limit, and the next pass is at least half a table of new
    /// peers away (not a pass under the lock on every reset).
    package static let resetPeersTrackedMax = 4_096

    package let limits: Limits
    private let state = Mutex(State())

    package init(limits: Limits) { self.limits = limits }

    /// Connections open now (admitted and not yet closed).
    package var openCount: Int { state.withLock { $0.open } }

    /// Admits a connection from `peer` (counted until `release`), or says why not.
    package func admit(peer: String, now: ContinuousClock.Instant = .now) -> Refusal? {
        state.withLock { state in
            if let until = state.penalized[peer] {
                if now < until { return .resets }
                state.penalized[peer] = nil
            }
            if state.open >= limits.connectionsMax { return .overall }
            let fromPeer = state.perPeer[peer, default: 0]
            if fromPeer >= limits.connectionsPerPeerMax { return .perPeer }
            state.open += 1
            state.perPeer[peer] = fromPeer + 1
            return nil
        }
    }

    /// Counts a stream of `peer` closed by a reset; true when the peer is over its budget now (its
    /// connections should close; new ones are refused until its window ends).
    package func noteReset(peer: String, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            if let until = state.penalized[peer], now < until { return true }
            var entry = state.resets[peer] ?? ResetCount(since: now, count: 0)
            if now - entry.since >= limits.resetWindow { entry = ResetCount(since: now, count: 0) }
            entry.count += 1
            state.resets[peer] = entry
            if state.resets.count > Self.resetPeersTrackedMax {
                let window = limits.resetWindow
                state.resets = Self.newerHalf(of: state.resets.filter { now - $0.value.since < window }, by: \.since)
            }
            guard entry.count > limits.streamResetsPerPeerMax else { return false }
            state.penalized[peer] = entry.since + limits.resetWindow
            state.resets[peer] = nil
            if state.penalized.count > Self.resetPeersTrackedMax {
                state.penalized = Self.newerHalf(of: state.penalized.filter { now < $0.value }, by: \.self)
            }
            return true
        }
    }

    /// Peers tracked now, for resets and as penalized.
    package var trackedPeers: (resets: Int, penalized: Int) { state.withLock { ($0.resets.count, $0.penalized.count) } }

    /// `table` when it holds at most half of `resetPeersTrackedMax`, else its entries with the latest
    /// `key`, that many.
    private static func newerHalf<Value>(of table: [String: Value], by key: (Value) -> ContinuousClock.Instant) -> [String: Value] {
        let half = resetPeersTrackedMax / 2
        guard table.count > half else { return table }
        return Dictionary(uniqueKeysWithValues: table.sorted { key($0.value) > key($1.value) }.prefix(half).map { ($0.key, $0.value) })
    }

    /// Ends the count of a connection `admit` let in.
    package func release(peer: String) {
        state.withLock { state in
            state.open -= 1
            let left = state.perPeer[peer, default: 1] - 1
            state.perPeer[peer] = left > 0 ? left : nil
        }
    }

    /// Whether a refusal should be logged now (at most once a second), and how many were refused since
    /// the last line, this one included.
    package func refusalToLog(now: ContinuousClock.Instant) -> Int? {
        state.withLock { state in
            state.refusedSinceLog += 1
            if let last = state.lastLog, now - last < .seconds(1) { return nil }
            state.lastLog = now
            defer { state.refusedSinceLog = 0 }
            return state.refusedSinceLog
        }
    }
}

/// Sits first on a listening channel: every accepted connection passes through `channelRead`, where the
/// gate admits it (and releases it when it closes) or it is closed at once.
package final class ConnectionAdmission: ChannelInboundHandler, Sendable {
    package typealias InboundIn = any Channel
    package typealias InboundOut = any Channel

    package let gate: ConnectionGate
    package let listener: String
    package let logger: Logger
    package let refused: @Sendable (ConnectionGate.Refusal) -> Void

    package init(gate: ConnectionGate, listener: String, logger: Logger, refused: @escaping @Sendable (ConnectionGate.Refusal) -> Void) {
        self.gate = gate
        self.listener = listener
        self.logger = logger
        self.refused = refused
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        let peer = child.remoteAddress?.ipAddress ?? "unknown"
        if let refusal = gate.admit(peer: peer) {
            refused(refusal)
            if let count = gate.refusalToLog(now: .now) {
                let limit = switch refusal {
                case .overall: gate.limits.connectionsMax
                case .perPeer: gate.limits.connectionsPerPeerMax
                case .resets: gate.limits.streamResetsPerPeerMax
                }
                logger.warning("refused \(count) connection(s) on the \(listener) listener, the last from \(peer): \(refusal.rawValue) (\(limit)) reached")
            }
            // Closed before it is registered: no pipeline is set up for it and nothing is read from it.
            child.eventLoop.execute { child.close(promise: nil) }
            return
        }
        let gate = self.gate
        child.closeFuture.whenComplete { _ in gate.release(peer: peer) }
        context.fireChannelRead(data)
    }
}

/// The process's open-file limit: raised to the hard limit at start, since every connection is a file.
package enum OpenFileLimit {
    /// The soft and hard limits after raising the soft one to the hard one (as far as the system allows).
    package static func raise() -> (soft: UInt64, hard: UInt64)? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Descriptors kept back from connections for the log, snapshots, handlers' pipes and the runtime.
    package static let reserve = 256

    /// The connection limit that fits under `soft` open files with the reserve kept.
    package static func connectionsFitting(soft: UInt64, configured: Int) -> Int {
        let room = soft > UInt64(reserve) ? Int(clamping: soft - UInt64(reserve)) : 1
        return max(1, min(configured, room))
    }
}

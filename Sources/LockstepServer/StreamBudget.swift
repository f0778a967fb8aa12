import LockstepH2
import LockstepHTTP
import NIOCore

/// What a gRPC connection on the engine reports about its streams: the streams its client resets count
/// against the client's budget across all its connections (`ConnectionGate`), and over it this connection
/// closes (rapid reset spread over reconnections); a stream cut for a client that stopped reading is counted.
final class StreamBudget: H2StreamObserver {
    private let gate: ConnectionGate
    private let peer: String
    private let channel: any Channel
    private let overBudget: @Sendable () -> Void
    private let stalled: @Sendable () -> Void

    init(gate: ConnectionGate, peer: String, channel: any Channel, overBudget: @escaping @Sendable () -> Void, stalled: @escaping @Sendable () -> Void) {
        self.gate = gate
        self.peer = peer
        self.channel = channel
        self.overBudget = overBudget
        self.stalled = stalled
    }

    func streamOpened() {}

    func streamClosed(reset: Bool) {
        guard reset, gate.noteReset(peer: peer) else { return }
        overBudget()
        channel.close(promise: nil)
    }

    func streamStalled() { stalled() }
}

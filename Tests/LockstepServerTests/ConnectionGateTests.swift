import Testing
@testable import LockstepHTTP

/// The connection gate's own tables (`ConnectionGate`): admissions per peer and in all, the reset budget
/// a peer cannot escape by reconnecting, and the tables that budget keeps, bounded however many peers.
@Suite struct ConnectionGateTests {
    @Test func connectionsAreAdmittedUpToTheLimitsAndReleased() {
        let gate = ConnectionGate(limits: .init(connectionsMax: 3, connectionsPerPeerMax: 2))
        #expect(gate.admit(peer: "a") == nil && gate.admit(peer: "a") == nil)
        #expect(gate.admit(peer: "a") == .perPeer)
        #expect(gate.admit(peer: "b") == nil && gate.admit(peer: "c") == .overall)
        gate.release(peer: "a")
        #expect(gate.admit(peer: "c") == nil && gate.openCount == 3)
    }

    @Test func aPeerOverItsResetBudgetIsRefusedUntilItsWindowEnds() {
        let gate = ConnectionGate(limits: .init(connectionsMax: 10, connectionsPerPeerMax: 10, streamResetsPerPeerMax: 2, resetWindow: .seconds(10)))
        let start = ContinuousClock.now
        #expect(!gate.noteReset(peer: "a", now: start) && !gate.noteReset(peer: "a", now: start))
        #expect(gate.noteReset(peer: "a", now: start + .seconds(1)))
        #expect(gate.admit(peer: "a", now: start + .seconds(9)) == .resets)
        #expect(gate.admit(peer: "a", now: start + .seconds(10)) == nil)
    }

    /// A review found the table of reset counts unbounded while its entries were live (a pass over all
    /// of it under the lock on every reset, past 4,096 peers): now it keeps the newer half.
    @Test func theResetTablesStayBoundedWhileEveryEntryIsLive() {
        let gate = ConnectionGate(limits: .init(connectionsMax: 10, connectionsPerPeerMax: 10, streamResetsPerPeerMax: 1, resetWindow: .seconds(60)))
        let start = ContinuousClock.now
        let peers = ConnectionGate.resetPeersTrackedMax * 3
        for index in 0..<peers {
            _ = gate.noteReset(peer: "counted-\(index)", now: start + .milliseconds(index))
            #expect(gate.trackedPeers.resets <= ConnectionGate.resetPeersTrackedMax)
        }
        // Penalized peers too (two resets each, over a budget of one).
        for index in 0..<peers {
            _ = gate.noteReset(peer: "penalized-\(index)", now: start + .milliseconds(index))
            _ = gate.noteReset(peer: "penalized-\(index)", now: start + .milliseconds(index))
            #expect(gate.trackedPeers.penalized <= ConnectionGate.resetPeersTrackedMax)
        }
        // The newest penalized peer is still held off.
        #expect(gate.admit(peer: "penalized-\(peers - 1)", now: start + .seconds(1)) == .resets)
    }
}

import Crypto
import LockstepCore
import LockstepStore

/// SHA-256 of a state's canonical bytes (see docs/state-digest.md): equal digests mean equal states.
public struct StateDigest: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The digest of `canonicalBytes`.
    public init(canonicalBytes: [UInt8]) {
        self.bytes = Array(SHA256.hash(data: canonicalBytes))
    }

    public var hex: String { bytes.hexString }
    public var description: String { hex }
}

extension LogState {
    /// The digest of this state's canonical encoding.
    public var digest: StateDigest { StateDigest(canonicalBytes: canonicalBytes) }
}

extension Snapshot {
    /// Whether the snapshot's state is in this build's canonical format (older ones are replayed past).
    public var isCurrentFormat: Bool {
        state.count > LogState.canonicalMagic.count
            && Array(state.prefix(LogState.canonicalMagic.count)) == LogState.canonicalMagic
            && state[LogState.canonicalMagic.count] == LogState.canonicalFormat
    }
}

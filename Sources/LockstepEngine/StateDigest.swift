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

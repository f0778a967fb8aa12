import LockstepCore
import LockstepWire

extension Lockstep_V1_StateAtResponse {
    /// The whole of `state` with its digest: what `GetStateAt` answers and `lockstep history state`
    /// prints, from a server or a data directory alike.
    public init(_ state: LogState) {
        self.init(state, digest: state.digest.hex)
    }
}

import Crypto
import LockstepCore
import LockstepStore

extension PlanSnapshot {
    /// `self` with `contentHash` set to the hex SHA-256 of its canonical content.
    public func hashed() -> PlanSnapshot {
        var plan = self
        plan.contentHash = Array(SHA256.hash(data: canonicalContentBytes)).hexString
        return plan
    }
}

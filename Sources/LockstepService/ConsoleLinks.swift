import LockstepStore
import Synchronization

/// One-time codes that sign a browser in to the web console (docs/console.md): `lockstep console link`
/// asks the coordinator for one (`CreateConsoleLink`) with the caller's own bearer token, and the link
/// `…/ui#code=CODE` signs one browser in as that caller. The bearer token never goes into an address,
/// a browser's history or a chat; a code is good once, for minutes, on the coordinator that made it.
///
/// Codes live in this process only and are bounded: in number, per principal and in age. The table
/// keeps each code's SHA-256, not the code.
package final class ConsoleLinks: Sendable {
    package struct Limits: Sendable {
        /// Codes not yet used, all principals (a new one over it is refused, after expired ones are dropped).
        package var codesMax = 1_000
        /// Codes per principal: a new one over it replaces that principal's oldest.
        package var codesPerPrincipalMax = 16
        /// A code is good this long after it is made, in milliseconds.
        package var lifetimeMillisMax = 5 * 60 * 1_000

        package init() {}
    }

    private struct Code {
        let principal: Principal
        let made: ContinuousClock.Instant
        let serial: UInt64
    }

    private struct State {
        /// By the SHA-256 of the code.
        var codes: [String: Code] = [:]
        var serial: UInt64 = 0
    }

    package let limits: Limits
    private let state = Mutex(State())
    private let now: @Sendable () -> ContinuousClock.Instant
    private let random: @Sendable () -> String

    /// `random` gives a new unpredictable code each call: 64 hex digits (256 bits).
    package init(limits: Limits = Limits(), now: @escaping @Sendable () -> ContinuousClock.Instant = { .now },
                 random: @escaping @Sendable () -> String = ConsoleLinks.newCode) {
        self.limits = limits
        self.now = now
        self.random = random
    }

    /// 256 bits from the system's generator, as 64 hex digits (sign-in codes; the console's session ids,
    /// CSRF tokens and `--dev` secret too).
    package static func newCode() -> String { randomBytes().hexString }

    /// 32 unpredictable bytes from the system's generator.
    package static func randomBytes() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).flatMap { _ in withUnsafeBytes(of: generator.next() as UInt64) { Array($0) } }
    }

    package var count: Int { state.withLock { $0.codes.count } }

    /// A new code that signs in as `principal`.
    package func make(for principal: Principal) throws(APIError) -> String {
        let code = random()
        let at = now()
        let made: Bool = state.withLock { state in
            dropExpired(&state, at: at)
            let own = state.codes.filter { $0.value.principal.name == principal.name }
            let replaced = own.count >= limits.codesPerPrincipalMax ? own.min(by: { $0.value.serial < $1.value.serial })?.key : nil
            guard state.codes.count - (replaced == nil ? 0 : 1) < limits.codesMax else { return false }
            if let replaced { state.codes[replaced] = nil }
            state.serial &+= 1
            state.codes[AuthConfig.hash(code)] = Code(principal: principal, made: at, serial: state.serial)
            return true
        }
        guard made else {
            throw APIError(.tooManySessions, "the console holds \(limits.codesMax) unused sign-in links already (its limit); make one again when some have been used or expired")
        }
        return code
    }

    /// Signs in with `code`: `admit` is given the principal it signs in as (and opens the session), and
    /// the code is spent unless `admit` fails: one refused (at the sessions' limit) puts the link back,
    /// good for the rest of its time. Nil when the code is unknown, spent or expired. The code is taken
    /// out while `admit` runs (outside the lock), so a second use of it meanwhile finds nothing.
    package func use<Admitted>(_ code: String, _ admit: (Principal) throws(APIError) -> Admitted) throws(APIError) -> Admitted? {
        let key = AuthConfig.hash(code)
        let at = now()
        let taken: Code? = state.withLock { state in
            guard let found = state.codes.removeValue(forKey: key), !expired(found, at: at) else { return nil }
            return found
        }
        guard let taken else { return nil }
        do {
            return try admit(taken.principal)
        } catch {
            // Back as it was (its age counts from when it was made); over the limits meanwhile, it is not.
            state.withLock { state in
                let own = state.codes.values.filter { $0.principal.name == taken.principal.name }.count
                if state.codes.count < limits.codesMax, own < limits.codesPerPrincipalMax { state.codes[key] = taken }
            }
            throw error
        }
    }

    /// The principal `code` signs in as, spending it (tests).
    package func use(_ code: String) -> Principal? {
        try? use(code) { (principal: Principal) throws(APIError) in principal }
    }

    private func expired(_ code: Code, at: ContinuousClock.Instant) -> Bool {
        at - code.made >= .milliseconds(limits.lifetimeMillisMax)
    }

    private func dropExpired(_ state: inout State, at: ContinuousClock.Instant) {
        state.codes = state.codes.filter { !expired($0.value, at: at) }
    }
}

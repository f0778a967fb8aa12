import LockstepService
import LockstepStore
import Synchronization

/// The web console's sign-ins (docs/console.md): a person signs in with a bearer token once and the
/// browser keeps a session id in an HttpOnly, SameSite=Strict cookie; every API call made with the
/// cookie carries the session's CSRF token in a header too. Sessions live in this process only (a
/// restart signs everyone out) and are bounded: in number, per principal, in idle time and in age.
package final class ConsoleSessions: Sendable {
    package struct Limits: Sendable {
        /// Sessions held at once, all principals (a sign-in over it is refused, after expired ones are dropped).
        package var sessionsMax = 1_000
        /// Sessions per principal: a sign-in over it ends that principal's oldest session.
        package var sessionsPerPrincipalMax = 16
        /// A session unused this long ends, in milliseconds.
        package var idleMillisMax = 30 * 60 * 1_000
        /// A session ends this long after its sign-in whatever its use, in milliseconds.
        package var lifetimeMillisMax = 12 * 60 * 60 * 1_000

        package init() {}
    }

    /// The cookie that carries the session id: over TLS with the `__Host-` prefix, which a browser
    /// accepts only when `Secure`, for `Path=/` and set by this very host (no sibling domain can plant or
    /// shadow it). And the header that carries the session's CSRF token.
    package static let cookieName = "lockstep_session"
    package static let secureCookieName = "__Host-lockstep_session"
    package static let csrfField = "x-lockstep-csrf"

    /// What a signed-in browser is: who, its CSRF token, and its times on the monotonic clock.
    package struct Session: Sendable {
        package let principal: Principal
        package let csrfToken: String
        let signedIn: ContinuousClock.Instant
        var lastUsed: ContinuousClock.Instant
        let serial: UInt64
    }

    private struct State {
        /// By the SHA-256 of the session id: the ids themselves are kept only by the browsers.
        var sessions: [String: Session] = [:]
        var serial: UInt64 = 0
    }

    package let limits: Limits
    private let state = Mutex(State())
    private let now: @Sendable () -> ContinuousClock.Instant
    private let random: @Sendable () -> [UInt8]

    /// `random` gives 32 unpredictable bytes each call (the system's generator; tests may pass their own).
    package init(limits: Limits = Limits(), now: @escaping @Sendable () -> ContinuousClock.Instant = { .now },
                 random: @escaping @Sendable () -> [UInt8] = ConsoleLinks.randomBytes) {
        self.limits = limits
        self.now = now
        self.random = random
    }

    /// 256 unpredictable bits in hex (session ids, CSRF tokens, the `--dev` console secret).
    package static func newSecret() -> String { ConsoleLinks.newCode() }

    package var count: Int { state.withLock { $0.sessions.count } }

    /// Opens a session for `principal`: its id (for the cookie) and its CSRF token.
    package func open(for principal: Principal, replacing previous: String? = nil) throws(APIError) -> (id: String, csrfToken: String) {
        let id = random().hexString
        let csrf = random().hexString
        let at = now()
        let opened: Bool = state.withLock { state in
            dropExpired(&state, at: at)
            // The session the browser held (`previous`) ends with this sign-in, and only if it is admitted:
            // it does not count against the limits, and its place is not taken from another browser.
            let replaced = previous.map { AuthConfig.hash($0) }.flatMap { state.sessions[$0] == nil ? nil : $0 }
            let own = state.sessions.filter { $0.value.principal.name == principal.name && $0.key != replaced }
            let evicted = own.count >= limits.sessionsPerPrincipalMax ? own.min(by: { $0.value.serial < $1.value.serial })?.key : nil
            let freed = (replaced == nil ? 0 : 1) + (evicted == nil ? 0 : 1)
            guard state.sessions.count - freed < limits.sessionsMax else { return false }
            if let replaced { state.sessions[replaced] = nil }
            if let evicted { state.sessions[evicted] = nil }
            state.serial &+= 1
            state.sessions[AuthConfig.hash(id)] = Session(principal: principal, csrfToken: csrf, signedIn: at, lastUsed: at, serial: state.serial)
            return true
        }
        guard opened else {
            throw APIError(.tooManySessions, "the console holds \(limits.sessionsMax) sessions already (its limit); sign in again when some have ended")
        }
        return (id, csrf)
    }

    /// The live session with id `id` (its idle time starts again), or nil.
    package func session(id: String) -> Session? {
        let key = AuthConfig.hash(id)
        let at = now()
        return state.withLock { state in
            guard var session = state.sessions[key] else { return nil }
            guard !expired(session, at: at) else {
                state.sessions[key] = nil
                return nil
            }
            session.lastUsed = at
            state.sessions[key] = session
            return session
        }
    }

    /// Ends the session with id `id`, if there is one.
    package func end(id: String) {
        let key = AuthConfig.hash(id)
        state.withLock { _ = $0.sessions.removeValue(forKey: key) }
    }

    private func expired(_ session: Session, at: ContinuousClock.Instant) -> Bool {
        at - session.lastUsed >= .milliseconds(limits.idleMillisMax) || at - session.signedIn >= .milliseconds(limits.lifetimeMillisMax)
    }

    private func dropExpired(_ state: inout State, at: ContinuousClock.Instant) {
        state.sessions = state.sessions.filter { !expired($0.value, at: at) }
    }

    /// The session id in a `cookie` field's value (`a=1; lockstep_session=…`) under the cookie `name`,
    /// if any: the first of that name in the shape `open` makes (64 hex digits); others are skipped.
    package static func sessionID(inCookies cookies: String?, named name: String = cookieName) -> String? {
        guard let cookies else { return nil }
        for pair in cookies.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingSpaces == name else { continue }
            let value = parts[1].trimmingSpaces
            guard value.utf8.count == 64, value.utf8.allSatisfy({ Self.isHexDigit($0) }) else { continue }
            return String(value)
        }
        return nil
    }

    /// Equal strings, compared in time that does not depend on where they differ.
    package static func sameSecret(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var value = self
        while value.first == " " { value = value.dropFirst() }
        while value.last == " " { value = value.dropLast() }
        return value
    }
}

import Foundation
import LockstepHTTP
import LockstepService
import LockstepTestSupport
import Testing

/// The web console (issue 18, docs/console.md): its sessions' limits in process, and the console itself
/// in headless Chromium against a real `lockstep serve` with a migration run by an agent.
struct ConsoleSessionTests {
    /// A clock the test moves.
    final class Clock: @unchecked Sendable {
        let lock = NSLock()
        var now = ContinuousClock.now
        func advance(_ duration: Duration) { lock.withLock { now += duration } }
        func read() -> ContinuousClock.Instant { lock.withLock { now } }
    }

    static let alice = Principal(name: "alice", roles: [.operator])
    static let bob = Principal(name: "bob", roles: [.approver])

    @Test func sessionsAreBoundedInNumberPerPrincipalInIdleTimeAndInAge() throws {
        var limits = ConsoleSessions.Limits()
        limits.sessionsMax = 3
        limits.sessionsPerPrincipalMax = 2
        limits.idleMillisMax = 1_000
        limits.lifetimeMillisMax = 5_000
        let clock = Clock()
        let sessions = ConsoleSessions(limits: limits, now: { clock.read() })
        // Per principal: a third sign-in ends the principal's oldest session.
        let first = try sessions.open(for: Self.alice)
        let second = try sessions.open(for: Self.alice)
        let third = try sessions.open(for: Self.alice)
        #expect(sessions.session(id: first.id) == nil)
        #expect(sessions.session(id: second.id)?.principal.name == "alice")
        #expect(sessions.session(id: third.id)?.csrfToken == third.csrfToken)
        #expect(sessions.count == 2)
        // In all: over the limit a sign-in is refused with a stable code, and nothing is ended for it.
        _ = try sessions.open(for: Self.bob)
        #expect(throws: APIError.self) { try sessions.open(for: Principal(name: "carol", roles: [.auditor])) }
        do {
            _ = try sessions.open(for: Principal(name: "carol", roles: [.auditor]))
        } catch {
            #expect(error.errorCode == .tooManySessions)
        }
        #expect(sessions.count == 3)
        // Idle: used within the limit it lives on; unused past it, it ends.
        clock.advance(.milliseconds(900))
        #expect(sessions.session(id: second.id) != nil)
        clock.advance(.milliseconds(900))
        #expect(sessions.session(id: second.id) != nil)
        #expect(sessions.session(id: third.id) == nil, "unused for 1.8 s, over the 1 s idle limit")
        // Age: however much it is used, it ends at its lifetime.
        for _ in 0..<4 {
            clock.advance(.milliseconds(900))
            _ = sessions.session(id: second.id)
        }
        #expect(sessions.session(id: second.id) == nil, "5.4 s after its sign-in, over the 5 s lifetime")
        // Ended sessions make room again.
        #expect(throws: Never.self) { try sessions.open(for: Principal(name: "carol", roles: [.auditor])) }
    }

    /// A browser signing in again replaces the session it held, in one step: at a principal's limit no
    /// other browser's session is ended for it, and at the server's limit it is admitted (its own place
    /// is freed), while a refused sign-in leaves it the session it had.
    @Test func aSignInAgainReplacesTheBrowsersOwnSession() throws {
        var limits = ConsoleSessions.Limits()
        limits.sessionsMax = 3
        limits.sessionsPerPrincipalMax = 2
        let sessions = ConsoleSessions(limits: limits, now: { ContinuousClock.now })
        let other = try sessions.open(for: Self.alice)
        let mine = try sessions.open(for: Self.alice)
        let again = try sessions.open(for: Self.alice, replacing: mine.id)
        #expect(sessions.session(id: other.id) != nil, "another browser's session was ended for a sign-in that replaced its own")
        #expect(sessions.session(id: mine.id) == nil && sessions.session(id: again.id) != nil && sessions.count == 2)
        // The server full: a browser with a session signs in again (as someone else, too); one without is refused.
        let bobs = try sessions.open(for: Self.bob)
        #expect(sessions.count == 3)
        let switched = try sessions.open(for: Principal(name: "carol", roles: [.auditor]), replacing: bobs.id)
        #expect(sessions.session(id: bobs.id) == nil && sessions.session(id: switched.id) != nil && sessions.count == 3)
        #expect(throws: APIError.self) { try sessions.open(for: Principal(name: "dave", roles: [.auditor]), replacing: "not-a-session") }
        #expect(sessions.session(id: switched.id) != nil && sessions.count == 3)
    }

    @Test func aCookieNamesASessionOnlyInTheShapeTheServerMakes() {
        let id = String(repeating: "ab", count: 32)
        #expect(ConsoleSessions.sessionID(inCookies: "theme=dark; lockstep_session=\(id); other=1") == id)
        #expect(ConsoleSessions.sessionID(inCookies: "lockstep_session=\(id.uppercased())") == nil)
        #expect(ConsoleSessions.sessionID(inCookies: "lockstep_session=\(id)0") == nil)
        #expect(ConsoleSessions.sessionID(inCookies: "lockstep_session=") == nil)
        #expect(ConsoleSessions.sessionID(inCookies: "xlockstep_session=\(id)") == nil)
        #expect(ConsoleSessions.sessionID(inCookies: nil) == nil)
        // A malformed one does not hide a good one after it; over TLS only the __Host- name counts.
        #expect(ConsoleSessions.sessionID(inCookies: "lockstep_session=zz; lockstep_session=\(id)") == id)
        #expect(ConsoleSessions.sessionID(inCookies: "lockstep_session=\(id)", named: ConsoleSessions.secureCookieName) == nil)
        #expect(ConsoleSessions.sessionID(inCookies: "__Host-lockstep_session=\(id)", named: ConsoleSessions.secureCookieName) == id)
        #expect(ConsoleSessions.sameSecret("abc", "abc"))
        #expect(!ConsoleSessions.sameSecret("abc", "abd"))
        #expect(!ConsoleSessions.sameSecret("abc", "abcd"))
    }

    /// Any cookie field a browser (or anyone) sends: parsing never traps, and what it finds is always a
    /// session id of the server's shape that was in the field.
    @Test func anyCookieFieldParsesToNothingOrAnIDItHolds() async {
        var random = SeededGenerator(seed: 18)
        let pieces = ["lockstep_session", "=", ";", " ", "\t", ",", "\"", "ab", "0f", String(repeating: "a1", count: 32), "é", "\u{0}", "x", "lockstep_session="]
        for round in 0..<20_000 {
            if round % 500 == 0 { await yieldToOtherTests() }
            let field = (0..<Int.random(in: 0...12, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined()
            if let id = ConsoleSessions.sessionID(inCookies: field) {
                #expect(id.utf8.count == 64 && field.contains(id), "\(field)")
            }
        }
    }
}

@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                             "needs chromium, chromium-driver and curl (ops/test installs them)"))
struct ConsoleBrowserTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents/console_browser.py").path

    static let plan = """
        name: console
        services:
          orders: { owners: [orders-team] }
          ledger: { owners: [ledger-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
          - id: backfill
            service: ledger
            phase: backfill
            action: copy-rows
            needs: [expand]
          - id: switch
            service: ledger
            phase: live
            action: flip-flag
            needs: [backfill]
            approvals: { minimum: 1 }
          - id: contract
            service: orders
            phase: contract
            action: drop-column
            needs: [switch]
        """

    static let canary = """
        name: canary
        services:
          checkout: { owners: [checkout-team] }
        nodes:
          - id: route
            service: checkout
            phase: live
            action: set-weight
            exposure: { stages: [100], bake: 10s }
            analysis:
              metrics:
                - { name: error_rate, pass: { max: 0.01 }, marginal: { max: 0.02 }, min_samples: 2 }
        """

    /// Screenshots go to a temporary directory; `LOCKSTEP_CONSOLE_SCREENSHOTS=docs/img` writes the ones
    /// docs/console.md shows.
    @Test func theConsoleInHeadlessChromium() async throws {
        let directory = temporaryDirectory()
        var tokens: [String: String] = [:]
        var principals: [[String: Any]] = []
        for (name, roles, extra) in [("alice", ["operator"], [String: Any]()), ("bob", ["approver"], ["owner_groups": ["ledger-team"]]),
                                     ("carol", ["auditor"], [:]), ("agent", ["agent"], ["services": ["orders", "ledger", "checkout"]])] {
            let token = ConsoleSessions.newSecret()
            tokens[name.uppercased()] = token
            principals.append(["name": name, "roles": roles, "token_sha256": AuthConfig.hash(token)].merging(extra) { a, _ in a })
        }
        let config = directory + "/auth.json"
        try JSONSerialization.data(withJSONObject: ["principals": principals]).write(to: URL(fileURLWithPath: config))
        let server = try await ServerProcess(["--config", config])
        let alice = try #require(tokens["ALICE"])
        let apply = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", apply, token: alice).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "console", "migration_id": "m1"}"#, token: alice).hasSuffix("\n200"))
        // A canary whose analysis the evidence view charts (m2; the script runs it).
        let canary = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.canary]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", canary, token: alice).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "canary", "migration_id": "m2"}"#, token: alice).hasSuffix("\n200"))
        // A second version of the plan (m1 keeps the first), for the plans view's differences.
        let second = Self.plan.replacingOccurrences(of: "action: drop-column", with: "action: drop-column-later")
        let applySecond = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": second]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", applySecond, token: alice).hasSuffix("\n200"))
        // Bad sign-ins, each with its own code and status (curl: the body, a newline, the status).
        func signIn(_ body: String, type: String = "application/json", origin: String? = nil) async throws -> String {
            try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: \(type)"] + (origin.map { ["-H", "origin: \($0)"] } ?? [])
                                   + ["--data-binary", body, "-w", "\n%{http_code}", server.url + "/ui/session"]).wait(seconds: 30).stdout
        }
        let refusals: [(String, String, String, String?, String)] = [
            ("not JSON", "{", "application/json", nil, "malformed_request"),
            ("a token that is not a string", #"{"token": 5}"#, "application/json", nil, "\n400"),
            ("another field", #"{"token": "x", "as": "admin"}"#, "application/json", nil, "\n400"),
            ("the token twice (the parser keeps the last, the good one)", #"{"token": "x", "token": "\#(alice)"}"#, "application/json", nil, "\n400"),
            ("a form", "token=x", "application/x-www-form-urlencoded", nil, "unsupported_media_type"),
            ("over 4 KiB", #"{"token": "\#(String(repeating: "t", count: 5_000))"}"#, "application/json", nil, "body_too_large"),
            ("an unknown token", #"{"token": "not-a-token-of-anyone"}"#, "application/json", nil, "unauthenticated"),
            ("an agent's token", #"{"token": "\#(tokens["AGENT"]!)"}"#, "application/json", nil, "may not use the console"),
            ("another site's page", #"{"token": "\#(alice)"}"#, "application/json", "http://evil.example", "csrf_rejected"),
        ]
        for (what, body, type, origin, expected) in refusals {
            let answer = try await signIn(body, type: type, origin: origin)
            #expect(answer.contains(expected) && !answer.hasSuffix("\n200"), "\(what): \(answer)")
        }
        let shots = ProcessInfo.processInfo.environment["LOCKSTEP_CONSOLE_SCREENSHOTS"] ?? temporaryDirectory()
        let browser = try ChildProcess("/usr/bin/env", ["python3", Self.script, server.url, server.grpc, try lockstepBinary(), shots], environment: tokens)
        let output = try await browser.wait(seconds: 240)
        #expect(output.status == 0, "\(output.stdout)\n\(output.stderr)")
        #expect(output.stdout.contains("console: all checks passed"), "\(output.stdout)")
        _ = try await server.stop()
    }
}

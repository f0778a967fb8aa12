import Foundation
import LockstepHTTP
@testable import LockstepServer
import LockstepService
import LockstepTestSupport
import Testing

/// The console's one-time sign-in links (docs/console.md): the codes' limits in process, `--public-url`'s
/// parsing, and the whole path through a real `lockstep serve`, the CLI and curl.
struct ConsoleLinkTests {
    static let alice = ConsoleSessionTests.alice
    static let bob = ConsoleSessionTests.bob

    @Test func aCodeSignsInOnceWithinItsLifetimeAndCodesAreBounded() throws {
        var limits = ConsoleLinks.Limits()
        limits.codesMax = 3
        limits.codesPerPrincipalMax = 2
        limits.lifetimeMillisMax = 1_000
        let clock = ConsoleSessionTests.Clock()
        let links = ConsoleLinks(limits: limits, now: { clock.read() })
        // Once: the first use spends it.
        let code = try links.make(for: Self.alice)
        #expect(code.utf8.count == 64 && code.utf8.allSatisfy { ("0"..."9").contains(Character(UnicodeScalar($0))) || ("a"..."f").contains(Character(UnicodeScalar($0))) })
        #expect(links.use(code)?.name == "alice")
        #expect(links.use(code) == nil, "a code signed in twice")
        #expect(links.use("") == nil && links.use(String(repeating: "0", count: 64)) == nil)
        // Per principal: a third code replaces the principal's oldest.
        let first = try links.make(for: Self.alice)
        let second = try links.make(for: Self.alice)
        let third = try links.make(for: Self.alice)
        #expect(links.count == 2)
        #expect(links.use(first) == nil)
        // In all: past the limit a new code is refused with a stable code, and no other is ended for it.
        _ = try links.make(for: Self.bob)
        do {
            _ = try links.make(for: Principal(name: "carol", roles: [.auditor]))
            Issue.record("a fourth code was made past a limit of three")
        } catch {
            #expect(error.errorCode == .tooManySessions)
        }
        #expect(links.count == 3)
        // Age: a code not used within its lifetime is good for nothing, and its place is freed.
        clock.advance(.milliseconds(999))
        #expect(links.use(second)?.name == "alice")
        clock.advance(.milliseconds(1))
        #expect(links.use(third) == nil, "a code used 1 s after it was made, at a lifetime of 1 s")
        #expect(throws: Never.self) { try links.make(for: Principal(name: "carol", roles: [.auditor])) }
        #expect(links.count == 1)
        // A sign-in refused after the code was found (at the sessions' limit) leaves the code good.
        let kept = try links.make(for: Self.bob)
        #expect(throws: APIError.self) { try links.use(kept) { (_: Principal) throws(APIError) -> Int in throw APIError(.tooManySessions, "full") } }
        #expect(links.use(kept)?.name == "bob" && links.use(kept) == nil)
    }

    @Test func publicURLsAreTheOriginsABrowserSends() throws {
        let accepted: [(String, String, Bool)] = [
            ("https://lockstep.example.com", "https://lockstep.example.com", true),
            ("HTTPS://Lockstep.Example.COM/", "https://lockstep.example.com", true),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080", false),
            ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443", true),
            // As a browser sends it: the scheme's own port left out, a port as a number.
            ("https://lockstep.example.com:443", "https://lockstep.example.com", true), ("http://a.example:80/", "http://a.example", false),
            ("https://a.example:0443", "https://a.example", true), ("https://a.example:08443", "https://a.example:8443", true),
            ("http://a.example:443", "http://a.example:443", false),
            ("https://[2001:DB8:0:0::1]:443", "https://[2001:db8::1]", true), ("https://127.0.0.1:8443", "https://127.0.0.1:8443", true),
        ]
        for (text, origin, https) in accepted {
            let parsed = try PublicURL(parsing: text)
            #expect(parsed.origin == origin && parsed.isHTTPS == https, "\(text)")
        }
        let refused: [(String, String)] = [
            ("lockstep.example.com", "https://"), ("ftp://lockstep.example.com", "https://"), ("https://", "no host"),
            ("https://lockstep.example.com/console", "path"), ("https://a.example/ui/", "path"),
            ("https://user@lockstep.example.com", "user info"), ("https://a.example?x=1", "query"), ("https://a.example#f", "fragment"),
            ("https://a.example:0", "port"), ("https://a.example:65536", "port"), ("https://a.example:", "port"), ("https://a.example:8x", "port"),
            ("https://[::1", "closed"), ("https://[::1]x", "PORT"), ("https://[]", "IPv6"), ("https://:443", "no host"),
            ("https://[example]", "IPv6"), ("https://[:]", "IPv6"), ("https://a[b.example", "brackets"), ("https://a]:80", "brackets"),
            ("https://127.1", "four decimal numbers"), ("https://0x7f.0.0.1", "four decimal numbers"), ("https://1.2.3.256", "four decimal numbers"),
            ("https://010.0.0.1", "four decimal numbers"), ("https://[1::2::3]", "IPv6"),
            ("https://\u{212A}.example", "outside ASCII"), ("https://caf\u{E9}.example", "outside ASCII"),
            ("https://-a.example", "no host"), ("https://a b.example", "space"), ("https://" + String(repeating: "a", count: 600), "longer"),
        ]
        for (text, why) in refused {
            do {
                let parsed = try PublicURL(parsing: text)
                Issue.record("\(text) was accepted as \(parsed.origin)")
            } catch {
                #expect(error.description.contains(why), "\(text): \(error)")
            }
        }
    }

    /// Where links start: `--public-url`'s console; else the listener's once bound (`unavailable` before);
    /// none from a listener on every interface (`failed_precondition`: no browser opens 0.0.0.0).
    @Test func linksStartWhereBrowsersReachTheServer() throws {
        func options(_ host: String, publicURL: String? = nil) throws -> LockstepServer.Options {
            var options = LockstepServer.Options(databasePath: "", httpHost: host, httpPort: 0, grpcHost: "127.0.0.1", grpcPort: 0, dev: false, auth: nil, readyFile: nil)
            options.publicURL = try publicURL.map { try PublicURL(parsing: $0) }
            return options
        }
        func code(_ address: () throws(APIError) -> String) -> String {
            do { return try address() } catch { return error.errorCode.rawValue }
        }
        let bound = BoundAddresses()
        #expect(code(LockstepServer.consoleAddress(try options("0.0.0.0"), bound: bound)) == "failed_precondition")
        #expect(code(LockstepServer.consoleAddress(try options("::"), bound: bound)) == "failed_precondition")
        #expect(code(LockstepServer.consoleAddress(try options("127.0.0.1"), bound: bound)) == "unavailable")
        #expect(code(LockstepServer.consoleAddress(try options("0.0.0.0", publicURL: "https://l.example"), bound: bound)) == "https://l.example/ui")
        bound.set(grpc: "127.0.0.1:9", http: "http://127.0.0.1:8")
        #expect(code(LockstepServer.consoleAddress(try options("127.0.0.1"), bound: bound)) == "http://127.0.0.1:8/ui")
    }

    /// Any text: parsing never traps, and what it accepts is an origin as a browser sends it, which
    /// parses to itself.
    @Test func anyTextParsesToAnOriginOrAReason() async throws {
        var random = SeededGenerator(seed: 41)
        let pieces = ["https://", "http://", "HTTP://", "a", "example", ".", "-", ":", "443", "8443", "080", "99999", "/", "[", "]", "::1", "@", "?", "#",
                      " ", "é", "\u{0}", "%2F"]
        var accepted = 0
        for round in 0..<20_000 {
            if round % 500 == 0 { await yieldToOtherTests() }
            let text = (0..<Int.random(in: 0...8, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined()
            guard let parsed = try? PublicURL(parsing: text) else { continue }
            accepted += 1
            let rest = parsed.origin.drop { $0 != "/" }.dropFirst(2)
            #expect((parsed.origin.hasPrefix("https://") || parsed.origin.hasPrefix("http://")) && !rest.isEmpty && !rest.contains("/"), "\(text)")
            #expect(!parsed.origin.hasSuffix(parsed.isHTTPS ? ":443" : ":80") && parsed.origin == parsed.origin.lowercased(), "\(text)")
            #expect(try PublicURL(parsing: parsed.origin) == parsed, "\(text)")
        }
        #expect(accepted > 10, "only \(accepted) of 20,000 texts were origins: the pieces no longer make any")
    }
}

/// The whole path with real processes: `lockstep console link` asks a server started with
/// `--public-url https://…` for a link, and curl signs in with its code as a browser would.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct ConsoleLinkEndToEndTests {
    @Test func aLinkFromTheCLISignsInOnceUnderThePublicURL() async throws {
        let directory = temporaryDirectory()
        var tokens: [String: String] = [:]
        var principals: [[String: Any]] = []
        for (name, roles) in [("alice", ["operator"]), ("agent", ["agent"])] {
            let token = ConsoleSessions.newSecret()
            tokens[name] = token
            principals.append(["name": name, "roles": roles, "token_sha256": AuthConfig.hash(token)].merging(name == "agent" ? ["services": ["orders"]] : [:]) { a, _ in a })
        }
        let config = directory + "/auth.json"
        try JSONSerialization.data(withJSONObject: ["principals": principals]).write(to: URL(fileURLWithPath: config))
        let publicURL = "https://console.example:8443"
        let server = try await ServerProcess(["--config", config, "--public-url", publicURL + "/"])
        let alice = try #require(tokens["alice"])

        // The CLI prints the link alone on stdout, under the public URL.
        let made = try await ChildProcess(try lockstepBinary(), ["console", "link", "--server", server.grpc, "--token", alice]).wait(seconds: 60)
        #expect(made.status == 0, "\(made.stderr)")
        let link = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(link.hasPrefix(publicURL + "/ui#code="), "\(link)")
        #expect(made.stderr.contains("one sign-in within 5 minutes"), "\(made.stderr)")
        let code = String(link.dropFirst((publicURL + "/ui#code=").count))

        // Its code signs in once, from the public origin, with a Secure __Host- cookie though the listener is plain HTTP.
        func signIn(_ body: String, origin: String? = nil) async throws -> String {
            try await ChildProcess("/usr/bin/curl", ["-sS", "-i", "-X", "POST", "-H", "content-type: application/json"] + (origin.map { ["-H", "origin: \($0)"] } ?? [])
                                   + ["--data-binary", body, "-w", "\n%{http_code}", server.url + "/ui/session"]).wait(seconds: 30).stdout
        }
        let first = try await signIn(#"{"code": "\#(code)"}"#, origin: publicURL)
        #expect(first.hasSuffix("\n200") && first.contains(#""principal":"alice""#), "\(first)")
        #expect(first.lowercased().contains("set-cookie: __host-lockstep_session=") && first.contains("; Secure"), "\(first)")
        let again = try await signIn(#"{"code": "\#(code)"}"#)
        #expect(again.hasSuffix("\n401") && again.contains("used already"), "\(again)")

        // The JSON route makes one too; refused: an agent (no console), another site's page, two credentials at once.
        let json = try await server.post("/v1/console/links", "{}", token: alice)
        #expect(json.hasSuffix("\n200") && json.contains(#""link":"\#(publicURL)/ui#code="#) && json.contains(#""expires_in_ms":"300000""#), "\(json)")
        let agents = try await server.post("/v1/console/links", "{}", token: tokens["agent"] ?? "")
        #expect(agents.hasSuffix("\n403") && agents.contains("permission_denied"), "\(agents)")
        let second = try #require(json.split(separator: "#code=").last?.prefix(64)).description
        let elsewhere = try await signIn(#"{"code": "\#(second)"}"#, origin: "https://evil.example")
        #expect(elsewhere.contains("csrf_rejected") && !elsewhere.hasSuffix("\n200"), "\(elsewhere)")
        let both = try await signIn(#"{"code": "\#(second)", "token": "\#(alice)"}"#)
        #expect(both.hasSuffix("\n400"), "\(both)")
        // Refused before it was looked at, the code is still good.
        let later = try await signIn(#"{"code": "\#(second)"}"#)
        #expect(later.hasSuffix("\n200"), "\(later)")
        // A console session may not make links (each would open a new session: a session renewing itself
        // past its 12 hours); its cookie and CSRF token are refused where a bearer token is taken.
        let cookie = try #require(later.split(separator: "\r\n").first { $0.lowercased().hasPrefix("set-cookie: ") }?
            .dropFirst("set-cookie: ".count).split(separator: ";").first).description
        let csrf = try #require(later.split(separator: "\"csrf_token\":\"").last?.prefix(64)).description
        let fromSession = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json", "-H", "cookie: \(cookie)",
                                                                   "-H", "x-lockstep-csrf: \(csrf)", "--data", "{}", "-w", "\n%{http_code}",
                                                                   server.url + "/v1/console/links"]).wait(seconds: 30).stdout
        #expect(fromSession.hasSuffix("\n403") && fromSession.contains("bearer token"), "\(fromSession)")
        let plansFromSession = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json", "-H", "cookie: \(cookie)",
                                                                        "-H", "x-lockstep-csrf: \(csrf)", "--data", "{}", "-w", "\n%{http_code}",
                                                                        server.url + "/v1/plans/list"]).wait(seconds: 30).stdout
        #expect(plansFromSession.hasSuffix("\n200"), "the session itself works: \(plansFromSession)")
        _ = try await server.stop()
    }

    @Test func aPublicURLThatCannotBeServedStopsTheServerBeforeItStarts() async throws {
        let config = temporaryDirectory() + "/auth.json"
        let principals: [[String: Any]] = [["name": "alice", "roles": ["operator"], "token_sha256": AuthConfig.hash(ConsoleSessions.newSecret())]]
        try JSONSerialization.data(withJSONObject: ["principals": principals]).write(to: URL(fileURLWithPath: config))
        // (The TLS files are only checked for being readable before the URL is judged.)
        for (url, why, tls) in [("https://lockstep.example.com/console", "path", false), ("lockstep.example.com", "https://", false),
                                ("http://lockstep.example.com", "Secure", true)] {
            let data = temporaryDirectory()
            let serve = try await ChildProcess(try lockstepBinary(), ["serve", "--data", data, "--no-signing", "--config", config, "--public-url", url,
                                                                     "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]
                                                   + (tls ? ["--tls-cert", config, "--tls-key", config] : [])).wait(seconds: 60)
            #expect(serve.status == 64 && serve.stderr.contains("--public-url") && serve.stderr.contains(why), "\(url): \(serve.status) \(serve.stderr)")
        }
    }
}

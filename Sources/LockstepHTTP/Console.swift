import Foundation
import HTTPTypes
import LockstepCore
import LockstepEngine
import Hummingbird
import LockstepService
import NIOCore

/// How the web console signs people in (docs/console.md).
package struct ConsoleAccess: Sendable {
    package let sessions: ConsoleSessions
    /// The principal a sign-in token belongs to: the auth config's bearer tokens, or under `--dev` the
    /// console secret printed at start.
    package let signIn: @Sendable (String) throws(APIError) -> Principal
    /// The one-time codes of sign-in links (`lockstep console link`), shared with the API that makes them.
    package let links: ConsoleLinks
    /// Under `--dev`, the secret made at start: its link (the ready file's `console_sign_in`) signs in as
    /// often as it is followed, for as long as the server runs.
    package let devCode: String?
    /// The listener has TLS, or the browser reaches it through https (`--public-url`): the cookie is
    /// marked `Secure` and named with the `__Host-` prefix.
    package let secureCookie: Bool
    /// `--public-url`'s origin: a browser's `Origin` equal to it is the console's own (as is one whose
    /// host and port are the request's `Host`).
    package let publicOrigin: String?
    /// The session cookie's name on this listener.
    package var cookieName: String { secureCookie ? ConsoleSessions.secureCookieName : ConsoleSessions.cookieName }

    /// The session id a request's cookies carry, if any.
    func sessionID(_ request: Request) -> String? { ConsoleSessions.sessionID(inCookies: request.headers[.cookie], named: cookieName) }

    package init(sessions: ConsoleSessions, signIn: @escaping @Sendable (String) throws(APIError) -> Principal, links: ConsoleLinks,
                 devCode: String? = nil, secureCookie: Bool, publicOrigin: String? = nil) {
        self.sessions = sessions
        self.signIn = signIn
        self.links = links
        self.devCode = devCode
        self.secureCookie = secureCookie
        self.publicOrigin = publicOrigin
    }

    /// Signs in with a sign-in link's code: `admit` opens the session for the principal it signs in as,
    /// and the code is spent when it has (a session refused leaves the link good).
    func use<Admitted>(code: String, _ admit: (Principal) throws(APIError) -> Admitted) throws(APIError) -> Admitted {
        if let admitted = try links.use(code, admit) { return admitted }
        if let devCode, ConsoleSessions.sameSecret(code, devCode) { return try admit(try signIn(devCode)) }
        throw APIError(.unauthenticated, "this sign-in link was used already, has expired (a link is good for one sign-in within "
                       + "\(links.limits.lifetimeMillisMax / 60_000) minutes) or comes from another coordinator: make a new one with `lockstep console link`")
    }

    /// Only people who read migrations have a console: operators, approvers, auditors, admins.
    static let consoleRoles: Set<Principal.Role> = [.operator, .approver, .auditor, .admin]
}

/// The console's files, in the binary (`ConsoleAssets/`, embedded by SwiftPM).
enum ConsoleAsset {
    struct File: Sendable {
        let path: String
        let contentType: String
        let bytes: [UInt8]
    }

    static let files: [File] = [
        File(path: "/ui", contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        // The script is ES modules: app.js starts it and imports the rest (docs/console.md).
        File(path: "/ui/app.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js),
        File(path: "/ui/ui.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.ui_js),
        File(path: "/ui/shell.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.shell_js),
        File(path: "/ui/views.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.views_js),
        File(path: "/ui/migration.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.migration_js),
        File(path: "/ui/migration-tabs.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.migration_tabs_js),
        File(path: "/ui/app.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.app_css),
    ]

    /// A request the `--dev` browser refusal lets through: the console's own paths, or a call made with
    /// its session cookie (checked by the route).
    static func isConsole(_ request: Request) -> Bool {
        let path = request.uri.path
        let cookies = request.headers[.cookie]
        return path == "/ui" || path.hasPrefix("/ui/") || ConsoleSessions.sessionID(inCookies: cookies) != nil
            || ConsoleSessions.sessionID(inCookies: cookies, named: ConsoleSessions.secureCookieName) != nil
    }

    /// No script or style but the console's own, nothing framed, nothing sent elsewhere.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// The fields every console answer carries (its pages and its session calls).
    static func guarded(_ fields: HTTPFields) -> HTTPFields {
        var fields = fields
        fields[.contentSecurityPolicy] = contentSecurityPolicy
        fields[.xContentTypeOptions] = "nosniff"
        fields[.init("Referrer-Policy")!] = "no-referrer"
        fields[.init("X-Frame-Options")!] = "DENY"
        fields[.cacheControl] = "no-cache"
        return fields
    }
}

extension HTTPRoutes {
    /// The console: its files under `/ui`, and its session (sign in, who am I, sign out).
    func registerConsole(on router: Router<LockstepRequestContext>) {
        for file in ConsoleAsset.files {
            let headers = ConsoleAsset.guarded([.contentType: file.contentType])
            let bytes = ByteBuffer(bytes: file.bytes)
            router.get(RouterPath(file.path)) { _, _ in Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: bytes)) }
        }
        router.post("/ui/session") { request, context in
            do throws(APIError) {
                return try await signIn(request, context)
            } catch {
                return consoleError(error)
            }
        }
        // Who this browser is signed in as: `"signed_in": false` when nobody (an answer, not an error: a
        // page opened before sign-in is the usual case).
        router.get("/ui/session") { request, _ in
            guard let id = console.sessionID(request), let session = console.sessions.session(id: id) else {
                return consoleJSON(.ok, ["signed_in": false])
            }
            return consoleJSON(.ok, sessionBody(session.principal, csrf: session.csrfToken))
        }
        router.post("/ui/session/end") { request, _ in
            do throws(APIError) {
                let (id, _) = try consoleSession(request)
                console.sessions.end(id: id)
                var response = consoleJSON(.ok, ["signed_out": true])
                response.headers[.setCookie] = cookie(value: "", maxAgeSeconds: 0)
                return response
            } catch {
                return consoleError(error)
            }
        }
    }

    /// Signs in with `{"token": "…"}` (the form) or `{"code": "…"}` (a sign-in link): the principal, if it
    /// may use the console, gets a session.
    private func signIn(_ request: Request, _ context: LockstepRequestContext) async throws(APIError) -> Response {
        try checkOrigin(request)
        try Self.checkContentType(request.headers[.contentType])
        let body = if let whole = context.wholeBody { whole } else { try await collectBody(request) }
        guard body.readableBytes <= 4_096 else { throw APIError(.bodyTooLarge, "a sign-in is at most 4,096 bytes") }
        let object = try? StrictJSON.object(body.readableBytesView)
        let previous = console.sessionID(request)
        let sessions = console.sessions
        let admit = { (principal: Principal) throws(APIError) -> (principal: Principal, id: String, csrf: String) in
            guard !principal.roles.isDisjoint(with: ConsoleAccess.consoleRoles) else {
                throw APIError(.permissionDenied, "\(principal.name) may not use the console (needs one of the roles admin, approver, auditor, operator)")
            }
            // A browser holds one session: the one its cookie named ends with this sign-in, in the same step
            // as the new one opens (a sign-in refused at the sessions' limit leaves the browser the one it had).
            let (id, csrf) = try sessions.open(for: principal, replacing: previous)
            return (principal, id, csrf)
        }
        let (principal, id, csrf): (Principal, String, String)
        if let object, object.count == 1, let token = object["token"] as? String, !token.isEmpty {
            (principal, id, csrf) = try admit(try console.signIn(token))
        } else if let object, object.count == 1, let code = object["code"] as? String, !code.isEmpty {
            // The code is spent once the session is open: one refused at the limit leaves the link good.
            (principal, id, csrf) = try console.use(code: code, admit)
        } else {
            throw APIError.malformed(#"sign in with {"token": "…"} (the bearer token) or {"code": "…"} (a sign-in link's code): one field"#)
        }
        var response = consoleJSON(.ok, sessionBody(principal, csrf: csrf))
        response.headers[.setCookie] = cookie(value: id, maxAgeSeconds: console.sessions.limits.lifetimeMillisMax / 1_000)
        return response
    }

    /// The session a request's cookie names, checked: live, with the session's CSRF token, and from the
    /// console's own origin.
    func consoleSession(_ request: Request) throws(APIError) -> (id: String, session: ConsoleSessions.Session) {
        guard let id = console.sessionID(request), let session = console.sessions.session(id: id) else {
            let limits = console.sessions.limits
            throw APIError(.unauthenticated, "no console session: sign in (a session ends after \(limits.idleMillisMax / 60_000) minutes unused, "
                           + "\(limits.lifetimeMillisMax / 3_600_000) hours after its sign-in, and when the server restarts)")
        }
        try checkOrigin(request)
        guard let sent = request.headers[HTTPField.Name(ConsoleSessions.csrfField)!], ConsoleSessions.sameSecret(sent, session.csrfToken) else {
            throw APIError(.csrfRejected, "a request made with the console's session cookie must carry the session's CSRF token in \(ConsoleSessions.csrfField)")
        }
        return (id, session)
    }

    /// A request with an `Origin` (a browser's) must come from the page this server served: the same
    /// host and port as its `Host`, or `--public-url`'s origin; and `Sec-Fetch-Site` (when sent) same-origin.
    private func checkOrigin(_ request: Request) throws(APIError) {
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
            throw APIError(.csrfRejected, "the console takes requests from its own pages only (Sec-Fetch-Site: \(site.prefix(32)))")
        }
        guard let origin = request.headers[.origin] else { return }
        if let publicOrigin = console.publicOrigin, origin.lowercased() == publicOrigin { return }
        let authority = request.head.authority ?? ""
        let host = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
        guard !authority.isEmpty, host.lowercased() == authority.lowercased() else {
            throw APIError(.csrfRejected, "the console takes requests from its own pages only (Origin \(origin.prefix(100)) is not \(authority.prefix(100)))")
        }
    }

    private func cookie(value: String, maxAgeSeconds: Int) -> String {
        "\(console.cookieName)=\(value); Path=/; Max-Age=\(maxAgeSeconds); HttpOnly; SameSite=Strict" + (console.secureCookie ? "; Secure" : "")
    }

    private func sessionBody(_ principal: Principal, csrf: String) -> [String: Any] {
        ["signed_in": true, "principal": principal.name, "roles": principal.roles.map(\.rawValue).sorted(), "csrf_token": csrf,
         "idle_seconds_max": console.sessions.limits.idleMillisMax / 1_000]
    }

    private func consoleJSON(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        var buffer = ByteBuffer(bytes: data)
        buffer.writeString("\n")
        var fields = ConsoleAsset.guarded([.contentType: "application/json"])
        fields[.cacheControl] = "no-store"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: buffer))
    }

    private func consoleError(_ error: APIError) -> Response {
        var response = refusal(error)
        response.headers = ConsoleAsset.guarded(response.headers)
        response.headers[.cacheControl] = "no-store"
        return response
    }
}

import Hummingbird
import LockstepService

/// `--dev`'s guard against web pages: it serves no browser but its own console. A request with an
/// `Origin` header (a page's cross-site request) is refused unless it is the console's, and so is one
/// for a host name other than loopback's (a page on a name made to resolve to 127.0.0.1, DNS rebinding,
/// sends no `Origin` on its own GETs). Judged once here, for the routes (`EdgeMiddleware`) and for the
/// engine's poll path (`EnginePoll`) alike.
extension HTTPRoutes {
    package static let browserRefusal = APIError(.permissionDenied, "--dev serves no browsers but its own console: requests with an Origin header are refused (sign in to the console at /ui)")
    package static let hostRefusal = APIError(.permissionDenied, "--dev serves loopback names only (localhost, 127.0.0.1, [::1]): a request for another host name is refused "
                                              + "(a web page on a name made to resolve here, DNS rebinding, sends no Origin on its own GETs)")

    /// Why `--dev` refuses a request with an `Origin` (`hasOrigin`: not counting the console's) for
    /// `authority` (its `Host` or `:authority`; nil or empty when it named none), or nil.
    package static func devRefusal(hasOrigin: Bool, authority: String?) -> APIError? {
        if hasOrigin { return browserRefusal }
        if let authority, !authority.isEmpty, !isLoopback(authority: authority) { return hostRefusal }
        return nil
    }

    /// Whether `authority` (a request's `Host`, or HTTP/2's `:authority`) names this machine's loopback:
    /// `localhost`, an address in 127.0.0.0/8 or `::1`, with or without a port.
    package static func isLoopback(authority: String) -> Bool {
        var host = Substring(authority.lowercased())
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            host = host[host.index(after: host.startIndex)..<close]
            return host == "::1"
        }
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        if host == "localhost" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { $0.count <= 3 && UInt8($0) != nil }
    }
}

/// What every request passes through first: under `--dev`, the guard above (the console's pages and
/// calls with its session cookie, which the route's `caller` then checks, may carry an `Origin`); and a
/// path or method no route serves is answered with an `ErrorBody` like every other error
/// (`404 route_not_found`), not an empty body.
package struct EdgeMiddleware: RouterMiddleware {
    package typealias Context = LockstepRequestContext
    package let refuseBrowsers: Bool
    package let answer: @Sendable (APIError) -> Response

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if refuseBrowsers,
           let refusal = HTTPRoutes.devRefusal(hasOrigin: request.headers[.origin] != nil && !ConsoleAsset.isConsole(request), authority: request.head.authority) {
            return answer(refusal)
        }
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound || error.status == .methodNotAllowed {
            let path = String(request.uri.path.prefix(100))
            return answer(APIError(.routeNotFound,
                                   "nothing is served at \(request.method.rawValue.prefix(16)) \(path) (docs/api.md lists the routes: JSON calls are POSTs under /v1/)"))
        }
    }
}

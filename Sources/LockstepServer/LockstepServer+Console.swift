import LockstepHTTP
import LockstepService

/// The web console's wiring (docs/console.md): how it signs people in, and the address its sign-in
/// links start with.
extension LockstepServer {
    /// Sign-ins with the API's own tokens; under `--dev`, with a secret made at start and printed with
    /// the console's address (a web page elsewhere on the machine cannot know it). The cookie is `Secure`
    /// when the listener has TLS or browsers reach it by https (`--public-url`).
    static func consoleAccess(_ options: Options, authenticate: @escaping @Sendable (String?, String?) throws(APIError) -> Principal) -> ConsoleAccess {
        let devSecret = options.dev ? ConsoleSessions.newSecret() : nil
        return ConsoleAccess(sessions: ConsoleSessions(), signIn: { token throws(APIError) in
            if let devSecret {
                guard ConsoleSessions.sameSecret(token, devSecret) else {
                    throw APIError(.unauthenticated, "under --dev the console signs in with the link the server printed at start (its ready file's console_sign_in)")
                }
                return try authenticate(nil, nil)
            }
            return try authenticate("Bearer " + token, nil)
        }, links: ConsoleLinks(), devCode: devSecret, secureCookie: options.tls != nil || options.publicURL?.isHTTPS == true,
           publicOrigin: options.publicURL?.origin)
    }

    /// Where sign-in links start: `--public-url`'s console, else the listener's own once bound; none (why,
    /// in words) from a listener on every interface without `--public-url`, an address no browser opens.
    static func consoleAddress(_ options: Options, bound: BoundAddresses) -> @Sendable () throws(APIError) -> String {
        let publicOrigin = options.publicURL?.origin
        let httpHost = options.httpHost
        return { () throws(APIError) -> String in
            if let publicOrigin { return publicOrigin + "/ui" }
            guard !isUnspecified(httpHost) else {
                throw APIError(.failedPrecondition, "this coordinator listens on \(bracketed(httpHost)), an address no browser can open, and has no --public-url: "
                               + "start it with --public-url (where browsers reach it) to make sign-in links")
            }
            guard let http = bound.current?.http else { throw APIError(.unavailable, "this coordinator's console is not listening yet; ask again in a moment") }
            return http + "/ui"
        }
    }

    /// A listen address that is every interface's (`0.0.0.0`, `::`), which no client can connect to by name.
    static func isUnspecified(_ host: String) -> Bool { ["0.0.0.0", "::", "[::]", ""].contains(host) }
}

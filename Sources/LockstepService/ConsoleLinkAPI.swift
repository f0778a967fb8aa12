import LockstepWire

// The console's sign-in links on the API (docs/console.md): a one-time code for the caller's own
// principal, so that a browser is signed in without the bearer token going into an address.
extension OperatorAPI {
    public func createConsoleLink(_ request: Lockstep_V1_CreateConsoleLinkRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ConsoleLink {
        guard let address = await consoleLinks.address() else {
            throw APIError(.unavailable, "this coordinator's console is not listening yet; ask again in a moment")
        }
        let code = try consoleLinks.codes.make(for: principal)
        return .with {
            $0.link = address + "#code=" + code
            $0.code = code
            $0.expiresInMs = Int64(consoleLinks.codes.limits.lifetimeMillisMax)
        }
    }
}

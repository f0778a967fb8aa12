import LockstepWire

// The console's sign-in links on the API (docs/console.md): a one-time code for the caller's own
// principal, so that a browser is signed in without the bearer token going into an address.
extension OperatorAPI {
    public func createConsoleLink(_ request: Lockstep_V1_CreateConsoleLinkRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ConsoleLink {
        let address = try consoleLinks.address()
        let code = try consoleLinks.codes.make(for: principal)
        return .with {
            $0.link = address + "#code=" + code
            $0.code = code
            $0.expiresInMs = Int64(consoleLinks.codes.limits.lifetimeMillisMax)
        }
    }
}

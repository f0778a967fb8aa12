import Foundation
import LockstepService
import LockstepTestSupport

/// What the end-to-end tests of gates (freezes, windows, checks, the pause rule) share: a real server
/// whose principals are named with their role (and services, for agents), handlers written into a
/// directory of their own, the CLI as each principal, and the reference agent of a service.
struct GateBench {
    struct Principal {
        var name: String
        var role: String
        var services: [String] = []
        var token: String
        /// For approvers: the owner groups whose gates they may approve.
        var groups: [String] = []
    }

    let directory: String
    let server: ServerProcess
    let principals: [Principal]

    /// Starts a server for `principals`, and writes each of `handlers` (name → script) executable into DIR/handlers.
    /// `serverArguments` are added to `lockstep serve`'s; `prepare` runs first, on the bench's directory.
    init(_ principals: [Principal], handlers: [String: String], serverArguments: [String] = [],
         prepare: (String) async throws -> Void = { _ in }) async throws {
        let directory = temporaryDirectory()
        self.directory = directory
        try await prepare(directory)
        self.principals = principals
        let entries = principals.map { principal in
            let services = principal.services.isEmpty ? "" : #", "services": [\#(principal.services.map { "\"\($0)\"" }.joined(separator: ", "))]"#
            let groups = principal.groups.isEmpty ? "" : #", "owner_groups": [\#(principal.groups.map { "\"\($0)\"" }.joined(separator: ", "))]"#
            return #"{"name": "\#(principal.name)", "roles": ["\#(principal.role)"]\#(services)\#(groups), "token_sha256": "\#(AuthConfig.hash(principal.token))"}"#
        }
        try #"{"principals": [\#(entries.joined(separator: ",\n"))]}"#.write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        server = try await ServerProcess(["--config", directory + "/auth.json"] + serverArguments.map { $0.replacingOccurrences(of: "DIR", with: directory) })
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        for (name, script) in handlers {
            try script.write(toFile: directory + "/handlers/" + name, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/" + name)
        }
    }

    func token(_ who: String) -> String { principals.first { $0.name == who }?.token ?? "" }

    /// The CLI against the server, as `who`.
    func lockstep(_ arguments: [String], as who: String) async throws -> ProcessOutput {
        try await ChildProcess(try lockstepBinary(), arguments, environment: ["LOCKSTEP_SERVER": server.grpc, "LOCKSTEP_TOKEN": token(who)])
            .wait(seconds: 60)
    }

    /// The reference agent of `service`, as `who`, running the handlers.
    func agent(_ service: String, as who: String) throws -> ChildProcess {
        try ChildProcess(try lockstepBinary(), ["agent", "--service", service, "--handlers", directory + "/handlers", "--id", "\(service)-1"],
                         environment: ["LOCKSTEP_SERVER": server.grpc, "LOCKSTEP_TOKEN": token(who)])
    }

    /// The lines the handlers appended to DIR/ran.log.
    func ran() -> [String] {
        ((try? String(contentsOfFile: directory + "/ran.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// GET `path` on the HTTP API as `who` (with a JSON `body`: POST).
    func http(_ path: String, as who: String, body: String? = nil) async throws -> String {
        var arguments = ["-sS", "-H", "authorization: Bearer \(token(who))"]
        if let body { arguments += ["-H", "content-type: application/json", "-d", body] }
        return try await ChildProcess("/usr/bin/curl", arguments + [server.url + path]).wait(seconds: 30).stdout
    }
}

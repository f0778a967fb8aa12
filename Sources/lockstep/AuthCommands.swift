import ArgumentParser
import Foundation
import LockstepServer
import LockstepService

/// `lockstep auth`: helpers for the server's authorization config.
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth", abstract: "Helpers for the authorization config (docs/api.md, Authentication).",
        subcommands: [HashToken.self])

    struct HashToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash-token",
            abstract: "Read a bearer token from stdin and print the token_sha256 to put in the config.",
            discussion: "The config stores only hashes; keep the token itself in the agent's or operator's secret store.")

        func run() async throws {
            let token = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespaces)
            guard token.utf8.count >= AuthConfig.tokenBytesMin else {
                FileHandle.standardError.write(Data("error: the token is \(token.utf8.count) bytes; use at least \(AuthConfig.tokenBytesMin) random bytes (for example: openssl rand -hex 32)\n".utf8))
                throw ExitCode(1)
            }
            print(AuthConfig.hash(token))
        }
    }
}

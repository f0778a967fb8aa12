import ArgumentParser
import Foundation
import LockstepClient

struct ConsoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "The web console.",
        subcommands: [Link.self]
    )
}

extension ConsoleCommand {
    struct Link: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a link that signs one browser in to the console as you, once, within 5 minutes.",
            discussion: """
                The link carries a one-time code, not your token: it is good for one sign-in, on the coordinator \
                that answered, until it expires. The server makes it under its --public-url, else under its HTTP \
                listener's address (docs/console.md).
                """
        )

        @OptionGroup var server: ServerOptions
        @Option(help: "Output format: table (the link alone) or json.") var output: OutputFormat = .table

        func run() async throws {
            try await server.run { lockstep in
                let link = try await lockstep.createConsoleLink()
                switch output {
                case .json:
                    try printJSON(link)
                case .table:
                    print(link.link)
                    FileHandle.standardError.write(Data("good for one sign-in within \(link.expiresInMs / 60_000) minutes\n".utf8))
                }
            }
        }
    }
}

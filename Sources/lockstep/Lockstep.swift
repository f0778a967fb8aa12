import ArgumentParser

/// The `lockstep` command.
@main
struct Lockstep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockstep",
        abstract: "An event-sourced migration coordinator: plans, leases, and a tamper-evident history.",
        subcommands: [Demo.self, Serve.self, PlanCommand.self, MigrationsCommand.self, LeaseCommand.self, FreezeCommand.self, LineCommand.self, MetricCommand.self, ConsoleCommand.self, WebhookCommand.self, HistoryCommand.self, KeysCommand.self, Rehearse.self,
                      AgentCommand.self, AuthCommand.self, StoreCommand.self, DebugCommand.self]
    )
}

/// Where a coordinator keeps its data: `DIR/events.sqlite` (plus its WAL files).
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "The coordinator's data directory.")
    var data: String

    var databasePath: String { data.hasSuffix("/") ? data + "events.sqlite" : data + "/events.sqlite" }

    static func at(_ directory: String) throws -> DataOptions { try parse(["--data", directory]) }
}

/// An error that ends the command with `exitCode` after printing `message` to stderr.
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    var description: String { message }
}

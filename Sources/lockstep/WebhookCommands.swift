import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepWire

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "See what the server's webhooks were sent (docs/webhooks.md).",
        subcommands: [Deliveries.self]
    )
}

extension WebhookCommand {
    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The most recent deliveries, oldest first: notification, webhook, status, attempts, last result.",
            discussion: "Kept in memory by the writer (the last 1,000); the events themselves are in the log (`history export`).")

        @OptionGroup var server: ServerOptions
        @Option(help: "Only this webhook.") var webhook: String = ""
        @Option(help: "Only pending, delivered or failed deliveries.") var status: String = ""
        @Option(help: "At most this many, the newest (1...1000).") var limit: UInt32 = 100
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be 1...1000") }
            try await server.run { lockstep in
                let answer = try await lockstep.webhookDeliveries(.with {
                    $0.webhook = webhook
                    $0.status = status
                    $0.limit = limit
                })
                switch output {
                case .json: try printJSON(answer)
                case .table:
                    if answer.webhooks.isEmpty {
                        print("this server delivers to no webhooks (start it with --webhooks FILE; a standby delivers nothing)")
                        return
                    }
                    print("webhooks: \(answer.webhooks.joined(separator: ", "))")
                    if answer.deliveries.isEmpty {
                        print("no deliveries yet")
                        return
                    }
                    let rows = answer.deliveries.map { d in
                        [d.id, d.webhook, d.status, String(d.attempts), d.lastResult.isEmpty ? "-" : d.lastResult,
                         d.lastAttemptAtMs == 0 ? "-" : Instant(millisecondsSinceEpoch: d.lastAttemptAtMs).description,
                         d.nextAttemptAtMs == 0 ? "-" : Instant(millisecondsSinceEpoch: d.nextAttemptAtMs).description]
                    }
                    print(renderTable(["delivery", "webhook", "status", "attempts", "last result", "last attempt", "next attempt"], rows))
                }
            }
        }
    }
}

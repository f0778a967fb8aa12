import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepWire
import SwiftProtobuf

/// Which server a command talks to, and as whom. Flags win over the environment.
struct ServerOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The coordinator's gRPC address, HOST:PORT (the ready file's \"grpc\" value); several, comma-separated, for coordinators sharing one PostgreSQL log.",
                               discussion: "Default: $LOCKSTEP_SERVER, else 127.0.0.1:9090. With several, a command that cannot reach one (or finds it shutting down, or a replica naming no writer among them) tries the next, unless a write of it may already have been carried out."))
    var server: String?

    @Option(help: ArgumentHelp("Bearer token.", discussion: "Default: $LOCKSTEP_TOKEN; none under `serve --dev`."))
    var token: String?

    @Option(help: ArgumentHelp("PEM certificate to trust: connect over TLS.", discussion: "Default: $LOCKSTEP_TLS_CA."))
    var tlsCa: String?

    @Option(help: ArgumentHelp("How long a call may take, in milliseconds, before it fails deadline_exceeded (a poll's wait comes on top; history calls get 600000 at least).",
                               discussion: "Default: $LOCKSTEP_CALL_TIMEOUT_MS, else 60000. Without a bound a call to a server that froze would wait for ever."))
    var callTimeoutMs: Int64?

    static let defaultAddress = "127.0.0.1:9090"

    var address: String { server ?? environment("LOCKSTEP_SERVER") ?? Self.defaultAddress }
    /// Every address named (`--server A,B,C`).
    var addresses: [String] { address.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    var bearer: String? { token ?? environment("LOCKSTEP_TOKEN") }
    var trusted: String? { tlsCa ?? environment("LOCKSTEP_TLS_CA") }
    /// The call timeout from the flag or the environment, checked (100 ms to a day).
    func timeout() throws -> Duration {
        guard let text = callTimeoutMs.map(String.init) ?? environment("LOCKSTEP_CALL_TIMEOUT_MS") else { return LockstepClient.callTimeoutDefault }
        guard let millis = Int64(text), (100...86_400_000).contains(millis) else {
            throw ValidationError("--call-timeout-ms (or $LOCKSTEP_CALL_TIMEOUT_MS) must be 100...86400000, not \(text)")
        }
        return .milliseconds(millis)
    }

    /// Whether a server was named (a flag or the environment), as opposed to the default address.
    var named: Bool { server != nil || environment("LOCKSTEP_SERVER") != nil }

    private func environment(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    /// Connects, runs `body`, and turns every failure into `error: CODE: sentence` on stderr and the
    /// exit status docs/cli.md lists.
    func run(_ body: (LockstepClient) async throws -> Void) async throws {
        try await reportingFailures {
            do {
                let addresses = self.addresses
                try await LockstepClient.connect(to: addresses, token: bearer, trustedCertificate: trusted, timeout: try timeout()) { lockstep in
                    // With several servers, a command that could not reach one, found it shutting down, or
                    // reached a replica that named no writer it knows, runs again on the next (the client has
                    // moved on); each is tried once. Not once anything of it may have taken effect: a write
                    // that went out (its answer lost). Commands that print as they read go
                    // on from the last event they printed.
                    var attempt = 1
                    while true {
                        let target = lockstep.currentTarget
                        do {
                            return try await body(lockstep)
                        } catch let error as LockstepClientError where ["unavailable", "shutting_down", "not_writer"].contains(error.code) {
                            guard attempt < addresses.count, !lockstep.mayHaveHadEffects else {
                                // This call did not go through, but an earlier one of the command took effect.
                                if lockstep.mayHaveHadEffects, !error.mayHaveRun {
                                    throw CommandFailure(partlyDone: error, server: target, notRunAgain: attempt < addresses.count)
                                }
                                throw CommandFailure(remote: error, server: target)
                            }
                            attempt += 1
                        } catch let error as LockstepClientError {
                            throw CommandFailure(remote: error, server: target)
                        }
                    }
                }
            } catch let error as LockstepClientError {
                throw CommandFailure(remote: error, server: address)
            }
        }
    }
}

/// Exit statuses of commands that talk to a server (docs/cli.md).
enum RemoteExit {
    /// The server refused: a rejection, a conflict, an unknown migration, bad input.
    static let refused: Int32 = 1
    /// The call did not go through and may later: the server could not be reached, is shutting down, is
    /// not the writer, or refused it for now (a limit, no writer).
    static let unreachable: Int32 = 3
    /// Not authenticated, or not permitted.
    static let denied: Int32 = 4
}

extension CommandFailure {
    /// How to find out what a command that stopped half-way did.
    static let look = "look (`lockstep migration status`, `lockstep freeze list`, `lockstep history export`) before running it again"

    /// A call of a command did not go through (its server unreachable, shutting down, or not the writer)
    /// after an earlier call of it took effect: the command is not run again on the next address (it
    /// would repeat that).
    init(partlyDone error: LockstepClientError, server: String, notRunAgain: Bool) {
        let what = switch error.code {
        case "shutting_down": "was shutting down"
        case "not_writer": "is not the writer (\(error.writer.map { "it names \($0)" } ?? "it names no writer"))"
        default: "could not be reached"
        }
        self.init(message: "\(error.code): the Lockstep server at \(server) \(what) (\(error.message)) after part of the command had taken effect\(notRunAgain ? "; it was not run again on the next address" : ""): \(Self.look)",
                  exitCode: RemoteExit.unreachable)
    }

    init(remote error: LockstepClientError, server: String) {
        switch error.code {
        case "unavailable" where error.mayHaveRun:
            self.init(message: "unavailable: the connection to the Lockstep server at \(server) was lost before the answer (\(error.message)); the command may have been carried out: \(Self.look)",
                      exitCode: RemoteExit.unreachable)
        case "unavailable":
            self.init(message: "unavailable: cannot reach the Lockstep server at \(server) (\(error.message)); is `lockstep serve` running there? Set --server or LOCKSTEP_SERVER",
                      exitCode: RemoteExit.unreachable)
        case "shutting_down":
            self.init(message: error.description, exitCode: RemoteExit.unreachable)
        case "deadline_exceeded":
            self.init(message: "deadline_exceeded: the Lockstep server at \(server) did not answer in time (\(error.message)); a server that froze, or one overloaded? --call-timeout-ms sets the bound"
                          + (error.mayHaveRun ? "; the command may have been carried out: \(Self.look)" : ""),
                      exitCode: RemoteExit.unreachable)
        case "unauthenticated", "permission_denied":
            self.init(message: error.description, exitCode: RemoteExit.denied)
        case _ where ErrorCode(rawValue: error.code).map({ $0.isTransient && $0 != .commitOutcomeUnknown }) == true && !error.mayHaveRun:
            // Not now (no writer, a limit, a busy store): this call did nothing, and may go through later;
            // not a refusal of it. (An earlier call of the command may have taken effect: `start --wait` says so.)
            self.init(message: "\(error.description); this call was not carried out: it may go through later", exitCode: RemoteExit.unreachable)
        case _ where error.mayHaveRun:
            // The server could not say whether the write was carried out (`commit_outcome_unknown`, an
            // answer it could not encode after the work was done, …).
            self.init(message: "\(error.description); the command may have been carried out: \(Self.look)", exitCode: RemoteExit.unreachable)
        default:
            self.init(message: error.description, exitCode: RemoteExit.refused)
        }
    }
}

/// Prints `message` in the proto3 JSON mapping (what the JSON API answers), pretty.
func printJSON(_ message: some SwiftProtobuf.Message) throws {
    var options = JSONEncodingOptions()
    options.preserveProtoFieldNames = true
    let compact = try message.jsonString(options: options)
    let object = try JSONSerialization.jsonObject(with: Data(compact.utf8))
    let pretty = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: pretty, as: UTF8.self))
}

/// Columns padded to their widest cell, two spaces apart.
func renderTable(_ header: [String], _ rows: [[String]], indent: String = "") -> String {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    return ([header] + rows).map { row in
        indent + row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}

/// Milliseconds since the epoch as an ISO 8601 time (UTC, seconds).
func isoTime(_ millis: Int64) -> String {
    guard millis > 0 else { return "-" }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1_000))
}

/// Every event of `stream` ("" = every stream) on the server, page by page from the first, up to and
/// including `through` (nil = the end), each handed to `body` in order.
func eachEvent(_ lockstep: LockstepClient, stream: String = "", after: UInt64 = 0, through: UInt64? = nil,
               _ body: (Lockstep_V1_EventEnvelope) throws -> Void) async throws {
    var position = after
    while through.map({ position < $0 }) ?? true {
        let page = try await lockstep.events(.with {
            $0.afterSequence = position
            $0.stream = stream
            $0.pageSize = 1_000
        })
        for envelope in page.events where through.map({ envelope.sequence <= $0 }) ?? true { try body(envelope) }
        guard page.nextAfterSequence > position, !page.events.isEmpty else { break }
        position = page.nextAfterSequence
    }
}

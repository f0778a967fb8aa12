import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepWire
import Synchronization

// `lockstep migration wait` and `migration start --wait` (issue 20): follow a migration in a pipeline and
// answer with an exit status per outcome, one plain line per event (no terminal control sequences).

/// How a wait ended, and its exit status (docs/cli.md).
enum WaitOutcome: Equatable {
    case succeeded
    case rolledBack(String)
    case failed(String)
    /// Paused: it waits for a person (resume, or abort).
    case paused(String)
    /// Still running when the timeout passed.
    case timedOut(String)

    var exitCode: Int32 {
        switch self {
        case .succeeded: 0
        case .rolledBack: 5
        case .failed: 6
        case .paused: 7
        case .timedOut: 8
        }
    }
}

extension MigrationsCommand {
    struct Wait: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait for a migration in a pipeline: one line per event, then its outcome as the exit status.",
            discussion: """
                Exit status: 0 succeeded, 5 rolled back, 6 failed (its rollback failed), 7 paused (it waits for a \
                person: resume or abort it), 8 still running when --timeout passed (the last line says what it waits for).
                """)

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Option(help: "Give up after this long: 90s, 30m, 2h (default: wait until it settles or pauses).") var timeout: DurationArgument?

        func run() async throws {
            var outcome = WaitOutcome.succeeded
            let printed = PrintedUpTo()
            try await server.run { lockstep in outcome = try await waitFor(id, lockstep, timeout: timeout, printed: printed) }
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        }
    }
}

/// The last event a watch printed (its global sequence): run again on the next address after
/// `unavailable`, the command's watch goes on after it, so no line is printed twice.
final class PrintedUpTo: Sendable {
    private let sequence = Mutex<UInt64>(0)
    /// The last sequence printed (0: none yet).
    var value: UInt64 { sequence.withLock { $0 } }
    /// Notes that the event at `sequence` was printed.
    func printed(_ sequence: UInt64) { self.sequence.withLock { $0 = max($0, sequence) } }
}

/// Prints every event of migration `id` as a line while it runs (after `printed`'s, when a run before
/// this one printed some), and returns how the wait ended: the migration settled, paused, or `timeout` passed.
func waitFor(_ id: String, _ lockstep: LockstepClient, timeout: DurationArgument?, printed: PrintedUpTo = PrintedUpTo()) async throws -> WaitOutcome {
    let deadline = timeout.map { ContinuousClock.now + .milliseconds($0.millis) }
    // The events, as plain lines, from the migration's start (the server ends the stream when it settles).
    // A watch cut off by a transient failure (its server gone: the client has moved to the next address)
    // is opened again after the last line printed, while the status below goes on: at once after one
    // that had printed something new, otherwise after a pause doubling from 200 ms to 5 s, back to
    // 200 ms after a watch that lasted 5 s (the status loop ends the wait should the server stay away).
    let events = Task {
        var pause = Duration.milliseconds(200)
        var printedBefore = printed.value
        while !Task.isCancelled {
            let opened = ContinuousClock.now
            do {
                return try await lockstep.watch(.with {
                    $0.migrationID = id
                    $0.afterSequence = printed.value
                }) { envelope in
                    let line = (try? EventRecordCodec.domainRecord(envelope.record)).flatMap(EventLine.init) ?? EventLine(envelope)
                    print("#\(envelope.sequence) \(line.text)")
                    printed.printed(envelope.sequence)
                    fflush(nil)
                }
            } catch let error as LockstepClientError where error.isTransient {
                if printed.value != printedBefore {
                    printedBefore = printed.value
                    pause = .milliseconds(200)
                    continue
                }
                if ContinuousClock.now - opened >= .seconds(5) { pause = .milliseconds(200) }
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }
    do {
        return try await waitForSettling(id, lockstep, events: events, deadline: deadline)
    } catch {
        // The watch is over before the error leaves (a command run again on the next address must not
        // find a line of this one printed after it decided nothing was).
        events.cancel()
        _ = await events.result
        throw error
    }
}

/// `waitFor`'s loop: the migration's status every 500 ms until it settles, pauses or `deadline` passes.
private func waitForSettling(_ id: String, _ lockstep: LockstepClient, events: Task<Void, any Error>,
                             deadline: ContinuousClock.Instant?) async throws -> WaitOutcome {
    while true {
        let migration = try await lockstep.migration(.with { $0.migrationID = id })
        let reason = migration.statusReason
        let outcome: WaitOutcome? = switch MigrationStatus(migration.status) {
        case .succeeded?: .succeeded
        case .rolledBack?: .rolledBack(reason)
        case .failed?: .failed(reason)
        case .paused?: .paused(reason)
        default: deadline.map { ContinuousClock.now >= $0 } == true ? .timedOut(waitingFor(migration)) : nil
        }
        if let outcome {
            // A settled migration's stream ends by itself: let its last lines through (briefly).
            if MigrationStatus(migration.status)?.isSettled == true {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { _ = try? await events.value }
                    group.addTask { try? await Task.sleep(for: .seconds(5)) }
                    await group.next()
                    group.cancelAll()
                }
            }
            events.cancel()
            print(summary(id, outcome))
            fflush(nil)
            return outcome
        }
        try await Task.sleep(for: .milliseconds(500))
    }
}

/// The last line of a wait, as a CI log shows it, with the command that acts on it.
func summary(_ id: String, _ outcome: WaitOutcome) -> String {
    switch outcome {
    case .succeeded: "\(id): succeeded"
    case .rolledBack(let why): "\(id): rolled back: \(why)"
    case .failed(let why): "\(id): failed: \(why) (see lockstep migration status \(id))"
    case .paused(let why): "\(id): paused, waiting for a person: \(why) (lockstep migration resume \(id), or abort)"
    case .timedOut(let what): "\(id): still running when the timeout passed: \(what)"
    }
}

/// What a running migration waits for, in a line: gates and the nodes that are not done.
func waitingFor(_ migration: Lockstep_V1_Migration) -> String {
    let gates = migration.nodes.filter { $0.status == .awaitingApproval }.map {
        "\($0.nodeID) awaits approval (\($0.approvals) of \($0.approvalsNeeded); lockstep migration approve \(migration.migrationID) \($0.nodeID))"
    }
    let others = migration.nodes.filter { ![.succeeded, .awaitingApproval, .skipped, .pending].contains($0.status) }.map { "\($0.nodeID) \($0.status.name)" }
    let all = gates + others
    return all.isEmpty ? "nothing has started yet" : all.joined(separator: "; ")
}

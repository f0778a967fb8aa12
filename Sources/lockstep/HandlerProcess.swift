import Foundation
import Subprocess
import Synchronization
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs a step handler with swift-subprocess: the params go to its stdin, its stdout comes back line
/// by line, the end of its stderr is kept for a failure reason (and passed through to ours), and it
/// can be stopped from outside (SIGTERM to its process group, SIGKILL after a grace period).
///
/// The handler gets its own process group, so stopping it stops what it started too, and default
/// signal dispositions (the agent itself ignores SIGTERM and SIGINT to turn them into graceful
/// shutdown; a handler must not inherit that).
enum HandlerProcess {
    /// Longest stdout or stderr line, in bytes: a longer one stops the handler and fails the step.
    static let lineBytesMax = 65_536
    /// How much of the end of stderr is kept for the failure reason, in lines.
    static let stderrTailLinesMax = 3

    enum Exit: Equatable, Sendable {
        case status(Int32)
        case signal(Int32)
    }

    /// The last lines of the handler's stderr.
    private final class StderrTail: Sendable {
        let lines = Mutex<[String]>([])
    }

    /// Stops a running handler on request (from the heartbeat loop or graceful shutdown).
    final class Control: Sendable {
        private let requests: AsyncStream<Duration>
        private let continuation: AsyncStream<Duration>.Continuation
        private let state = Mutex((finished: false, stopRequested: false))

        init() {
            (requests, continuation) = AsyncStream.makeStream(of: Duration.self, bufferingPolicy: .bufferingOldest(1))
        }

        /// SIGTERM to the handler's process group now, SIGKILL after `grace` if it has not exited.
        func stop(grace: Duration) {
            let first = state.withLock { state in
                defer { state.stopRequested = true }
                return !state.stopRequested && !state.finished
            }
            if first { continuation.yield(grace) }
        }

        var finished: Bool { state.withLock { $0.finished } }

        fileprivate func markFinished() {
            state.withLock { $0.finished = true }
            continuation.finish()
        }

        fileprivate var stopRequests: AsyncStream<Duration> { requests }
    }

    /// Runs `executable` to its end; `line` gets each stdout line. Returns how it ended and the end of
    /// its stderr.
    static func run(_ executable: String, environment: [String: String?], input: String, control: Control,
                    line: @escaping @Sendable (String) -> Void) async throws -> (exit: Exit, stderrTail: String) {
        var options = PlatformOptions()
        options.processGroupID = 0
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in environment {
            if let key = Environment.Key(rawValue: key) { overrides[key] = value }
        }
        let tail = StderrTail()
        let result = try await Subprocess.run(
            .path(FilePath(executable)), environment: .inherit.updating(overrides), platformOptions: options,
            input: .string(input), output: .sequence, error: .sequence
        ) { execution in
            await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    do {
                        for try await text in execution.standardOutput.strings(bufferingPolicy: .maxLineLength(lineBytesMax)) { line(text) }
                    } catch {
                        line("(lockstep agent: \(error); stopping the handler)")
                        control.stop(grace: .seconds(2))
                    }
                    return true
                }
                group.addTask {
                    do {
                        for try await text in execution.standardError.strings(bufferingPolicy: .maxLineLength(lineBytesMax)) {
                            FileHandle.standardError.write(Data((text + "\n").utf8))
                            tail.lines.withLock { lines in
                                lines.append(text)
                                if lines.count > stderrTailLinesMax { lines.removeFirst() }
                            }
                        }
                    } catch {
                        control.stop(grace: .seconds(2))
                    }
                    return true
                }
                // Stop requests: the whole process group, politely first.
                group.addTask {
                    for await grace in control.stopRequests {
                        try? execution.send(signal: .terminate, toProcessGroup: true)
                        try? await Task.sleep(for: grace)
                        try? execution.send(signal: .kill, toProcessGroup: true)
                        return false
                    }
                    return false
                }
                // The output ends when the handler (and all it started) has closed it.
                var readersDone = 0
                while readersDone < 2, let reader = await group.next() {
                    if reader { readersDone += 1 }
                }
                control.markFinished()
                group.cancelAll()
            }
        }
        let exit: Exit = switch result.terminationStatus {
        case .exited(let code): .status(code)
        case .signaled(let signal): .signal(signal)
        }
        return (exit, tail.lines.withLock { $0.joined(separator: " | ") })
    }
}

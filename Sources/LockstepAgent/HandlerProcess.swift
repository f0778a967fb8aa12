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
    /// Longest stdout or stderr line, in bytes: a longer one stops the handler.
    static let lineBytesMax = 65_536
    /// How much of the end of stderr is kept for the failure reason, in lines.
    static let stderrTailLinesMax = 3

    enum Exit: Equatable, Sendable {
        case status(Int32)
        case signal(Int32)
    }

    /// Stops a running handler on request (from the lease watchdog or graceful shutdown), by its
    /// process group, from the moment it starts until it has exited and been reaped.
    final class Control: Sendable {
        private struct State {
            var processGroup: pid_t?
            var finished = false
            var stopRequested = false
        }

        private let state = Mutex(State())

        /// SIGTERM to the handler's process group now, SIGKILL after `grace` if it has not exited.
        /// Returns false when there was nothing to stop (it had finished, or a stop was already asked for).
        /// `accepted` runs when the stop is taken, before the handler can be marked finished: what it
        /// marks is seen by whoever reads it once `run` has returned.
        @discardableResult
        func stop(grace: Duration, accepted: () -> Void = {}) -> Bool {
            let group = state.withLock { state -> pid_t?? in
                guard !state.finished, !state.stopRequested else { return .none }
                state.stopRequested = true
                accepted()
                return .some(state.processGroup)
            }
            guard let group else { return false }
            if let group { kill(-group, SIGTERM) }
            Task {
                try? await Task.sleep(for: grace)
                // Still not reaped: no other process can have its group id yet.
                if let group = self.state.withLock({ $0.finished ? nil : $0.processGroup }) { kill(-group, SIGKILL) }
            }
            return true
        }

        var finished: Bool { state.withLock { $0.finished } }

        fileprivate func started(_ pid: pid_t) {
            let stopNow = state.withLock { state in
                state.processGroup = pid
                return state.stopRequested
            }
            // Asked to stop before it had started.
            if stopNow { kill(-pid, SIGTERM) }
        }

        fileprivate func markFinished() { state.withLock { $0.finished = true } }
    }

    /// Runs `executable` to its end; `line` gets each stdout line. Returns how it ended and the end of
    /// its stderr. Throws only when it could not be started.
    static func run(_ executable: String, environment: [String: String?], input: String, control: Control,
                    line: @escaping @Sendable (String) -> Void) async throws -> (exit: Exit, stderrTail: String) {
        var options = PlatformOptions()
        options.processGroupID = 0
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in environment {
            if let key = Environment.Key(rawValue: key) { overrides[key] = value }
        }
        let tail = StderrTail()
        defer { control.markFinished() }
        let result = try await Subprocess.run(
            .path(FilePath(executable)), environment: .inherit.updating(overrides), platformOptions: options,
            input: .inputWriter, output: .sequence, error: .sequence
        ) { execution in
            control.started(execution.processIdentifier.value)
            await withTaskGroup(of: Void.self) { group in
                // A handler may exit without reading its params (it may read LOCKSTEP_PARAMS instead).
                group.addTask {
                    _ = try? await execution.standardInputWriter.write(input)
                    _ = try? await execution.standardInputWriter.finish()
                }
                group.addTask {
                    do {
                        for try await text in execution.standardOutput.strings(bufferingPolicy: .maxLineLength(lineBytesMax)) { line(text) }
                    } catch {
                        line("(lockstep agent: \(error); stopping the handler)")
                        control.stop(grace: .seconds(2))
                    }
                }
                group.addTask {
                    do {
                        for try await text in execution.standardError.strings(bufferingPolicy: .maxLineLength(lineBytesMax)) {
                            try? FileHandle.standardError.write(contentsOf: Data((text + "\n").utf8))
                            tail.lines.withLock { lines in
                                lines.append(text)
                                if lines.count > stderrTailLinesMax { lines.removeFirst() }
                            }
                        }
                    } catch {
                        control.stop(grace: .seconds(2))
                    }
                }
            }
        }
        let exit: Exit = switch result.terminationStatus {
        case .exited(let code): .status(code)
        case .signaled(let signal): .signal(signal)
        }
        return (exit, tail.lines.withLock { $0.joined(separator: " | ") })
    }

    /// The last lines of the handler's stderr.
    private final class StderrTail: Sendable {
        let lines = Mutex<[String]>([])
    }
}

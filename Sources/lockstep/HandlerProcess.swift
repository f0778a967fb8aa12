import Foundation
import Synchronization

/// A step handler running as a child process: the params go to its stdin, its stdout comes back line
/// by line, the tail of its stderr is kept for a failure reason, and it can be stopped (SIGTERM, then
/// SIGKILL after a grace period). Output is read by Foundation's readability handlers, never by a
/// blocking read on a Swift concurrency thread.
final class HandlerProcess: Sendable {
    /// Longest stdout line handed on, in bytes (longer ones are cut there).
    static let lineBytesMax = 65_536
    /// How much of the end of stderr is kept for the failure reason, in bytes.
    static let stderrTailBytesMax = 800

    enum Exit: Equatable, Sendable {
        case status(Int32)
        case signal(Int32)
    }

    private struct State {
        var exit: Exit?
        var waiters: [CheckedContinuation<Exit, Never>] = []
        var stderrTail: [UInt8] = []
        var stdoutPartial: [UInt8] = []
    }

    /// Shared with the pipe and termination handlers (which must not hold the whole object).
    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    private let process: Process
    private let shared = Shared()
    /// The handler's stdout, one line at a time (without the newline); ends when it closes stdout.
    let lines: AsyncStream<String>

    init(executable: String, environment: [String: String], input: Data) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.environment = environment
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        self.process = process
        let (lines, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(1_024))
        self.lines = lines
        let shared = self.shared
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                let rest = shared.state.withLock { state in
                    defer { state.stdoutPartial = [] }
                    return state.stdoutPartial
                }
                if !rest.isEmpty { continuation.yield(String(decoding: rest, as: UTF8.self)) }
                continuation.finish()
                return
            }
            let complete = shared.state.withLock { state -> [String] in
                var complete: [String] = []
                for byte in data {
                    if byte == UInt8(ascii: "\n") {
                        complete.append(String(decoding: state.stdoutPartial, as: UTF8.self))
                        state.stdoutPartial = []
                    } else if state.stdoutPartial.count < Self.lineBytesMax {
                        state.stdoutPartial.append(byte)
                    }
                }
                return complete
            }
            for line in complete { continuation.yield(line) }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                return
            }
            FileHandle.standardError.write(data)
            shared.state.withLock { state in
                state.stderrTail.append(contentsOf: data)
                if state.stderrTail.count > Self.stderrTailBytesMax { state.stderrTail.removeFirst(state.stderrTail.count - Self.stderrTailBytesMax) }
            }
        }
        process.terminationHandler = { process in
            let exit: Exit = process.terminationReason == .uncaughtSignal ? .signal(process.terminationStatus) : .status(process.terminationStatus)
            let waiters = shared.state.withLock { state in
                state.exit = exit
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume(returning: exit) }
        }
        try process.run()
        // Written off the caller's thread: a handler that never reads stdin must not block the agent.
        let writer = stdin.fileHandleForWriting
        DispatchQueue.global().async {
            try? writer.write(contentsOf: input)
            try? writer.close()
        }
    }

    /// Waits for the handler to exit.
    func wait() async -> Exit {
        await withCheckedContinuation { continuation in
            let exit = shared.state.withLock { state -> Exit? in
                if let exit = state.exit { return exit }
                state.waiters.append(continuation)
                return nil
            }
            if let exit { continuation.resume(returning: exit) }
        }
    }

    var hasExited: Bool { shared.state.withLock { $0.exit != nil } }

    /// The end of what the handler wrote to stderr, as one line.
    var stderrTail: String {
        let bytes = shared.state.withLock { $0.stderrTail }
        return String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).suffix(3).joined(separator: " | ")
    }

    /// SIGTERM now, SIGKILL if it is still running after `grace`.
    func stop(grace: Duration) {
        guard !hasExited else { return }
        kill(process.processIdentifier, SIGTERM)
        let pid = process.processIdentifier
        Task { [weak self] in
            try? await Task.sleep(for: grace)
            if let self, !self.hasExited { kill(pid, SIGKILL) }
        }
    }
}

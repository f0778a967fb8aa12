import Foundation
import Synchronization

// Shared by the test targets: temporary directories and child processes bounded in time.

/// A new directory under the system temporary directory, removed when the test process exits
/// (unless `LOCKSTEP_KEEP_TEST_FILES` is set, to look at a failed run's files). A run left about
/// 830 MB of them behind before. `removedAtExit: false` for a directory something outlives the
/// process in (the PostgreSQL cluster, which its watchdog stops and then removes).
public func temporaryDirectory(removedAtExit: Bool = true) -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-test-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    if removedAtExit { TemporaryDirectories.add(path) }
    return path
}

/// `LOCKSTEP_KEEP_TEST_FILES` is set: the test files stay after the run.
let keepTestFiles = ProcessInfo.processInfo.environment["LOCKSTEP_KEEP_TEST_FILES"] != nil

/// The directories `temporaryDirectory` made, removed by an `atexit` handler.
private enum TemporaryDirectories {
    static let made = Mutex<[String]>([])

    static func add(_ path: String) {
        guard !keepTestFiles else { return }
        let first = made.withLock { made in
            made.append(path)
            return made.count == 1
        }
        if first { atexit { TemporaryDirectories.removeAll() } }
    }

    static func removeAll() {
        for path in made.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// The `lockstep` executable built next to the test bundle.
public func lockstepBinary() throws -> String {
    var candidates: [String] = []
    if let override = ProcessInfo.processInfo.environment["LOCKSTEP_BINARY"] { candidates.append(override) }
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    candidates.append(runner.appendingPathComponent("lockstep").path)
    candidates.append(runner.deletingLastPathComponent().appendingPathComponent("lockstep").path)
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(packageRoot.appendingPathComponent(".build/debug/lockstep").path)
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw TestFailure("the lockstep binary was not found (looked in \(candidates)); run `swift build --build-tests` first")
    }
    return found
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The outcome of a finished child process.
public struct ProcessOutput: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// A child process whose stdout and stderr go to files (a kill loses nothing already written, and a
/// fast child never blocks on a full pipe); always bounded by a deadline.
public final class ChildProcess: @unchecked Sendable {
    private let process: Process
    private let outPath: String
    private let errPath: String

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let directory = temporaryDirectory()
        outPath = directory + "/stdout"
        errPath = directory + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process = Process()
        // Tied to this test process's life: a run that crashes or is killed leaves no server running
        // (they used to be found, reparented to init, an hour later). The kernel sends the signal when
        // the thread that started the child ends, so one thread that lives as long as the process starts
        // every child (`Spawner`).
        // Under setpriv a missing program would only show as a child exiting 127: say so here, as before.
        guard FileManager.default.isExecutableFile(atPath: executable) else { throw TestFailure("\(executable) is not an executable file") }
        if let setpriv = Spawner.setpriv {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardInput = FileHandle.nullDevice
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let process = process
        try Spawner.shared.run {
            // Foundation's Process passes on the calling thread's signal mask, and the threads a test runs
            // on block almost every signal: a child would start with SIGTERM blocked and never see it.
            // Spawn it as a shell would, with nothing blocked.
            var nothingBlocked = sigset_t()
            var callers = sigset_t()
            sigemptyset(&nothingBlocked)
            pthread_sigmask(SIG_SETMASK, &nothingBlocked, &callers)
            defer { pthread_sigmask(SIG_SETMASK, &callers, nil) }
            try process.run()
        }
    }

    /// A child nobody holds any more is not left running: a test that stopped half-way (a failed
    /// expectation, a thrown error) would otherwise leave servers and agents behind it.
    deinit {
        if process.isRunning && !reaped { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    public var pid: Int32 { process.processIdentifier }
    public var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// Waits until stdout contains `text`, up to `seconds`.
    public func waitForOutput(_ text: String, seconds: Double) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !stdout.contains(text) {
            guard Date() < deadline, process.isRunning else {
                throw TestFailure("child never printed \(text); stderr: \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    public func kill(_ signal: Int32) {
        if !reaped { Foundation.kill(process.processIdentifier, signal) }
    }

    /// Waits for exit, killing the child if it outlives `seconds`. Never blocks without a bound: Foundation
    /// reaps its children from a SIGCHLD source and on Linux has been seen to miss one (the child a zombie,
    /// `isRunning` true for ever, `waitUntilExit` never returning: a CI run hung 15 minutes in it), so the
    /// child is also reaped here with `waitpid(WNOHANG)`.
    @discardableResult
    public func wait(seconds: Double) async throws -> ProcessOutput {
        let deadline = Date().addingTimeInterval(seconds)
        var killedAt: Date?
        var status: Int32?
        while status == nil && process.isRunning {
            status = reap()
            if status == nil, killedAt == nil, Date() > deadline {
                kill(SIGKILL)
                killedAt = Date()
            }
            if let killedAt, Date() > killedAt.addingTimeInterval(10) {
                throw TestFailure("child \(pid) was killed after \(seconds) s and still not reaped 10 s later; stderr: \(stderr)")
            }
            if status == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        if killedAt != nil { throw TestFailure("child did not exit within \(seconds) s; stderr: \(stderr)") }
        if let status { return ProcessOutput(status: status, stdout: stdout, stderr: stderr) }
        process.waitUntilExit()  // it has exited: returns at once
        return ProcessOutput(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    /// Reaped here (Foundation missed it), so its pid is not ours to signal any more.
    private var reaped = false

    /// The child's exit status (its code, or the signal that ended it) if it has exited and is reaped now.
    private func reap() -> Int32? {
        var raw: Int32 = 0
        guard waitpid(process.processIdentifier, &raw, WNOHANG) == process.processIdentifier else { return nil }
        reaped = true
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : signal
    }
}

/// Runs `lockstep` with `arguments` to completion (at most `seconds`).
public func runLockstep(_ arguments: [String], seconds: Double = 60) async throws -> ProcessOutput {
    try await ChildProcess(try lockstepBinary(), arguments).wait(seconds: seconds)
}


/// Waits until `check` holds, polling every `pause` (nil: yielding in between, for checks of in-process
/// state that a test makes thousands of times), at most `seconds`; then fails naming `what`.
public func eventually(_ what: String, seconds: Double = 30, every pause: Duration? = .milliseconds(50),
                       _ check: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try await !check() {
        guard Date() < deadline else { throw TestFailure("never happened: \(what)") }
        if let pause { try await Task.sleep(for: pause) } else { await Task.yield() }
    }
}

/// SplitMix64: a seeded generator, so every random choice in a test reproduces from its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The thread that starts every `ChildProcess`: it lives as long as the test process, so a child started
/// with `setpriv --pdeathsig KILL` is killed exactly when the test process ends, however it ends.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    /// util-linux's setpriv, where there is one.
    static let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

    private static let threadName = "lockstep-test-spawner"
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = Self.threadName
        thread.start()
    }

    /// Runs `body` on the spawner's thread and waits for it (a spawn takes a few milliseconds); on that
    /// thread itself, at once (waiting there would never end).
    func run(_ body: @escaping @Sendable () throws -> Void) throws {
        if Thread.current.name == Self.threadName { return try body() }
        let done = DispatchSemaphore(value: 0)
        let failure = Mutex<(any Error)?>(nil)
        condition.lock()
        jobs.append {
            do { try body() } catch { failure.withLock { $0 = error } }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

import Foundation
import LockstepTestSupport
import Testing

/// README.md's walk-through, run as written (issue 14: followed literally, it failed the migration —
/// handlers were missing — and could never approve a gate under `--dev`). The test takes the README's
/// own `lockstep serve … --dev` line (DIR filled in) and the shell block after "The whole ledger split",
/// runs them with `bash` in a directory holding `examples/` and the server's `ready.json`, with the built
/// binary first on PATH, and expects the migration to succeed and the history to verify.
@Suite(.serialized) struct ReadmeTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The lines of the first fenced `sh` block after the line containing `marker`.
    static func block(after marker: String, in text: String) throws -> String {
        let lines = text.components(separatedBy: "\n")
        let start = try #require(lines.firstIndex { $0.contains(marker) }, "README.md has no \(marker)")
        let open = try #require(lines[start...].firstIndex { $0.trimmingCharacters(in: .whitespaces) == "```sh" })
        let close = try #require(lines[(open + 1)...].firstIndex { $0.trimmingCharacters(in: .whitespaces) == "```" })
        return lines[(open + 1)..<close].map { $0.hasPrefix("  ") ? String($0.dropFirst(2)) : $0 }.joined(separator: "\n")
    }

    @Test func theLedgerSplitWalkThroughRunsAsWritten() async throws {
        let readme = try String(contentsOf: Self.repository.appendingPathComponent("README.md"), encoding: .utf8)
        let serveLine = try #require(readme.components(separatedBy: "\n").first { $0.contains("lockstep serve --data DIR --dev") })
        let walkThrough = try Self.block(after: "The whole ledger split", in: readme)
        #expect(walkThrough.contains("lockstep agent --service") && walkThrough.contains("approve"), "\(walkThrough)")

        let work = temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: work + "/examples", withDestinationPath: Self.repository.appendingPathComponent("examples").path)
        let binaryDirectory = URL(fileURLWithPath: try lockstepBinary()).deletingLastPathComponent().path
        let path = "\(binaryDirectory):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")"
        // The README's serve line as written, with DIR filled in and the comment dropped.
        let serve = serveLine.trimmingCharacters(in: .whitespaces).components(separatedBy: "   #")[0].replacingOccurrences(of: "DIR", with: work + "/data")
        let server = try ChildProcess("/bin/bash", ["-c", "cd '\(work)' && exec \(serve)"], environment: ["PATH": path])
        defer { server.kill(SIGTERM) }
        try await eventually("the README's server is ready") { FileManager.default.fileExists(atPath: work + "/ready.json") }

        // The block as written; then (the harness's own lines) wait for the migration to settle, print its
        // status, and stop the agents and the watch the block left in the background.
        let script = """
            set -e
            cd '\(work)'
            \(walkThrough)
            for i in $(seq 240); do
              status=$(lockstep migration list --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["migrations"][0]["status"])')
              case "$status" in succeeded|failed|rolled_back) break;; esac
              sleep 0.5
            done
            echo "final status: $status"
            lockstep history verify
            kill $(jobs -p) 2>/dev/null || true
            wait 2>/dev/null || true
            """
        let run = try await ChildProcess("/bin/bash", ["-c", script], environment: ["PATH": path]).wait(seconds: 240)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr.suffix(3_000))")
        #expect(run.stdout.contains("final status: succeeded"), "\(run.stdout.suffix(3_000))\n\(run.stderr.suffix(2_000))")
        #expect(run.stdout.contains("ok: ") && run.stdout.contains("head sequence: "), "history verify ran")
        server.kill(SIGTERM)
        _ = try await server.wait(seconds: 30)
    }
}

import Foundation
import LockstepTestSupport
import Testing

/// Every shell example in README.md and docs/ runs as written and prints what the doc shows
/// (`ops/check-docs`; issue 14: followed literally, the landed README failed its migration, could not
/// approve a gate under `--dev`, and docs/api.md showed a stale content hash and a wrong cohort).
@Suite(.serialized) struct DocExamplesTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var checkDocs: String { repository.appendingPathComponent("ops/check-docs").path }

    @Test func everyShellExampleInTheReadmeAndDocsRunsAsWritten() async throws {
        let run = try await ChildProcess("/usr/bin/env", ["python3", Self.checkDocs, "--lockstep", try lockstepBinary(), "--timeout", "240"])
            .wait(seconds: 900)
        #expect(run.status == 0, "\(run.stdout.suffix(8_000))\n\(run.stderr.suffix(2_000))")
        #expect(run.stdout.contains("README.md: ") && run.stdout.contains("docs/api.md: "), "\(run.stdout)")
        print(run.stdout)
    }

    /// The check itself can fail: a wrong output, a wrong exit status, a failing script and a listing
    /// that is not its file are each reported, and nothing else is.
    @Test func theCheckReportsADocThatDoesNotMatchWhatItShows() async throws {
        let directory = temporaryDirectory()
        let doc = directory + "/wrong.md"
        try """
            ```sh
            $ lockstep plan lint examples/gated.yaml
            examples/gated.yaml: ok: plan gated, 3 nodes, 2 services
            $ lockstep migration status nope --server 127.0.0.1:1
            error: unavailable: …
            $ echo fine
            fine
            ```

            ```sh
            lockstep plan lint examples/no-such-plan.yaml
            ```

            <!-- doc-test: file examples/handlers/backfill -->
            ```sh
            #!/bin/sh
            echo not the handler
            ```
            """.write(toFile: doc, atomically: true, encoding: .utf8)
        let run = try await ChildProcess("/usr/bin/env", ["python3", Self.checkDocs, "--lockstep", try lockstepBinary(), doc]).wait(seconds: 120)
        #expect(run.status == 1, "\(run.stdout)")
        #expect(run.stdout.contains("4 problem(s)"), "\(run.stdout)")
        #expect(run.stdout.contains("`lockstep plan lint examples/gated.yaml` printed"), "\(run.stdout)")
        #expect(run.stdout.contains("exited 3, the doc says 0"), "\(run.stdout)")
        #expect(run.stdout.contains("the block is not the text of examples/handlers/backfill"), "\(run.stdout)")
        #expect(run.stdout.contains("stopped here (script)") && run.stdout.contains("no-such-plan.yaml"), "\(run.stdout)")
        #expect(!run.stdout.contains("`echo fine`"), "a matching command is not reported: \(run.stdout)")
    }
}

/// The children tests start (servers, agents, scripts) see signals as they would under a shell or
/// systemd: nothing blocked (issue 14: they inherited a mask blocking SIGTERM, so a test's SIGTERM could
/// go unseen by a child that had not installed its own handling).
@Test func childProcessesStartWithNoSignalBlocked() async throws {
    let run = try await ChildProcess("/bin/sh", ["-c", "grep SigBlk /proc/self/status"]).wait(seconds: 30)
    #expect(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "SigBlk:\t0000000000000000", "\(run.stdout)")
}

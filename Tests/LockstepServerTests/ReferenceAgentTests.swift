import Foundation
@testable import LockstepAgent
import LockstepClient
import LockstepWire
import LockstepTestSupport
import Testing

/// `lockstep agent` as a process against a real `lockstep serve --dev`: what a handler's exit status
/// means, progress lines, the environment, graceful shutdown, and a lost lease.
@Suite(.serialized) struct ReferenceAgentTests {
    struct Setup {
        let server: ServerProcess
        let directory: String

        /// `lockstep agent` for service `svc`, exiting after `steps` steps.
        func agent(steps: Int? = nil, extra: [String] = []) throws -> ChildProcess {
            try ChildProcess(try lockstepBinary(),
                             ["agent", "--service", "svc", "--handlers", directory + "/handlers", "--id", "agent-1"]
                                 + (steps.map { ["--steps", String($0)] } ?? []) + extra,
                             environment: ["LOCKSTEP_SERVER": server.grpc, "LOCKSTEP_TOKEN": "secret-of-the-agent"])
        }

        /// The exported history's lines of `type`.
        func events(_ type: String) async throws -> [String] {
            let export = try await ChildProcess(try lockstepBinary(), ["history", "export"], environment: ["LOCKSTEP_SERVER": server.grpc]).wait(seconds: 30)
            return export.stdout.split(separator: "\n").map(String.init).filter { $0.contains(#""\#(type)":"#) }
        }

        func file(_ name: String) -> String? { try? String(contentsOfFile: directory + "/" + name, encoding: .utf8) }
    }

    /// Starts a server with `plan` applied and migration m1 started, and `handlers` (action → script).
    func setUp(plan: String, handlers: [String: String]) async throws -> Setup {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        for (action, script) in handlers {
            try ("#!/bin/sh\nout=\"$(dirname \"$0\")/..\"\n" + script).write(toFile: directory + "/handlers/" + action, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/" + action)
        }
        let server = try await ServerProcess()
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "agent-test", "migration_id": "m1"}"#).hasSuffix("\n200"))
        return Setup(server: server, directory: directory)
    }

    @Test func exitStatusesDecideHowAStepEndsAndHandlersGetParamsProgressAndTheirEnvironment() async throws {
        let setup = try await setUp(plan: """
            name: agent-test
            services:
              svc: { owners: [team] }
            nodes:
              - id: flaky
                service: svc
                phase: backfill
                action: flaky
                params: { shard: 7 }
                retry: { max_attempts: 2, backoff: 1s }
              - id: broken
                service: svc
                phase: verify
                action: broken
                needs: [flaky]
            """, handlers: [
                "flaky": """
                    cat > "$out/stdin-$LOCKSTEP_ATTEMPT"
                    env | grep '^LOCKSTEP_' | sort > "$out/env-$LOCKSTEP_ATTEMPT"
                    echo "progress: 40 working on shard 7"
                    sleep 1.5
                    if [ "$LOCKSTEP_ATTEMPT" = 1 ]; then echo "the replica lags" >&2; exit 75; fi
                    echo "all copied"
                    """,
                "broken": "echo 'disk full on /data' >&2\nexit 3\n",
            ])
        let agent = try setup.agent(steps: 3)
        let output = try await agent.wait(seconds: 60)
        #expect(output.status == 0, "\(output)")
        #expect(output.stdout.contains("agent-1: m1/flaky: all copied"), "the handler's other lines are shown: \(output.stdout)")

        // Exit 75: a retryable failure with the end of stderr as the reason; then exit 0 completes it.
        let failed = try await setup.events("step_failed")
        #expect(failed.count == 2, "\(failed)")
        #expect(failed[0].contains(#""node_id":"flaky""#) && failed[0].contains(#""retryable":true"#)
            && failed[0].contains("flaky exited with status 75 (temporary failure): the replica lags"), "\(failed[0])")
        #expect(try await setup.events("step_completed").count == 1)
        #expect(try await setup.events("step_progress").first?.contains(#""percent":40,"message":"working on shard 7""#) == true)
        // Any other status: not retryable.
        #expect(failed[1].contains(#""node_id":"broken""#) && !failed[1].contains(#""retryable":true"#)
            && failed[1].contains("broken exited with status 3: disk full on /data"), "\(failed[1])")

        // Params on stdin; the step in the environment; never the agent's own token.
        #expect(setup.file("stdin-1") == #"{"shard":7}"#)
        let environment = try #require(setup.file("env-2"))
        for line in ["LOCKSTEP_MIGRATION=m1", "LOCKSTEP_NODE=flaky", "LOCKSTEP_ATTEMPT=2", "LOCKSTEP_FENCING_TOKEN=2", "LOCKSTEP_STEP_KIND=forward",
                     "LOCKSTEP_ACTION=flaky", #"LOCKSTEP_PARAMS={"shard":7}"#, "LOCKSTEP_AGENT_ID=agent-1"] {
            #expect(environment.contains(line + "\n"), "\(line) missing from \(environment)")
        }
        #expect(!environment.contains("LOCKSTEP_TOKEN") && !environment.contains("secret-of-the-agent"))
        _ = try await setup.server.stop()
    }

    static let oneStep = oneStepPlan()
    /// `oneStep` with a TTL no stall of a loaded machine outlives, for tests that are not about expiry.
    static let oneStepLongLease = oneStepPlan(timeouts: "{ heartbeat: 10s }")

    /// A plan of one node, `work`, on service `svc`.
    static func oneStepPlan(action: String = "work", timeouts: String = "{ heartbeat: 1s }", attempts: Int = 3) -> String {
        """
        name: agent-test
        services:
          svc: { owners: [team] }
        nodes:
          - id: work
            service: svc
            phase: backfill
            action: \(action)
            timeouts: \(timeouts)
            retry: { max_attempts: \(attempts), backoff: 1s }
        """
    }

    @Test func sigtermLetsTheRunningHandlerFinishAndReportsIt() async throws {
        let setup = try await setUp(plan: Self.oneStepLongLease, handlers: ["work": "touch \"$out/started\"\nsleep 2\n"])
        let agent = try setup.agent()
        try await eventually("the handler started") { setup.file("started") != nil }
        agent.kill(SIGTERM)
        let output = try await agent.wait(seconds: 30)
        #expect(output.status == 0 && output.stdout.contains("m1/work: completed") && output.stdout.hasSuffix("agent-1: stopped\n"), "\(output)")
        #expect(try await setup.events("step_completed").count == 1)
        _ = try await setup.server.stop()
    }

    /// A handler that starts something in the background and exits (a daemon that keeps the handler's
    /// stdout and stderr open): the step ends with the handler, not with the pipes; swift-subprocess stops
    /// reading them when the handler is reaped.
    @Test func aHandlerThatLeavesABackgroundProcessHoldingItsOutputCompletesWhenItExits() async throws {
        let setup = try await setUp(plan: Self.oneStepLongLease, handlers: ["work": "sleep 60 &\necho \"$!\" > \"$out/daemon\"\necho started it\n"])
        let agent = try setup.agent(steps: 1)
        let began = ContinuousClock.now
        let output = try await agent.wait(seconds: 50)
        #expect(output.status == 0 && output.stdout.contains("m1/work: completed"), "\(output)")
        #expect(ContinuousClock.now - began < .seconds(50), "the step waited for the background process")
        #expect(try await setup.events("step_completed").count == 1)
        if let daemon = setup.file("daemon").flatMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) { kill(daemon, SIGKILL) }
        _ = try await setup.server.stop()
    }

    /// The handler closes its output first (`exec > /dev/null`): it must still be stoppable.
    @Test func sigtermPastTheGraceStopsTheHandlerAndFailsTheStepRetryably() async throws {
        let setup = try await setUp(plan: Self.oneStepLongLease, handlers: ["work": "exec > /dev/null 2>&1\ntrap 'touch \"$out/terminated\"; exit 143' TERM\ntouch \"$out/started\"\nsleep 30 & wait\n"])
        let agent = try setup.agent(extra: ["--shutdown-grace-ms", "300"])
        try await eventually("the handler started") { setup.file("started") != nil }
        agent.kill(SIGTERM)
        let output = try await agent.wait(seconds: 30)
        #expect(output.status == 0, "\(output)")
        #expect(setup.file("terminated") != nil, "the handler was not sent SIGTERM")
        let failed = try await setup.events("step_failed")
        #expect(failed.count == 1 && failed[0].contains(#""retryable":true"#) && failed[0].contains("agent agent-1 was stopped before its handler finished"),
                "\(failed)")
        _ = try await setup.server.stop()
    }

    @Test func aLostLeaseKillsTheHandlerAndNothingIsReported() async throws {
        let setup = try await setUp(plan: Self.oneStep, handlers: ["work": "exec > /dev/null 2>&1\ntrap 'touch \"$out/terminated\"; exit 143' TERM\ntouch \"$out/started\"\nsleep 30 & wait\n"])
        let agent = try setup.agent(steps: 1)
        try await eventually("the handler started") { setup.file("started") != nil }
        // Frozen past its 1 s TTL: the server expires the lease; thawed, its heartbeat is refused.
        agent.kill(SIGSTOP)
        try await eventually("the lease expired", seconds: 30) { try await setup.events("step_failed").count == 1 }
        agent.kill(SIGCONT)
        let output = try await agent.wait(seconds: 30)
        #expect(output.status == 0 && output.stdout.contains("m1/work: lease lost"), "\(output)")
        #expect(setup.file("terminated") != nil, "the handler of a lost lease was not stopped")
        let failed = try await setup.events("step_failed")
        #expect(failed.count == 1 && failed[0].contains(#""lease_expired":true"#), "only the expiry is recorded: \(failed)")
        #expect(try await setup.events("step_completed").isEmpty)
        _ = try await setup.server.stop()
    }

    /// The example handlers docs/agent.md shows (examples/handlers) really run under the agent.
    @Test func theExampleHandlersRunUnderTheAgent() async throws {
        let setup = try await setUp(plan: """
            name: agent-test
            services:
              svc: { owners: [team] }
            nodes:
              - { id: schema, service: svc, phase: expand, action: apply-schema, params: { migration: 2026_11_ledger_entries } }
              - { id: copy, service: svc, phase: backfill, action: backfill, params: { batch_size: 5000 }, needs: [schema] }
              - { id: flip, service: svc, phase: live, action: switch-reads, params: { flag: payments_read_ledger }, needs: [copy] }
            """, handlers: [:])
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/handlers").path
        let agent = try ChildProcess(try lockstepBinary(), ["agent", "--service", "svc", "--handlers", examples, "--id", "agent-1", "--steps", "3"],
                                     environment: ["LOCKSTEP_SERVER": setup.server.grpc])
        let output = try await agent.wait(seconds: 60)
        #expect(output.status == 0, "\(output)")
        #expect(try await setup.events("step_completed").count == 3, "\(output)")
        #expect(output.stdout.contains("m1/schema: applying schema migration 2026_11_ledger_entries (attempt 1, fencing token 1)"), "\(output.stdout)")
        #expect(output.stdout.contains("m1/flip: setting payments_read_ledger on for m1"), "\(output.stdout)")
        _ = try await setup.server.stop()
    }

    @Test func rollbackStepsRunTheRollbackActionWithTheirKind() async throws {
        let setup = try await setUp(plan: """
            name: agent-test
            services:
              svc: { owners: [team] }
            nodes:
              - { id: work, service: svc, phase: expand, action: add, params: { column: c }, rollback: { action: remove, params: { column: c } } }
              - { id: gate, service: svc, phase: live, action: add, needs: [work], approvals: { minimum: 1 } }
            """, handlers: [
                "add": "cat > /dev/null\n",
                "remove": "cat > \"$out/rollback-stdin\"\necho \"$LOCKSTEP_STEP_KIND $LOCKSTEP_ACTION\" > \"$out/rollback-kind\"\n",
            ])
        let forward = try await setup.agent(steps: 1).wait(seconds: 60)
        #expect(forward.status == 0 && forward.stdout.contains("m1/work: completed"), "\(forward)")
        #expect(try await setup.server.post("/v1/migrations/abort", #"{"migration_id": "m1", "reason": "changed our minds"}"#).hasSuffix("\n200"))
        let backward = try await setup.agent(steps: 1).wait(seconds: 60)
        #expect(backward.status == 0 && backward.stdout.contains("m1/work rollback attempt 1, token 2: remove"), "\(backward)")
        #expect(setup.file("rollback-kind") == "rollback remove\n")
        #expect(setup.file("rollback-stdin") == #"{"column":"c"}"#)
        #expect(try await setup.events("migration_rolled_back").count == 1)
        _ = try await setup.server.stop()
    }

    /// The agent's own limits: a progress message is cut at `progressMessageBytesMax` (512 bytes), and a
    /// stdout line over `HandlerProcess.lineBytesMax` (64 KiB) stops the handler, whose step then fails.
    @Test func overlongProgressIsCutAndAnOverlongLineStopsTheHandler() async throws {
        let setup = try await setUp(plan: """
            name: agent-test
            services:
              svc: { owners: [team] }
            nodes:
              - { id: chatty, service: svc, phase: custom, action: chatty }
              - { id: flood, service: svc, phase: custom, action: flood, needs: [chatty] }
            """, handlers: [
                "chatty": "cat > /dev/null\nprintf 'progress: 50 %0700d\\n' 0\nsleep 1.5\n",
                "flood": "cat > /dev/null\nhead -c 70000 /dev/zero | tr '\\0' x\necho\nsleep 30\n",
            ])
        let began = Date()
        let output = try await setup.agent(steps: 2).wait(seconds: 60)
        #expect(output.status == 0, "\(output)")
        #expect(Date().timeIntervalSince(began) < 20, "the flooding handler was not stopped")
        let progress = try #require(try await setup.events("step_progress").first)
        #expect(progress.contains(#""message":""#) && progress.contains(String(repeating: "0", count: 512))
            && !progress.contains(String(repeating: "0", count: 513)), "\(progress.prefix(200))")
        let failed = try await setup.events("step_failed")
        #expect(failed.count == 1 && failed[0].contains(#""node_id":"flood""#) && failed[0].contains("flood was killed by signal 15"), "\(failed)")
        _ = try await setup.server.stop()
    }
}

/// `timeouts.start_to_close` against a real server and agent (issue 15: a handler that heartbeats
/// forever never timed out): each attempt past 3 s fails with `start_to_close_exceeded`, the agent
/// stops its handler (its lease is gone), the retry policy gives one more attempt, then the migration
/// rolls back.
@Suite(.serialized) struct StartToCloseEndToEndTests {
    @Test func aHandlerThatNeverEndsIsTimedOutRetriedAndRolledBack() async throws {
        // (A 2 s TTL leaves a loaded machine room: a late heartbeat would make a lost agent, not counted.)
        let plan = ReferenceAgentTests.oneStepPlan(action: "hang", timeouts: "{ start_to_close: 3s, heartbeat: 2s }", attempts: 2)
        let setup = try await ReferenceAgentTests().setUp(plan: plan, handlers: ["hang": "exec > /dev/null 2>&1\ntrap 'echo x >> \"$out/terminated\"; exit 143' TERM\necho x >> \"$out/started\"\nsleep 60 & wait\n"])
        let agent = try setup.agent(extra: ["--poll-wait-ms", "1000"])
        defer { agent.kill(SIGKILL) }
        try await eventually("the migration rolled back", seconds: 60) { try await !setup.events("migration_rolled_back").isEmpty }
        let failed = try await setup.events("step_failed")
        let timedOut = failed.filter { $0.contains(#""start_to_close_exceeded":true"#) }
        #expect(timedOut.count == 2, "\(failed)")
        #expect(timedOut.allSatisfy { $0.contains("start_to_close_exceeded: the step ran past its start_to_close of 3s") }, "\(failed)")
        #expect(failed.allSatisfy { $0.contains(#""start_to_close_exceeded":true"#) || $0.contains(#""agent_lost":true"#) }, "\(failed)")
        #expect(try await setup.events("step_completed").isEmpty)
        let started = { setup.file("started")?.split(separator: "\n").count ?? 0 }
        try await eventually("the agent stopped every handler it started", seconds: 20) {
            started() >= 2 && setup.file("terminated")?.split(separator: "\n").count == started()
        }
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
        _ = try await setup.server.stop()
    }
}

/// Issue 15: under the default policy of one attempt, a killed agent process rolled the whole migration
/// back. Now a lost agent's attempt is not counted: the next agent runs the step and it succeeds.
@Suite(.serialized) struct LostAgentEndToEndTests {
    @Test func aKilledAgentUnderTheDefaultPolicyDoesNotRollTheMigrationBack() async throws {
        let plan = ReferenceAgentTests.oneStepPlan(attempts: 1)
        let setup = try await ReferenceAgentTests().setUp(plan: plan, handlers: [
            "work": "echo $$ >> \"$out/started-$LOCKSTEP_FENCING_TOKEN\"\nif [ \"$LOCKSTEP_FENCING_TOKEN\" = 1 ]; then exec sleep 60; fi\n",
        ])
        let doomed = try setup.agent()
        try await eventually("the first agent's handler started") { setup.file("started-1") != nil }
        doomed.kill(SIGKILL)
        _ = try await doomed.wait(seconds: 10)
        if let orphan = setup.file("started-1").flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) { kill(orphan, SIGKILL) }
        let rescuer = try setup.agent(steps: 1)
        let rescued = try await rescuer.wait(seconds: 60)
        #expect(rescued.status == 0, "\(rescued)")
        try await eventually("the migration succeeded", seconds: 30) { try await !setup.events("migration_succeeded").isEmpty }
        let failed = try await setup.events("step_failed")
        #expect(failed.count == 1 && failed[0].contains(#""lease_expired":true"#) && failed[0].contains(#""agent_lost":true"#), "\(failed)")
        #expect(try await setup.events("migration_aborted").isEmpty)
        let leased = try await setup.events("step_leased")
        #expect(leased.count == 2 && leased.allSatisfy { $0.contains(#""attempt":1"#) }, "the attempt is repeated, not counted: \(leased)")
        _ = try await setup.server.stop()
    }
}

/// The server's timer enforces `timeouts.schedule_to_start` (issue 15): with no agent running, the
/// migration pauses and says why; once an agent runs and an operator resumes, the step is taken.
@Suite(.serialized) struct ScheduleToStartEndToEndTests {
    @Test func withNoAgentTheMigrationPausesAndSaysWhy() async throws {
        let plan = ReferenceAgentTests.oneStepPlan(timeouts: "{ schedule_to_start: 4s, heartbeat: 2s }")
        let setup = try await ReferenceAgentTests().setUp(plan: plan, handlers: ["work": "exit 0\n"])
        try await eventually("the migration paused", seconds: 30) { try await !setup.events("migration_paused").isEmpty }
        let paused = try await setup.events("migration_paused")
        #expect(paused.count == 1 && paused[0].contains("schedule_to_start_exceeded: node work was ready for 4s"), "\(paused)")
        #expect(paused[0].contains(#""kind":"coordinator""#), "recorded as the coordinator: \(paused)")
        let agent = try setup.agent(steps: 1)
        #expect(try await setup.server.post("/v1/migrations/resume", #"{"migration_id": "m1"}"#).hasSuffix("\n200"))
        let ran = try await agent.wait(seconds: 60)
        #expect(ran.status == 0, "\(ran)")
        try await eventually("the migration succeeded", seconds: 30) { try await !setup.events("migration_succeeded").isEmpty }
        _ = try await setup.server.stop()
    }
}

/// The agent's pause after an empty poll answered at once: the server's `retry_after_ms`, which is
/// outside input, held to 100 ms … 30 s (0 polled in a tight loop; 2^32 - 1 slept 49 days).
@Suite struct AgentRetryPauseTests {
    @Test(arguments: [(UInt32(0), 100), (1, 100), (100, 100), (750, 750), (30_000, 30_000), (30_001, 30_000), (.max, 30_000)])
    func theServersRetryAfterIsHeldToItsBounds(_ suggested: UInt32, _ millis: Int) {
        #expect(ReferenceAgent.retryPause(afterMillis: suggested) == .milliseconds(millis))
    }
}

/// A step's lease as the agent is told it (outside input: a broken server's): a TTL shorter than any
/// server gives is refused before the handler runs, and a heartbeat interval at or past the TTL is
/// not followed (heartbeats come at least three times per TTL).
@Suite struct AgentLeaseBoundsTests {
    @Test(arguments: [(UInt32(100), UInt32(33), 33), (100, 0, 33), (3_000, 1_000, 1_000), (3_000, 3_000, 1_000), (3_000, .max, 1_000),
                      (30_000, 0, 50), (30_000, 20, 50), (.max, .max, Int(UInt32.max / 3))])
    func heartbeatsComeAtLeastThreeTimesPerTTL(_ ttl: UInt32, _ interval: UInt32, _ millis: Int) {
        #expect(ReferenceAgent.heartbeatPace(ttlMillis: ttl, intervalMillis: interval) == .milliseconds(millis))
    }

    @Test func aStepWhoseLeaseCannotBeKeptIsNotRun() async throws {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        try "#!/bin/sh\ntouch \"$(dirname \"$0\")/../ran\"\n".write(toFile: directory + "/handlers/work", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/work")
        let server = try await ServerProcess()
        let agent = ReferenceAgent(service: "svc", agentID: "agent-1", handlers: directory + "/handlers", pollWaitMillis: 1_000, shutdownGrace: .seconds(1), stepsMax: 1)
        for ttl: UInt32 in [0, 99] {
            let step = Lockstep_V1_Step.with {
                $0.migrationID = "m1"
                $0.nodeID = "n1"
                $0.action = "work"
                $0.leaseID = "no-such-lease"
                $0.fencingToken = 1
                $0.ttlMs = ttl
                $0.heartbeatIntervalMs = ttl / 3
            }
            // Its failure report is refused (the server never leased it); what matters is that nothing ran.
            try await LockstepClient.connect(to: server.grpc) { await agent.runStep(step, $0) }
            #expect(!FileManager.default.fileExists(atPath: directory + "/ran"), "a step with a lease of \(ttl) ms was run")
        }
        _ = try await server.stop()
    }
}

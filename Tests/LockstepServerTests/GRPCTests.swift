import Foundation
import LockstepServer
import LockstepTestSupport
import LockstepGRPC
import Testing
import LockstepService

/// Whether python3 can import grpcio and grpcio-tools.
let pythonHasGRPC: Bool = {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import grpc, grpc_tools"]
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}()

/// Other languages work from `Protos/` alone: Python stubs generated with grpcio-tools drive a full
/// operator and agent cycle over gRPC against a real `lockstep serve`, authenticated by metadata.
@Suite(.serialized, .enabled(if: pythonHasGRPC, "needs grpcio and grpcio-tools from PyPI (ops/test installs them)"))
struct GRPCTests {
    static let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let protos = testsDirectory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Protos").path

    static let operatorToken = "operator-token-cccccccccccccccc"
    static let agentToken = "agent-token-dddddddddddddddddddd"

    /// A server with an operator (olga) and an agent of orders, and `script` (in `Agents/`, on
    /// `grpc_session.py`) run against it to its end.
    static func runPythonClient(_ script: String) async throws -> (ServerProcess, ProcessOutput) {
        let directory = temporaryDirectory()
        try """
            {"principals": [
              {"name": "olga", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(operatorToken))"},
              {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(agentToken))"}
            ]}
            """.write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        try AgentAPITests.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--config", directory + "/auth.json"])
        let client = try await ChildProcess("/usr/bin/env", [
            "python3", testsDirectory.appendingPathComponent("Agents/" + script).path, protos, server.grpc, operatorToken, agentToken, directory + "/plan.yaml",
            server.data + "/data/events.sqlite",
        ]).wait(seconds: 120)
        return (server, client)
    }

    @Test func aPythonClientGeneratedFromTheProtosRunsAFullCycle() async throws {
        let (server, client) = try await Self.runPythonClient("grpc-client.py")
        #expect(client.status == 0, "\(client.stdout)\n\(client.stderr)")
        // The watch's 3 s deadline is the client's and the server's (grpc-timeout): whichever fires first
        // ends the stream. The client's own reads DEADLINE_EXCEEDED; under the whole suite the call was
        // seen ending CANCELLED twice (not understood yet: docs/http2-engine.md). The events before the
        // end are checked either way.
        let lines = client.stdout.split(separator: "\n").map { line in
            line.hasPrefix("watch CANCELLED after ") ? "watch DEADLINE_EXCEEDED after " + line.dropFirst("watch CANCELLED after ".count) : String(line)
        }
        #expect(lines == [
            "applied two-services@1 changed=True",
            "nothing has_step=False retry_after_ms 1000",
            "operator PERMISSION_DENIED permission_denied",
            "started py-1",
            "unauthenticated UNAUTHENTICATED unauthenticated",
            #"leased py-1/expand token 1 action add-column params {"table":"orders"}"#,
            "heartbeat ttl 30000",
            "completed",
            "refused FAILED_PRECONDITION stale_fencing_token stale_fencing_token: lease expand is at token 1, report carried 2",
            "watch DEADLINE_EXCEEDED after 9 events: migration_started service_leases_requested service_leases_granted step_leased "
                + "step_progress step_completed service_leases_released service_leases_requested service_leases_granted",
            "oversized RESOURCE_EXHAUSTED body_too_large",  // refused by the engine before any handler, with a stable code
        ], "\(client.stdout)\n\(client.stderr)")
        _ = try await server.stop()
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"]).stdout
        #expect(export.contains(#""step_progress""#) && export.contains(#""message":"half way""#))
        #expect(export.contains(#""actor":{"kind":"user","id":"olga"}"#) && export.contains(#""actor":{"kind":"agent","id":"orders-agent"}"#))
    }

    /// An agent's reports are taken on the event loop when they are small (`GRPCOnLoop.report`) and by
    /// GRPCCore's server when they are over 4 KiB (here: padded with an unknown field): each report, sent both ways,
    /// gets the same answer (status, message, `lockstep-error-code`); then the step completes on the loop
    /// and its completion sent again through the server is refused.
    /// (Which way answered is not visible from outside; the profile shows it: docs/benchmarks-api-history.md,
    /// session 26. `TLSTests` checks a report under mutual TLS both ways.)
    @Test func anAgentsReportsAnswerAlikeOnTheLoopAndThroughTheServer() async throws {
        let (server, client) = try await Self.runPythonClient("grpc_reports.py")
        #expect(client.status == 0, "\(client.stdout)\n\(client.stderr)")
        #expect(client.stdout.split(separator: "\n") == [
            "same heartbeat: OK ",
            "same heartbeat stale token: FAILED_PRECONDITION stale_fencing_token",
            "same heartbeat unknown lease: PERMISSION_DENIED permission_denied",  // no node of that name: not the agent's service
            "same heartbeat bad lease id: INVALID_ARGUMENT invalid_argument",
            "same heartbeat no token: UNAUTHENTICATED unauthenticated",
            "same heartbeat as operator: PERMISSION_DENIED permission_denied",
            "same progress: OK ",
            "same progress stale token: FAILED_PRECONDITION stale_fencing_token",
            "same progress over 100: INVALID_ARGUMENT invalid_argument",
            "same fail stale token: FAILED_PRECONDITION stale_fencing_token",
            "same complete stale token: FAILED_PRECONDITION stale_fencing_token",
            "completed OK, again FAILED_PRECONDITION no_active_lease",
        ], "\(client.stdout)\n\(client.stderr)")
        // Every heartbeat timed, either way: 12.
        let metrics = try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "Authorization: Bearer \(Self.operatorToken)", server.url + "/metrics"]).wait(seconds: 30).stdout
        #expect(metrics.contains(#"lockstep_request_duration_seconds_count{method="agent/heartbeat",transport="grpc"} 12"#), "\(metrics)")
        _ = try await server.stop()
    }

    /// A report whose `grpc-timeout` passes while the log is busy (here: SQLite's write lock held by the
    /// client): the event loop's deadline timer answers DEADLINE_EXCEEDED with the code and a message
    /// saying the report may still be recorded, and it is, once the log takes it.
    @Test func aReportWhoseDeadlinePassesIsAnsweredAndStillRecorded() async throws {
        let (server, client) = try await Self.runPythonClient("grpc_report_deadline.py")
        #expect(client.status == 0, "\(client.stdout)\n\(client.stderr)")
        #expect(client.stdout.split(separator: "\n") == [
            "answered grpc-status=4 code=deadline_exceeded may-still-be-recorded=True while-the-log-was-busy=True",
            "recorded after its deadline",
        ], "\(client.stdout)\n\(client.stderr)")
        _ = try await server.stop()
    }

    /// `grpc-timeout` as the on-loop poll reads it (PROTOCOL-HTTP2: 1 to 8 digits and a unit); anything
    /// else is not well formed, and the call is left to GRPCCore.
    @Test func grpcTimeoutsAreReadAsTheProtocolWritesThem() {
        let cases: [(String, Int64?)] = [
            ("1S", 1_000), ("100m", 100), ("5H", 18_000_000), ("2M", 120_000), ("2500u", 2), ("7000000n", 7), ("99999999H", 359_999_996_400_000),
            ("", nil), ("S", nil), ("5", nil), ("5s", nil), ("+5S", nil), ("-5S", nil), ("123456789S", nil), ("1.5S", nil), ("٣S", nil),
        ]
        for (text, millis) in cases { #expect(GRPCAgentService.timeoutMillis(text) == millis, "\(text)") }
    }

    /// A gRPC poll is served on the event loop and parks as an entry in the wakeup table (`GRPCOnLoop`):
    /// answered at the end of its wait, refused DEADLINE_EXCEEDED when its deadline comes first, gone from
    /// the table the moment its client cancels it, and woken with its step by the start that readies it.
    @Test func aParkedGRPCPollWaitsLeavesWhenCancelledAndIsWokenWithItsStep() async throws {
        let server = try await ServerProcess()
        let probe = try await ChildProcess("/usr/bin/env", [
            "python3", Self.testsDirectory.appendingPathComponent("Agents/grpc_poll_park.py").path, Self.protos, server.grpc, server.url,
        ]).wait(seconds: 120)
        // The deadline's ending is either of two (grpc_poll_park.py says why); both end it in time.
        let lines = probe.stdout.split(separator: "\n").map { $0 == "deadline answered step=False in time True" ? "deadline DEADLINE_EXCEEDED in time True" : String($0) }
        #expect(lines == [
            "waited True step=False retry_after_ms 1000",
            "large step=False retry_after_ms 1000",
            "deadline DEADLINE_EXCEEDED in time True",
            "parked True",
            "left True",
            "woken m1/one go",
        ], "\(probe.stdout)\n\(probe.stderr)")
        _ = try await server.stop()
    }

    /// `APILimits.grpcConcurrentStreamsMax`: the gRPC listener announces it in its HTTP/2 SETTINGS
    /// (SETTINGS_MAX_CONCURRENT_STREAMS), which bounds the streams a client may open on one connection.
    @Test func theGRPCListenerAnnouncesItsConcurrentStreamLimit() async throws {
        let server = try await ServerProcess()
        let colon = try #require(server.grpc.lastIndex(of: ":"))
        let script = """
            import socket, struct, sys
            s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
            s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + struct.pack(">I", 0)[1:] + bytes([4, 0]) + struct.pack(">I", 0))
            data = b""
            while True:
                while len(data) < 9:
                    data += s.recv(4096)
                length, kind, flags = int.from_bytes(data[:3], "big"), data[3], data[4]
                while len(data) < 9 + length:
                    data += s.recv(4096)
                payload, data = data[9:9 + length], data[9 + length:]
                if kind == 4 and not flags & 1:
                    settings = {struct.unpack(">H", payload[i:i + 2])[0]: struct.unpack(">I", payload[i + 2:i + 6])[0] for i in range(0, len(payload), 6)}
                    print(settings.get(3, "none"))
                    break
            """
        let probe = try await ChildProcess("/usr/bin/env", ["python3", "-c", script, String(server.grpc[..<colon]), String(server.grpc[server.grpc.index(after: colon)...])])
            .wait(seconds: 30)
        #expect(probe.stdout == "\(APILimits().grpcConcurrentStreamsMax)\n", "\(probe)")
        _ = try await server.stop()
    }
}

import Foundation
import LockstepClient
import LockstepHTTP
import LockstepTestSupport
import Testing

/// The JSON port's HTTP/2 on the engine (libnghttp2, `JSONOnEngine`), against a whole server: the refusals
/// the engine makes itself answer with the API's `ErrorBody` like the routes do, and a parked poll leaves
/// its place when its stream is reset while the connection stays open (no stream channel tells it:
/// the engine's stream-closed report does).
@Suite(.serialized, .timeLimit(.minutes(3))) struct JSONOnEngineTests {
    func curl(_ arguments: [String]) async throws -> String {
        let run = try await ChildProcess("/usr/bin/curl", ["-sS", "-w", "\n%{http_version} %{http_code}"] + arguments).wait(seconds: 30)
        // A transfer that got no answer (000) carries curl's own word for why, for the failure's message.
        return run.stdout.hasSuffix(" 000") ? run.stdout + "\ncurl exited \(run.status): " + run.stderr : run.stdout
    }

    struct Seen: Decodable { let status: String?; let body: String; let ended: Bool; let reset_code: Int?; let sent: Int }
    static let agents = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents").path

    @Test(.enabled(if: pythonHas("h2"), "needs python3 with h2 (ops/test installs it)"))
    func bodiesAndHeadersOverTheLimitsAreRefusedWithTheAPIsErrorBodyOverHTTP2() async throws {
        let body = temporaryDirectory() + "/body"
        try await InProcessServerTests.withServer({ $0.limits.requestBodyBytesMax = 1_000 }) { _, http in
            let poll = http + "/v1/agent/poll"
            // One byte over the limit reaches the route, on either version.
            try Data(repeating: UInt8(ascii: " "), count: 1_001).write(to: URL(fileURLWithPath: body))
            for flag in ["--http2-prior-knowledge", "--http1.1"] {
                let answer = try await curl([flag, "-X", "POST", "-H", "content-type: application/json", "--data-binary", "@" + body, poll])
                #expect(answer.contains(#""code":"body_too_large""#) && answer.hasSuffix(" 413"), "\(flag): \(answer)")
            }
            // Far over it, the engine refuses the body as it arrives, with the same ErrorBody, and then
            // resets the stream (NO_ERROR) so the client stops sending what nobody reads.
            let run = try await ChildProcess("/usr/bin/env", ["python3", Self.agents + "/h2_post_large.py", String(http.dropFirst("http://".count)),
                                                              "/v1/agent/poll", "3000000"]).wait(seconds: 60)
            let seen = try JSONDecoder().decode(Seen.self, from: Data(run.stdout.utf8))
            #expect(seen.status == "413" && seen.body.contains(#""code":"body_too_large""#) && seen.ended, "\(run.stdout)")
            #expect(seen.reset_code == 0 && seen.sent < 3_000_000, "\(run.stdout)")
            // A header list over the engine's limit: 431, the same shape of answer; and HTTP/1.1 holds a list
            // to the same limits, bytes and fields, with the same answer (it had only swift-nio's 80 KiB,
            // answered 400).
            let big = "x-big: " + String(repeating: "x", count: 20_000)
            let fields = (1...100).flatMap { ["-H", "x-field-\($0): v"] }
            for (flag, version) in [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")] {
                for headers in [["-H", big], fields] {
                    // (No body: the answer comes before the route, and a body still being sent when the
                    // stream ends races curl's own framing on a loaded machine.)
                    let refused = try await curl([flag] + headers + ["-X", "POST", poll])
                    #expect(refused.contains(#""code":"resource_exhausted""#) && refused.hasSuffix("\n\(version) 431"), "\(flag): \(refused)")
                }
            }
            // And the route answers as before on the same port.
            let fine = try await curl(["--http2-prior-knowledge", "-X", "POST", "-H", "content-type: application/json",
                                       "--data-binary", #"{"service": "orders", "agent_id": "a"}"#, poll])
            #expect(fine.contains(#""retry_after_ms""#) && fine.hasSuffix("\n2 200"), "\(fine)")
        }
    }

    /// Every answer carries `date` on both versions (Hummingbird sets it on HTTP/1.1; the engine's JSON
    /// side sets it itself): the poll served on the event loop, a routed call and an error.
    @Test func everyAnswerCarriesADateOnBothVersions() async throws {
        try await InProcessServerTests.withServer { _, http in
            let calls: [(path: String, body: String)] = [
                ("/v1/agent/poll", #"{"service": "orders", "agent_id": "a"}"#), ("/v1/plans/list", "{}"), ("/v1/agent/poll", "{not json"),
            ]
            for (path, body) in calls {
                for flag in ["--http2-prior-knowledge", "--http1.1"] {
                    let answer = try await curl([flag, "-D", "-", "-o", "/dev/null", "-X", "POST", "-H", "content-type: application/json",
                                                 "--data-binary", body, http + path])
                    let date = answer.split(separator: "\r\n").first { $0.lowercased().hasPrefix("date: ") }.map { String($0.dropFirst(6)) }
                    // IMF-fixdate: "Fri, 04 Dec 2026 12:00:00 GMT".
                    #expect(date?.wholeMatch(of: /[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/) != nil, "\(flag) \(path): \(answer)")
                }
            }
        }
        // And the answers the engine gives itself (here 431, a header list over its limit; a GET, so no
        // body is still arriving and no reset follows the answer).
        try await InProcessServerTests.withServer { _, http in
            let answer = try await curl(["--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-H", "x-big: " + String(repeating: "x", count: 20_000),
                                         http + "/v1/agent/poll"])
            #expect(answer.contains(" 431") && answer.lowercased().contains("\r\ndate: "), "\(answer)")
        }
        #expect(HTTPDate.format(secondsSinceEpoch: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(secondsSinceEpoch: 951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(HTTPDate.format(secondsSinceEpoch: 1_796_385_600) == "Fri, 04 Dec 2026 12:00:00 GMT")
    }

    /// A body trickled byte by byte does not hold an HTTP/2 stream: the engine refuses it once
    /// `--request-body-timeout-ms` has passed since its head (408 `request_timeout`, as HTTP/1.1 does)
    /// and resets the stream, on the JSON port and, as DEADLINE_EXCEEDED, on the gRPC port.
    @Test(.enabled(if: pythonHas("h2"), "needs python3 with h2 (ops/test installs it)"))
    func aTrickledBodyIsRefusedWhenTheBodyTimeRunsOut() async throws {
        try await InProcessServerTests.withServer({ $0.limits.requestBodyMillisMax = 1_500 }) { grpc, http in
            let clock = ContinuousClock()
            let began = clock.now
            let run = try await ChildProcess("/usr/bin/env", ["python3", Self.agents + "/h2_post_large.py", String(http.dropFirst("http://".count)),
                                                              "/v1/plans/list", "100", "--trickle"]).wait(seconds: 60)
            let seen = try JSONDecoder().decode(Seen.self, from: Data(run.stdout.utf8))
            #expect(seen.status == "408" && seen.body.contains(#""code":"request_timeout""#) && seen.reset_code == 0, "\(run.stdout)")
            #expect(clock.now - began < .seconds(15) && seen.sent < 100, "\(run.stdout)")
            // gRPC: a message trickled the same way ends in DEADLINE_EXCEEDED with the stable code.
            let rpc = try await ChildProcess("/usr/bin/env", ["python3", Self.agents + "/h2_post_large.py", grpc,
                                                              "/lockstep.v1.MigrationService/ListPlans", "100", "--trickle"]).wait(seconds: 60)
            #expect(rpc.stdout.contains(#""status": "200", "grpc_status": "4""#) && rpc.stdout.contains(#""reset_code": 0"#), "\(rpc.stdout)")
        }
    }

    @Test(.enabled(if: pythonHas("h2"), "needs python3 with h2 (ops/test installs it)"))
    func aParkedPollWhoseStreamIsResetLeavesAtOnceWhileItsConnectionStaysOpen() async throws {
        let script = Self.agents + "/h2_poll_reset.py"
        try await InProcessServerTests.withServer { _, http in
            let clock = ContinuousClock()
            let client = try ChildProcess("/usr/bin/env", ["python3", script, String(http.dropFirst("http://".count)), "10"])
            let parkedBy = clock.now + .seconds(30)
            while try await InProcessServerTests.metric(http, "lockstep_parked_polls") < 1 {
                guard clock.now < parkedBy else { Issue.record("the poll never parked"); return }
                try await Task.sleep(for: .milliseconds(20))
            }
            // The client resets the stream 10 s after it sent the poll (time enough for a loaded machine to show it parked), and keeps its connection 13 s more.
            let leftBy = clock.now + .seconds(20)
            while try await InProcessServerTests.metric(http, "lockstep_parked_polls") > 0 {
                guard clock.now < leftBy else { Issue.record("the reset poll stayed parked"); return }
                try await Task.sleep(for: .milliseconds(50))
            }
            let seen = try await client.wait(seconds: 60).stdout
            #expect(seen.contains(#""poll_answered": false"#) && seen.contains(#""healthz": "200""#) && seen.contains(#""goaway": false"#),
                    "the connection served on after the reset: \(seen)")
        }
    }

    /// Parks a curl poll of service orders (`version`: curl's option for the HTTP version), then applies
    /// the plan and starts m1, whose grant readies the poll's step. The poll's answer with curl's
    /// "VERSION CODE" line, the commits from the start to that answer, and when the start was sent;
    /// nil when the poll never parked.
    static func pollAcrossAStart(_ version: String, agent: String, grpc: String, http: String) async throws
        -> (answer: String, commits: Double, started: ContinuousClock.Instant)? {
        let parked = try ChildProcess("/usr/bin/curl", ["-sS", version, "-X", "POST", "-H", "content-type: application/json",
                                                       "--data-binary", #"{"service": "orders", "agent_id": "\#(agent)", "wait_ms": 60000}"#,
                                                       "-w", "\n%{http_version} %{http_code}", http + "/v1/agent/poll"])
        let parkedBy = ContinuousClock.now + .seconds(30)
        while try await InProcessServerTests.metric(http, "lockstep_parked_polls") < 1 {
            guard ContinuousClock.now < parkedBy else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        var commits = 0.0
        var started = ContinuousClock.now
        try await LockstepClient.connect(to: grpc) { lockstep in
            _ = try await lockstep.applyPlan(.with { $0.planYaml = InProcessServerTests.plan })
            commits = try await InProcessServerTests.metric(http, "lockstep_commits_total")
            started = ContinuousClock.now
            _ = try await lockstep.startMigration(.with { $0.plan = "in-process"; $0.migrationID = "m1" })
        }
        let answer = try await parked.wait(seconds: 30).stdout
        return (answer, try await InProcessServerTests.metric(http, "lockstep_commits_total") - commits, started)
    }

    /// An HTTP/1.1 poll (a task waiting, not an entry on the engine) is leased the step in the grant's
    /// commit too: no commit of its own.
    @Test func aParkedHTTP11PollIsLeasedTheStepInTheGrantsCommit() async throws {
        try await InProcessServerTests.withServer { grpc, http in
            guard let (answer, commits, _) = try await Self.pollAcrossAStart("--http1.1", agent: "h1-1", grpc: grpc, http: http) else {
                Issue.record("the poll never parked"); return
            }
            #expect(answer.contains(#""lease_id":"m1/expand""#) && answer.hasSuffix("\n1.1 200"), "\(answer)")
            #expect(commits == 2)
            #expect(try await InProcessServerTests.metric(http, "lockstep_poll_wakeup_seconds_count") == 1)
        }
    }

    /// A JSON poll over HTTP/2 parks as an entry in the wakeup table (`EnginePoll`, no task) and is
    /// leased the step in the commit of the grant that readies it; one whose wait runs out is answered
    /// with `retry_after_ms`; both leave the table.
    @Test func aParkedHTTP2PollIsLeasedTheStepInTheGrantsCommit() async throws {
        try await InProcessServerTests.withServer { grpc, http in
            let clock = ContinuousClock()
            guard let (answer, commits, started) = try await Self.pollAcrossAStart("--http2-prior-knowledge", agent: "h2-1", grpc: grpc, http: http) else {
                Issue.record("the poll never parked"); return
            }
            #expect(answer.contains(#""lease_id":"m1/expand""#) && answer.hasSuffix("\n2 200"), "\(answer)")
            // The start's commit, then the grant's with the parked poll's lease in it: no commit for the lease alone.
            #expect(commits == 2)
            #expect(try await InProcessServerTests.metric(http, "lockstep_parked_polls") == 0)
            // One wake-up, from the commit that readied the step to the answer handed to the connection:
            // after the start was sent, so shorter than the time since.
            let waited = clock.now - started + .milliseconds(1)
            #expect(try await InProcessServerTests.metric(http, "lockstep_poll_wakeup_seconds_count") == 1)
            let wake = try await InProcessServerTests.metric(http, "lockstep_poll_wakeup_seconds_sum")
            #expect(wake > 0 && wake < Double(waited.components.seconds) + Double(waited.components.attoseconds) / 1e18, "\(wake) s")
            // Nothing more for this service: the wait runs out and is answered.
            let began = clock.now
            let empty = try await curl(["--http2-prior-knowledge", "-X", "POST", "-H", "content-type: application/json",
                                        "--data-binary", #"{"service": "orders", "agent_id": "h2-2", "wait_ms": 300}"#, http + "/v1/agent/poll"])
            #expect(empty.contains(#""retry_after_ms""#) && empty.hasSuffix("\n2 200") && clock.now - began >= .milliseconds(300), "\(empty)")
            #expect(try await InProcessServerTests.metric(http, "lockstep_parked_polls") == 0)
            #expect(try await InProcessServerTests.metric(http, "lockstep_poll_wakeup_seconds_count") == 1, "a poll answered without a step is no wake-up")
        }
    }
}

import Foundation
import LockstepTestSupport
import Testing

/// The JSON API through a real `lockstep serve --dev` and curl: bad input gets its own error and
/// appends nothing; a parked poll is woken by the event that makes its step ready.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct AgentAPITests {
    static let plan = """
        name: two-services
        services:
          orders: { owners: [orders-team] }
          checkout: { owners: [checkout-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
            params: { table: orders }
          - id: switch
            service: checkout
            phase: live
            action: flip-flag
            needs: [expand]
        """

    func started() async throws -> ServerProcess {
        let server = try await ServerProcess()
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "two-services", "migration_id": "m1"}"#).hasSuffix("\n200"))
        return server
    }

    /// A named poll (`poll_id`) over JSON: sent again, it gets the step its first send leased (the same
    /// token, nothing appended); another name, or another agent under the same name, gets nothing; a bad
    /// name is refused.
    @Test func aNamedPollSentAgainGetsTheSameStep() async throws {
        let server = try await started()
        let first = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1", "wait_ms": 0, "poll_id": "p-1"}"#)
        #expect(first.hasSuffix("\n200") && first.contains(#""fencing_token":"1""#), "\(first)")
        let head = try await server.post("/v1/history/verify", "{}")
        let again = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1", "wait_ms": 0, "poll_id": "p-1"}"#)
        #expect(again == first, "the same answer: \(again)")
        #expect(try await server.post("/v1/history/verify", "{}") == head, "nothing appended")
        for other in [#"{"service": "orders", "agent_id": "o1", "wait_ms": 0, "poll_id": "p-2"}"#, #"{"service": "orders", "agent_id": "o2", "wait_ms": 0, "poll_id": "p-1"}"#] {
            let answer = try await server.post("/v1/agent/poll", other)
            #expect(answer.hasSuffix("\n200") && !answer.contains("fencing_token"), "\(other): \(answer)")
        }
        let bad = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1", "poll_id": "p 1"}"#)
        #expect(bad.hasSuffix("\n400") && bad.contains("invalid_argument") && bad.contains("poll_id"), "\(bad)")
        _ = try await server.stop()
    }

    @Test func badInputGetsItsOwnErrorAndAppendsNothing() async throws {
        let server = try await started()
        func expectError(_ path: String, _ body: String, _ status: Int, _ code: String, contentType: String = "application/json") async throws {
            let output = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: \(contentType)", "--data-binary", body,
                                                                  "-w", "\n%{http_code}", server.url + path]).wait(seconds: 30).stdout
            #expect(output.hasSuffix("\n\(status)"), "\(path) \(body.prefix(80)): \(output.prefix(300))")
            #expect(output.contains("\"code\":\"\(code)\""), "\(path) \(body.prefix(80)): \(output.prefix(300))")
        }
        try await expectError("/v1/agent/poll", "{not json", 400, "malformed_request")
        try await expectError("/v1/agent/poll", #"{"service": "orders", "agent_id": "a", "colour": "red"}"#, 400, "malformed_request")
        try await expectError("/v1/agent/poll", #"{"service": 7}"#, 400, "malformed_request")
        try await expectError("/v1/agent/poll", #"{"agent_id": "a"}"#, 400, "invalid_argument")
        try await expectError("/v1/agent/poll", #"{"service": "orders", "agent_id": "orders agent/1"}"#, 400, "invalid_argument")
        try await expectError("/v1/agent/poll", #"{"service": "orders", "agent_id": "a"}"#, 415, "unsupported_media_type", contentType: "text/plain")
        // No content type at all (what a web page can send without a CORS preflight), and --dev refuses browsers.
        let bare = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type:", "--data-binary", #"{"plan": "two-services"}"#,
                                                            "-w", "\n%{http_code}", server.url + "/v1/migrations"]).wait(seconds: 30).stdout
        #expect(bare.hasSuffix("\n415") && bare.contains("no content-type"), "\(bare)")
        let browser = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json", "-H", "origin: http://evil.example",
                                                               "--data-binary", #"{"plan": "two-services"}"#, "-w", "\n%{http_code}",
                                                               server.url + "/v1/migrations"]).wait(seconds: 30).stdout
        #expect(browser.hasSuffix("\n403") && browser.contains("Origin"), "\(browser)")
        // A page on a name that resolves here (DNS rebinding) sends no Origin on its GETs: its Host is refused.
        for (host, status) in [("evil.example", "403"), ("127.0.0.1.evil.example", "403"), ("localhost", "200"), ("127.0.0.1", "200"), ("[::1]", "200")] {
            let got = try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "host: \(host):8080", "-w", "\n%{http_code}", server.url + "/metrics"])
                .wait(seconds: 30).stdout
            #expect(got.hasSuffix("\n" + status) && (status == "200" || got.contains("loopback names only")), "\(host): \(got.suffix(300))")
        }
        let large = "{\"service\": \"" + String(repeating: "x", count: (1 << 20) + 1) + "\"}"
        let largeFile = temporaryDirectory() + "/large.json"
        try large.write(toFile: largeFile, atomically: true, encoding: .utf8)
        try await expectError("/v1/agent/poll", "@" + largeFile, 413, "body_too_large")
        try await expectError("/v1/agent/complete", #"{"lease_id": "no-slash", "fencing_token": "1"}"#, 400, "invalid_argument")
        try await expectError("/v1/agent/complete", #"{"lease_id": "ghost/expand", "fencing_token": "1"}"#, 404, "migration_not_found")
        try await expectError("/v1/agent/complete", #"{"lease_id": "m1/nope", "fencing_token": "1"}"#, 404, "unknown_node")
        try await expectError("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "5"}"#, 409, "stale_fencing_token")
        try await expectError("/v1/agent/heartbeat", #"{"lease_id": "m1/expand", "fencing_token": "0"}"#, 409, "no_active_lease")
        try await expectError("/v1/plans", #"{"plan_yaml": "name: [broken"}"#, 400, "invalid_plan")
        try await expectError("/v1/migrations", #"{"plan": "two-services", "migration_id": "m1"}"#, 409, "migration_already_exists")
        try await expectError("/v1/migrations", #"{"plan": "nope"}"#, 400, "invalid_argument")
        // Metrics: what the requests above did, by method (never by raw URL), and the log's commits.
        let metrics = try await ChildProcess("/usr/bin/curl", ["-sS", server.url + "/metrics"]).wait(seconds: 30).stdout
        for expected in ["lockstep_stale_token_rejections_total 1", "lockstep_appended_events_total 4", "lockstep_commit_duration_seconds_bucket",
                         #"lockstep_request_duration_seconds_count{method="agent/complete",transport="http"} 4"#,
                         "lockstep_commit_batch_events_bucket", "lockstep_parked_polls 0", "lockstep_service_leases_held 1"] {
            #expect(metrics.contains(expected), "\(expected) not in:\n\(metrics)")
        }
        #expect(!metrics.contains("ghost"))
        // The heap the process holds (glibc), beside its RSS: at least the megabyte the runtime needs.
        let heap = metrics.split(separator: "\n").first { $0.hasPrefix("lockstep_heap_in_use_bytes ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect((heap ?? 0) > 1_000_000, "lockstep_heap_in_use_bytes: \(String(describing: heap))")
        _ = try await server.stop()
        // plan_applied, migration_started, expand's request and grant: nothing else was appended.
        let verify = try await runLockstep(["history", "verify", "--data", server.data + "/data"])
        #expect(verify.stdout.contains("ok: 4 events"), "\(verify.stdout)")
    }

    @Test func oneLoopbackPortServesHTTP1AndH2CPriorKnowledge() async throws {
        let server = try await ServerProcess()
        for (path, answer) in [("/healthz", "ok\n200"), ("/readyz", "ready\n200")] {
            let output = try await ChildProcess("/usr/bin/curl", ["-sS", "-w", "%{http_code}", server.url + path]).wait(seconds: 30).stdout
            #expect(output == answer, "\(path): \(output)")
        }
        for (flag, version) in [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")] {
            let output = try await ChildProcess("/usr/bin/curl", ["-sS", flag, "-X", "POST", "-H", "content-type: application/json",
                                                                  "--data-binary", #"{"service": "orders", "agent_id": "a"}"#,
                                                                  "-w", "\n%{http_version} %{http_code}", server.url + "/v1/agent/poll"]).wait(seconds: 30).stdout
            #expect(output.hasSuffix("\n\(version) 200") && output.contains(#""retry_after_ms":1000"#), "\(flag): \(output)")
        }
        _ = try await server.stop()
    }

    @Test func aWatchStreamsEveryEventLiveAndEndsWhenTheMigrationSettles() async throws {
        let server = try await started()
        let watch = try ChildProcess("/usr/bin/curl", ["-sS", "-N", "-X", "POST", "-H", "content-type: application/json",
                                                       "--data-binary", #"{"migration_id": "m1"}"#, server.url + "/v1/migrations/watch"])
        try await watch.waitForOutput("service_leases_granted", seconds: 30)
        // A full agent cycle with curl alone: poll, heartbeat, complete.
        for (service, node) in [("orders", "expand"), ("checkout", "switch")] {
            #expect(try await server.post("/v1/agent/poll", #"{"service": "\#(service)", "agent_id": "a"}"#).contains(#""lease_id":"m1/\#(node)""#))
            #expect(try await server.post("/v1/agent/heartbeat", #"{"lease_id": "m1/\#(node)", "fencing_token": "1"}"#) == "{\"ttl_ms\":30000}\n\n200")
            #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/\#(node)", "fencing_token": "1"}"#).hasSuffix("\n200"))
        }
        // The stream ends by itself after the migration settled.
        let output = try await watch.wait(seconds: 30)
        let types = output.stdout.split(separator: "\n").compactMap { line -> String? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let record = object["record"] as? [String: Any], let payload = record["payload"] as? [String: Any] else { return nil }
            return payload.keys.first
        }
        #expect(types == ["migration_started", "service_leases_requested", "service_leases_granted", "step_leased", "step_completed",
                          "service_leases_released", "service_leases_requested", "service_leases_granted", "step_leased", "step_completed",
                          "migration_succeeded", "service_leases_released"], "\(output.stdout)")
        #expect(try await server.post("/v1/migrations/watch", #"{"migration_id": "ghost"}"#).contains(#""code":"migration_not_found""#))
        _ = try await server.stop()
    }

    /// Found in review: a parked poll whose client had gone away leased the step to nobody, and the
    /// lease's expiry then used up an attempt.
    @Test func aPollWhoseClientHasGoneAwayLeasesNothing() async throws {
        let server = try await started()
        // The client gives up once its poll (which would wait 20 s for checkout's step) is parked.
        let impatient = try parkPoll(server, service: "checkout", agent: "ghost")
        try await waitUntilParked(1, server)
        impatient.kill(SIGKILL)
        #expect(try await impatient.wait(seconds: 30).status != 0)
        try await waitUntilParked(0, server)
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#).contains(#""lease_id":"m1/expand""#))
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#).hasSuffix("\n200"))
        // The completion made switch ready and woke the abandoned poll: it must not have taken the step.
        try await Task.sleep(for: .milliseconds(300))
        let next = try await server.post("/v1/agent/poll", #"{"service": "checkout", "agent_id": "c1"}"#)
        #expect(next.contains(#""lease_id":"m1/switch""#) && next.contains(#""fencing_token":"1""#), "\(next)")
        _ = try await server.stop()
    }

    /// Found in review: a retry backoff running out appends nothing, so nothing woke a parked poll.
    @Test func aParkedPollWakesWhenARetryBackoffEnds() async throws {
        let server = try await ServerProcess()
        let plan = "name: retried\nservices:\n  orders: { owners: [o] }\nnodes:\n  - id: work\n    service: orders\n    phase: custom\n    action: w\n    retry: { max_attempts: 2, backoff: 2s }\n"
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "retried", "migration_id": "r1"}"#).hasSuffix("\n200"))
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "a"}"#).contains(#""fencing_token":"1""#))
        let failed = try await server.post("/v1/agent/fail", #"{"lease_id": "r1/work", "fencing_token": "1", "reason": "flaky", "retryable": true}"#)
        #expect(failed.contains(#""will_retry":true"#), "\(failed)")
        let began = Date()
        let retried = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "a", "wait_ms": 25000}"#)
        #expect(retried.contains(#""fencing_token":"2""#) && retried.contains(#""attempt":2"#), "\(retried)")
        #expect(Date().timeIntervalSince(began) < 15, "woken by its 25 s timeout, not by the backoff's end")
        _ = try await server.stop()
    }

    @Test func aParkedPollIsWokenByTheEventThatMakesItsStepReady() async throws {
        let server = try await started()
        // checkout's step needs expand: the poll parks (it may wait 25 s).
        let parked = try ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json",
                                                        "--data-binary", #"{"service": "checkout", "agent_id": "c1", "wait_ms": 25000}"#,
                                                        "-w", "\n%{http_code}", server.url + "/v1/agent/poll"])
        let polled = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#)
        #expect(polled.contains(#""lease_id":"m1/expand""#), "\(polled)")
        #expect(polled.contains(#""params_json":"{\"table\":\"orders\"}""#), "\(polled)")
        let began = Date()
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#).hasSuffix("\n200"))
        // Woken by the completion, not by its 25 s timeout (the bound is generous: this is not a timing test).
        let answer = try await parked.wait(seconds: 30).stdout
        #expect(Date().timeIntervalSince(began) < 15, "the parked poll was not woken")
        #expect(answer.contains(#""lease_id":"m1/switch""#) && answer.contains(#""action":"flip-flag""#), "\(answer)")
        // Nothing for orders now: an immediate answer with a delay.
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#).contains(#""retry_after_ms":1000"#))
        _ = try await server.stop()
    }

    /// Polls parked as `lockstep_parked_polls` reports them (read when scraped).
    private func parkedPolls(_ server: ServerProcess) async throws -> Int {
        let metrics = try await ChildProcess("/usr/bin/curl", ["-sS", server.url + "/metrics"]).wait(seconds: 30).stdout
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("lockstep_parked_polls ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) } ?? -1
    }

    private func waitUntilParked(_ count: Int, _ server: ServerProcess) async throws {
        let deadline = Date().addingTimeInterval(15)
        while try await parkedPolls(server) != count {
            guard Date() < deadline else { throw TestFailure("\(count) polls never parked: \(try await parkedPolls(server))") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    private func parkPoll(_ server: ServerProcess, service: String, agent: String, extra: [String] = []) throws -> ChildProcess {
        try ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json"] + extra
                         + ["--data-binary", #"{"service": "\#(service)", "agent_id": "\#(agent)", "wait_ms": 20000}"#, server.url + "/v1/agent/poll"])
    }

    /// A change wakes one parked poll of a service at a time: a service is held by one step at a time
    /// (service leases), so the others would only race for that step and park again. Each step that
    /// becomes ready still reaches a parked poll at once, and the rest sleep on.
    @Test func eachStepThatBecomesReadyReachesOneOfTheParkedPollsAndTheRestSleepOn() async throws {
        let server = try await ServerProcess()
        let plan = """
            name: fan-out
            services:
              orders: { owners: [orders-team] }
              checkout: { owners: [checkout-team] }
            nodes:
              - { id: expand, service: orders, phase: expand, action: add-column }
              - { id: left, service: checkout, phase: live, action: flip, needs: [expand] }
              - { id: right, service: checkout, phase: live, action: flip, needs: [expand] }
            """
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "fan-out", "migration_id": "m1"}"#).hasSuffix("\n200"))
        var polls: [ChildProcess] = []
        for index in 0..<3 {
            polls.append(try parkPoll(server, service: "checkout", agent: "c\(index)"))
            try await waitUntilParked(index + 1, server)
        }
        // Each completion readies the next step; one parked poll takes it long before any 20 s wait ends
        // (a generous bound: this is not a timing test).
        func answered(_ count: Int) async throws -> [String] {
            let deadline = Date().addingTimeInterval(10)
            while polls.filter({ $0.stdout.contains("lease_id") }).count < count && Date() < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            return polls.map(\.stdout).filter { $0.contains("lease_id") }
        }
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#).contains(#""lease_id":"m1/expand""#))
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#).hasSuffix("\n200"))
        let first = try await answered(1)
        try #require(first.count == 1 && first[0].contains("m1/left"), "\(first)")
        try await waitUntilParked(2, server)
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/left", "fencing_token": "1"}"#).hasSuffix("\n200"))
        let both = try await answered(2)
        #expect(both.count == 2 && both.contains { $0.contains("m1/right") }, "\(both)")
        try await waitUntilParked(1, server)
        for poll in polls { poll.kill(SIGTERM) }
        _ = try await server.stop()
    }

    /// Polls of a service whose step is leased park where they arrive, without asking the coordinator
    /// (`StepServices`), and still get the step however its lease ends: a failure that will be retried
    /// (the woken poll asks, finds the backoff, and is answered when it ends, with attempt 2) and a lease
    /// that expires (an append by the coordinator's timer; a lost agent uses no attempt), each with a new
    /// fencing token.
    @Test func pollsParkedWhileAStepRunsGetItWhenItsLeaseEndsByFailureOrExpiry() async throws {
        let server = try await ServerProcess()
        let plan = """
            name: busy
            services:
              orders: { owners: [orders-team] }
            nodes:
              - { id: expand, service: orders, phase: expand, action: add-column, retry: { max_attempts: 3, backoff: 1s }, timeouts: { heartbeat: 3s } }
            """
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "busy", "migration_id": "m1"}"#).hasSuffix("\n200"))
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "a"}"#).contains(#""fencing_token":"1""#))
        // Busy: an immediate poll is told to come back, and a waiting one parks.
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "b"}"#).contains("retry_after_ms"))
        let second = try parkPoll(server, service: "orders", agent: "b")
        try await waitUntilParked(1, server)
        #expect(try await server.post("/v1/agent/fail", #"{"lease_id": "m1/expand", "fencing_token": "1", "reason": "x", "retryable": true}"#)
            .contains(#""will_retry":true"#))
        let afterFailure = try await second.wait(seconds: 15)
        #expect(afterFailure.stdout.contains(#""attempt":2"#) && afterFailure.stdout.contains(#""fencing_token":"2""#), "\(afterFailure)")
        // Leased to b, which never beats: parked polls get it when the lease expires (3 s TTL: with 1 s, a
        // loaded CI machine once let a's lease expire before its failure was posted).
        let third = try parkPoll(server, service: "orders", agent: "c")
        try await waitUntilParked(1, server)
        let afterExpiry = try await third.wait(seconds: 15)
        // A lost agent is not the step failing: still attempt 2, under a new token.
        #expect(afterExpiry.stdout.contains(#""attempt":2"#) && afterExpiry.stdout.contains(#""fencing_token":"3""#), "\(afterExpiry)")
        _ = try await server.stop()
    }

    /// A poll whose client has gone leaves its place at once (issue 14: it used to stay parked until a
    /// change woke it, holding its principal's count), so the change that readies a step reaches a live
    /// poll straight away. (A woken poll whose client went in the instant between wake and look still
    /// hands its wake on: `Wakeups.passOn`, `WakeupsTests`.)
    @Test func aPollWhoseClientHasGoneLeavesAtOnceAndTheLiveOneGetsTheStep() async throws {
        let server = try await started()
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#).contains(#""lease_id":"m1/expand""#))
        // Three clients park polls for checkout and give up: each poll is gone as soon as its client is.
        // (Killed once seen parked: a client that gave up after a fixed time could be gone before a loaded
        // machine showed its poll parked.)
        for index in 0..<3 {
            let ghost = try parkPoll(server, service: "checkout", agent: "ghost\(index)")
            try await waitUntilParked(1, server)
            ghost.kill(SIGKILL)
            #expect(try await ghost.wait(seconds: 30).status != 0)
            try await waitUntilParked(0, server)
        }
        let live = try parkPoll(server, service: "checkout", agent: "c1")
        try await waitUntilParked(1, server)
        let began = Date()
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#).hasSuffix("\n200"))
        let answer = try await live.wait(seconds: 30).stdout
        #expect(Date().timeIntervalSince(began) < 10, "the live poll slept until its timeout")
        #expect(answer.contains(#""lease_id":"m1/switch""#), "\(answer)")
        _ = try await server.stop()
    }
}

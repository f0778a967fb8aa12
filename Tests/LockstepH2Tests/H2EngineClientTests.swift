import Foundation
import LockstepH2
import LockstepTestSupport
import Synchronization
import Testing

/// The engine against real HTTP/2 clients on a socket: curl (libcurl on libnghttp2's client side) and h2load.
@Suite(.serialized, .timeLimit(.minutes(2))) struct H2EngineClientTests {
    func curl(_ arguments: [String]) async throws -> ProcessOutput {
        try await ChildProcess("/usr/bin/curl", ["-sS", "--http2-prior-knowledge", "--max-time", "20"] + arguments).wait(seconds: 30)
    }

    @Test func curlGetsAndPostsOverPriorKnowledgeHTTP2() async throws {
        try await H2TestServer.with { server in
            let get = try await curl(["-w", "%{http_version} %{http_code}", server.url + "/echo"])
            #expect(get.stdout == "GET /echo\n2 200", "\(get)")
            let post = try await curl(["--data-binary", "hello body", "-w", "\n%{http_version} %{http_code}", server.url + "/echo"])
            #expect(post.stdout == "POST /echo\nhello body\n2 200", "\(post)")
            let missing = try await curl(["-w", "%{http_code}", server.url + "/nothing"])
            #expect(missing.stdout == "no route\n404", "\(missing)")
            let later = try await curl(["-w", "%{http_code}", server.url + "/later"])
            #expect(later.stdout == "later\n200", "an answer given from another thread: \(later)")
        }
    }

    /// `H2Response.closed` is made when first asked for: asked for the first time after the stream closed
    /// (curl has its whole answer and has gone), from off the event loop, it still completes, with 0.
    @Test func closedFirstAskedForAfterTheStreamClosedStillCompletes() async throws {
        try await H2TestServer.with { server in
            let answer = try await curl(["-w", "%{http_code}", server.url + "/late-closed"])
            #expect(answer.stdout == "answered\n200", "\(answer)")
            let response = try #require(server.application.lateResponse.withLock { $0 })
            final class Seen: Sendable { let code = Atomic<Int>(-1) }
            let seen = Seen()
            response.closed.whenSuccess { seen.code.store(Int($0), ordering: .relaxed) }
            try await eventually("closed completes when first asked for after the stream closed", seconds: 10) {
                seen.code.load(ordering: .relaxed) == 0
            }
        }
    }

    @Test func aLargeStreamedAnswerArrivesWholeThroughTheFlowControlWindows() async throws {
        try await H2TestServer.with { server in
            // 4 MiB: 16 times the 256 KiB stream window curl starts with, and over the 1 MiB the stream may buffer.
            let directory = temporaryDirectory()
            let answer = try await curl(["-o", directory + "/body", "-D", directory + "/head", "-w", "%{http_code} %{size_download}",
                                         server.url + "/stream?n=4096"])
            #expect(answer.stdout == "200 4194304", "\(answer)")
            let body = try Data(contentsOf: URL(fileURLWithPath: directory + "/body"))
            #expect(body.count == 4_194_304 && body.allSatisfy { $0 == UInt8(ascii: "a") })
        }
    }

    @Test func oneWriteLargerThanTheResponseBufferIsSentWhole() async throws {
        try await H2TestServer.with { server in
            // 3 MiB in one write: over responseBufferBytesMax (1 MiB), which bounds a writer that does not
            // wait for its pace, not the size of one message.
            let answer = try await curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}", server.url + "/blob?bytes=3145728"])
            #expect(answer.stdout == "200 3145728", "\(answer)")
        }
    }

    @Test func aBodyOverTheLimitIsAnswered413() async throws {
        var limits = H2Limits()
        limits.requestBodyBytesMax = 1_000
        try await H2TestServer.with(limits: limits) { server in
            let directory = temporaryDirectory()
            try Data(repeating: 0x62, count: 5_000).write(to: URL(fileURLWithPath: directory + "/big"))
            // (That the connection then serves the next request is checked by `h2_probe.py body-over-limit`:
            // curl 7.88 cannot reuse a prior-knowledge connection, against nghttpd too.)
            let refused = try await curl(["--data-binary", "@" + directory + "/big", "-w", "%{http_code}", server.url + "/echo"])
            #expect(refused.stdout == "413", "\(refused)")
            let fits = try await curl(["--data-binary", String(repeating: "c", count: 1_000), "-w", "%{http_code}", server.url + "/echo"])
            #expect(fits.stdout.hasSuffix("\n" + String(repeating: "c", count: 1_000) + "200"), "\(fits)")
        }
    }

    @Test func h2loadCompletesEveryRequestOnManyStreams() async throws {
        try await H2TestServer.with { server in
            // 4 connections × 32 concurrent streams, 8,000 requests, a quarter of them answered off the loop.
            let run = try await ChildProcess("/usr/bin/h2load", ["-n", "8000", "-c", "4", "-m", "32", server.url + "/echo", server.url + "/later",
                                                                 server.url + "/echo", server.url + "/echo"]).wait(seconds: 90)
            #expect(run.stdout.contains("8000 total") && run.stdout.contains("8000 succeeded, 0 failed, 0 errored, 0 timeout"), "\(run.stdout)")
            // Every stream's end reached the application: none is left behind on its connection.
            #expect(server.application.ended.load(ordering: .relaxed) == 8000)
        }
    }
}

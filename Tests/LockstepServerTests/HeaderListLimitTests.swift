import HTTPTypes
import LockstepH2
import LockstepHTTP
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Testing

/// HTTP/1.1's header-list guard: a request over the engine's limits is answered 431 and nothing of it,
/// nor of any request pipelined behind it on the closing connection, reaches the routes.
@Suite struct HeaderListLimitTests {
    @Test func aRefusedRequestAndEveryRequestBehindItAreDropped() throws {
        let channel = EmbeddedChannel(handler: HeaderListLimit(limits: H2Limits(), refusalBody: ByteBuffer(string: #"{"code":"x"}"#)))
        var small = HTTPRequest(method: .post, scheme: nil, authority: "a", path: "/v1/agent/poll")
        try channel.writeInbound(HTTPRequestPart.head(small))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        guard case .head? = try channel.readInbound(as: HTTPRequestPart.self) else {
            Issue.record("a request within the limits goes on")
            return
        }
        _ = try channel.readInbound(as: HTTPRequestPart.self)
        var big = small
        big.headerFields[HTTPField.Name("x-big")!] = String(repeating: "b", count: 20_000)
        try channel.writeInbound(HTTPRequestPart.head(big))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "{}")))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        // Pipelined behind it, within the limits: the connection is closing, it must not be served.
        small.path = "/v1/agent/complete"
        try channel.writeInbound(HTTPRequestPart.head(small))
        try channel.writeInbound(HTTPRequestPart.end(nil))
        #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil)
        guard case .head(let answer)? = try channel.readOutbound(as: HTTPResponsePart.self) else {
            Issue.record("no answer")
            return
        }
        #expect(answer.status.code == 431)
        _ = try? channel.finish()
    }
}

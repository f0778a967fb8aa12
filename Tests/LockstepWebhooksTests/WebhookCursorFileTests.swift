import Foundation
import LockstepTestSupport
import LockstepWebhooks
import Testing

/// The cursor file beside a SQLite log: read back as written, and a file that says a webhook's cursor
/// twice (edited by hand) is refused rather than taken at its last copy.
@Suite struct WebhookCursorFileTests {
    @Test func cursorsReadBackAndACursorGivenTwiceIsRefused() async throws {
        let path = temporaryDirectory() + "/webhooks.cursor.json"
        let file = WebhookCursorFile(path: path)
        #expect(try await file.read() == [:])
        try #"{"audit": 5, "deploys": 7}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try await file.read() == ["audit": 5, "deploys": 7])
        try #"{"audit": 5, "deploys": 7, "audit": 900}"#.write(toFile: path, atomically: true, encoding: .utf8)
        await #expect { _ = try await file.read() } throws: { "\($0)".contains("gives webhook audit's cursor twice") }
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        await #expect { _ = try await file.read() } throws: { "\($0)".contains("cannot be read") }
    }
}

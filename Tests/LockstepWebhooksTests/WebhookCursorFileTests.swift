import Foundation
import LockstepTestSupport
import LockstepWebhooks
import Logging
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
        // A cursor that is not a whole number of events, 0 or more, is refused naming its webhook (skipped,
        // that webhook would go on from the head and lose its backlog; 0.5 would send the whole history).
        for value in ["true", "0.5", "-1", #""5""#, "null", "18446744073709551615", "1e30"] {
            try #"{"audit": 5, "deploys": \#(value)}"#.write(toFile: path, atomically: true, encoding: .utf8)
            await #expect { _ = try await file.read() } throws: { "\($0)".contains("deploys") }
        }
    }

    /// A file that cannot be read is kept aside at start (every webhook goes on from the head), so the
    /// saves that follow do not write over it and the cursors it held.
    @Test func anUnreadableFileIsKeptAside() async throws {
        let directory = temporaryDirectory()
        let path = directory + "/webhooks.cursor.json"
        try #"{"audit": 5, "deploys": true}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let file = WebhookCursorFile(path: path)
        #expect(await file.load(logger: Logger(label: "test")) == nil)
        #expect(try String(contentsOfFile: path + ".unreadable", encoding: .utf8) == #"{"audit": 5, "deploys": true}"#)
        await file.save("audit", 6, logger: Logger(label: "test"))
        #expect(try await WebhookCursorFile(path: path).read() == ["audit": 6])
        #expect(FileManager.default.fileExists(atPath: path + ".unreadable"))
    }

    /// Saved whole and synced: what is read back is every cursor saved, and no temporary file is left.
    @Test func savesReplaceTheFileWhole() async throws {
        let directory = temporaryDirectory()
        let path = directory + "/webhooks.cursor.json"
        let file = WebhookCursorFile(path: path)
        let logger = Logger(label: "test")
        await file.save("audit", 5, logger: logger)
        await file.save("deploys", 9, logger: logger)
        await file.save("audit", 6, logger: logger)
        #expect(try await WebhookCursorFile(path: path).read() == ["audit": 6, "deploys": 9])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["webhooks.cursor.json"])
    }
}

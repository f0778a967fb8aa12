import LockstepCore
import Testing

/// `Instant.description` prints every Int64 without trapping (issue 14: `window_end_ms` = Int64.min in a
/// metric sample killed the server in this very function).
struct InstantTests {
    @Test func instantsPrintAsISO8601InUTC() {
        #expect(Instant(millisecondsSinceEpoch: 0).description == "1970-01-01T00:00:00.000Z")
        #expect(Instant(millisecondsSinceEpoch: 1_767_239_141_574).description == "2026-01-01T03:45:41.574Z")
        #expect(Instant(millisecondsSinceEpoch: 951_782_400_000).description == "2000-02-29T00:00:00.000Z")
        #expect(Instant(millisecondsSinceEpoch: -1).description == "1969-12-31T23:59:59.999Z")
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_800_000_000_123, "2027-01-15T08:00:00.123Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-86_400_000, "1969-12-31T00:00:00.000Z"),
    ])
    func instantsPrintAsISO8601AtTheirEdges(millis: Int64, text: String) {
        #expect(Instant(millisecondsSinceEpoch: millis).description == text)
    }

    @Test func theEndsOfInt64PrintWithoutTrapping() {
        #expect(Instant(millisecondsSinceEpoch: .min).description == "-292275055-05-16T16:47:04.192Z")
        #expect(Instant(millisecondsSinceEpoch: .max).description == "292278994-08-17T07:12:55.807Z")
    }

    @Test func addingSaturates() {
        #expect(Instant(millisecondsSinceEpoch: .max - 1).adding(milliseconds: 10).millisecondsSinceEpoch == .max)
        #expect(Instant(millisecondsSinceEpoch: .min + 1).adding(milliseconds: -10).millisecondsSinceEpoch == .min)
    }
}

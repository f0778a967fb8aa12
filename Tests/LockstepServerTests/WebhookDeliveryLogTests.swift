import LockstepService
import Testing

/// The record `lockstep webhook deliveries` reads: bounded at its capacity (1,000 deliveries by
/// default, the oldest dropped first), one entry per webhook and notification however often it is
/// attempted, and filtered by webhook and status.
@Suite struct WebhookDeliveryLogTests {
    func delivery(_ number: Int, webhook: String = "audit") -> WebhookDelivery {
        WebhookDelivery(id: "n-\(number)", webhook: webhook, kind: "migration_succeeded", sequence: UInt64(number), migration: "m-\(number)", node: "")
    }

    @Test func itHoldsAtMostItsCapacityDroppingTheOldest() {
        let log = WebhookDeliveryLog()
        #expect(log.capacity == 1_000)
        for number in 1...1_500 { log.record(delivery(number)) }
        let kept = log.recent(limit: 5_000)
        #expect(kept.count == 1_000)
        #expect(kept.first?.id == "n-501" && kept.last?.id == "n-1500")
        #expect(log.recent(limit: 3).map(\.id) == ["n-1498", "n-1499", "n-1500"])
        #expect(log.recent(limit: 0).isEmpty && log.recent(limit: -1).isEmpty)
        // A capacity below 1 is 1.
        #expect(WebhookDeliveryLog(capacity: 0).capacity == 1)
    }

    @Test func anotherAttemptReplacesItsEntryAndFiltersApply() {
        let log = WebhookDeliveryLog(capacity: 3)
        log.record(delivery(1))
        log.record(delivery(1, webhook: "slack"))
        var retried = delivery(1)
        retried.attempts = 2
        retried.status = .delivered
        retried.lastResult = "HTTP 204"
        log.record(retried)
        // The same notification to two webhooks is two entries; its second attempt is not a third.
        #expect(log.recent(limit: 10).count == 2)
        #expect(log.recent(limit: 10, webhook: "audit").map(\.attempts) == [2])
        #expect(log.recent(limit: 10, status: .pending).map(\.webhook) == ["slack"])
        // A replaced entry keeps its place (deliveries are listed in the order they were first recorded, the
        // log's), so at capacity it is still the first to go.
        log.record(delivery(2))
        #expect(log.recent(limit: 10).map { "\($0.webhook)/\($0.id)" } == ["audit/n-1", "slack/n-1", "audit/n-2"])
        log.record(delivery(3))
        #expect(log.recent(limit: 10).map { "\($0.webhook)/\($0.id)" } == ["slack/n-1", "audit/n-2", "audit/n-3"])
    }
}

@testable import LockstepPostgres
import LockstepStore
import Testing

/// What an append transaction on PostgreSQL may still do once its watchdog answered for it
/// (`PostgresEventLog.TransactionProgress`): nothing, unless its inserts were already sent.
@Suite struct TransactionProgressTests {
    let planned = PostgresEventLog.Planned(before: .genesis, head: LogHead(sequence: 1, chainHash: .genesis))
    let limit = Duration.seconds(5)

    @Test func beforeItsInsertsTheTransactionIsAbandoned() {
        let progress = PostgresEventLog.TransactionProgress()
        #expect(progress.overrun() == false)
        #expect(throws: PostgresEventLog.TransactionOverran.self) { try progress.checkNotAbandoned(limit: limit) }
        #expect(throws: PostgresEventLog.TransactionOverran.self) { try progress.sending(planned, limit: limit) }
    }

    /// A batch sent ahead whose outcome the caller is already reading from the log, then found to have
    /// written nothing, must not go on to the locked way and commit there after all.
    @Test func aBatchSentAheadThatWroteNothingAfterTheWatchdogIsNotRunAgain() throws {
        let progress = PostgresEventLog.TransactionProgress()
        try progress.sending(planned, limit: limit)
        #expect(progress.overrun() == true)
        progress.wroteNothing()
        #expect(throws: PostgresEventLog.TransactionOverran.self) { try progress.checkNotAbandoned(limit: limit) }
        // Without the watchdog, the locked way runs.
        let calm = PostgresEventLog.TransactionProgress()
        try calm.sending(planned, limit: limit)
        calm.wroteNothing()
        try calm.checkNotAbandoned(limit: limit)
        try calm.sending(planned, limit: limit)
    }
}

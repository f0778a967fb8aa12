import Logging
import PostgresNIO

// Replicas learn of new events by LISTEN on one channel, notified once per committed batch by the writer
// (in the append's transaction, so delivered at its COMMIT). A hint only: notifications sent while a
// listener is disconnected are lost, so a replica always reads from its own last sequence, and also
// every so often without a notification (docs/operations.md).
extension PostgresEventLog {
    /// The channel every committed append notifies, with the new head's sequence as its payload.
    public static let notificationChannel = "lockstep_log"

    /// Listens on `notificationChannel` on one of `client`'s connections and calls `notified` with the
    /// head sequence each notification carries, until the task is cancelled or the connection fails (then
    /// it throws; the caller listens again after a pause). `listening` is called once the LISTEN is in
    /// effect: from then on no commit goes unnoticed, so the caller reads the log once after it.
    public static func listen(client: PostgresClient, logger: Logger, listening: @Sendable () -> Void,
                              notified: @Sendable (UInt64) -> Void) async throws {
        try await client.withConnection { connection in
            try await connection.listen(on: notificationChannel) { notifications in
                listening()
                for try await notification in notifications {
                    notified(UInt64(notification.payload) ?? 0)
                }
            }
        }
    }
}

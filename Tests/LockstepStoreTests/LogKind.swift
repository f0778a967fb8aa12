@_exported import LockstepTestSupport
import Foundation
import LockstepStore

/// The log implementations the conformance suite runs against.
enum LogKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory, sqlite, postgres

    var testDescription: String { rawValue }

    /// A new, empty log of this kind.
    func make() async throws -> any EventLog {
        switch self {
        case .inMemory: InMemoryEventLog()
        case .sqlite: try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        // A database of its own on this process's private cluster (TestPostgres).
        case .postgres: try await TestPostgres.shared.makeLog()
        }
    }
}

import Testing

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Every event of `log`, read in pages of `page`.
func readAll(_ log: any EventLog, page: Int = 7) async throws -> [StoredEvent] {
    var events: [StoredEvent] = []
    while true {
        let next = try await log.read(after: events.last?.sequence ?? 0, limit: page)
        if next.isEmpty { return events }
        events += next
    }
}

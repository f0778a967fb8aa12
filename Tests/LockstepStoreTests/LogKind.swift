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

/// `writers` tasks at once, each appending `appendsEach` one-event appends to its own stream `wN`, one
/// after another; `around` wraps each append (a task-local value, say).
func appendBurst(to log: any EventLog, writers: Int, appendsEach: Int,
                 around: @escaping @Sendable (Int, () async throws -> Void) async throws -> Void = { _, append in try await append() })
    async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for writer in 0..<writers {
            group.addTask {
                for version in 0..<appendsEach {
                    try await around(writer) {
                        _ = try await log.append(AppendRequest(stream: "w\(writer)", expectedVersion: UInt64(version), records: [bytes("e")]))
                    }
                }
            }
        }
        try await group.waitForAll()
    }
}

extension SQLiteEventLog.CommitsInPlace {
    /// A rule that always allows a commit in place (no idle time, any last commit quick enough).
    static let always = SQLiteEventLog.CommitsInPlace(idleAtLeast: .zero, lastCommitAtMost: .seconds(3_600))
}

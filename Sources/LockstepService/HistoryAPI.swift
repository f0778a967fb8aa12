import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// The reviewer's side of the API: the recorded events page by page, the state at any sequence or
/// time, and a full verification of the chain. Operators, approvers and auditors may read it.
public struct HistoryAPI: Sendable {
    package let coordinator: Coordinator
    /// The calls that read the whole log, bounded (`WholeLogReads`): replays and checks, and exports.
    package let wholeLogReads: WholeLogReads
    package let exports: WholeLogReads

    /// Most events in one page, and the default.
    public static let pageSizeMax = 1_000
    public static let pageSizeDefault = 100
    /// Events read from the log per step while filtering by stream or searching by time.
    package static let scanPageEventsMax = 4_096

    public func listEvents(_ request: Lockstep_V1_ListEventsRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ListEventsResponse {
        try APIError.checkStream(request.stream)
        let size = request.pageSize == 0 ? Self.pageSizeDefault : min(Int(request.pageSize), Self.pageSizeMax)
        // One stream is read on its own (its cost is its own length, not the log's).
        let (events, damaged) = request.stream.isEmpty
            ? try await read(after: request.afterSequence, limit: size)
            : (try await read(stream: request.stream, after: request.afterSequence, limit: size), false)
        let last = events.last?.sequence ?? request.afterSequence
        let head = await coordinator.state.lastSequence
        var envelopes: [Lockstep_V1_EventEnvelope] = []
        for stored in events { envelopes.append(try Self.envelope(stored)) }
        return .with {
            $0.events = envelopes
            // A short page is the last (for now): a stream's last event is seldom the log's head, and a
            // cursor past it would only ever lead to empty pages. A page its bytes cut short is not, nor
            // one that stops before damage: the next page, from there, reports the damage.
            $0.nextAfterSequence = (events.count == size || damaged || ReadPageBudget.mayBeCut(events)) && last < head ? last : 0
        }
    }

    /// Every event after `request.afterSequence` (of `request.stream`, or all), as NDJSON lines in
    /// `lockstep history export`'s format, handed to `write` a page at a time.
    public func export(_ request: Lockstep_V1_ListEventsRequest, principal: Principal,
                       write: (String) async throws -> Void) async throws {
        try await exportPages(request, principal: principal) { page in
            var chunk = ""
            for stored in page { chunk += try HistoryExport.line(stored) + "\n" }
            if !chunk.isEmpty { try await write(chunk) }
        }
    }

    /// The same events as `export`, as envelopes (what gRPC's `ExportEvents` streams), handed to `send` a
    /// page at a time: read at the pace `send` takes them.
    public func exportEnvelopes(_ request: Lockstep_V1_ListEventsRequest, principal: Principal,
                                send: ([Lockstep_V1_EventEnvelope]) async throws -> Void) async throws {
        try await exportPages(request, principal: principal) { page in
            var envelopes: [Lockstep_V1_EventEnvelope] = []
            envelopes.reserveCapacity(page.count)
            for stored in page { envelopes.append(try Self.envelope(stored)) }
            if !envelopes.isEmpty { try await send(envelopes) }
        }
    }

    /// The export's reading: page after page of the log (or of one stream), each handed to `page` before
    /// the next is read. Every intact event before damage is handed on, then the damage is thrown at its
    /// position. (One stream is read on its own; a page with damage in it is reported whole.)
    private func exportPages(_ request: Lockstep_V1_ListEventsRequest, principal: Principal,
                             _ body: ([StoredEvent]) async throws -> Void) async throws {
        try APIError.checkStream(request.stream)
        // Its place is held while it reads, at its reader's pace (a stalled reader is cut: APILimits).
        try exports.enter(for: principal.name)
        defer { exports.leave(for: principal.name) }
        var position = request.afterSequence
        while true {
            let (page, damage) = request.stream.isEmpty
                ? await coordinator.log.readIntact(after: position, limit: Self.scanPageEventsMax)
                : await coordinator.log.readIntact(stream: request.stream, after: position, limit: Self.scanPageEventsMax)
            try await body(page)
            if let damage { throw APIError(.storage(damage)) }
            guard let last = page.last else { return }
            position = last.sequence
        }
    }

    public func stateAt(_ request: Lockstep_V1_StateAtRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_StateAtResponse {
        try await wholeLogReads.run(for: principal.name) { () async throws(APIError) in try await stateAt(request) }
    }

    private func stateAt(_ request: Lockstep_V1_StateAtRequest) async throws(APIError) -> Lockstep_V1_StateAtResponse {
        let through: UInt64?
        switch request.at {
        case .sequence(let sequence): through = sequence
        case .timeMs(let time): through = try await lastSequence(recordedAtOrBefore: Instant(millisecondsSinceEpoch: time))
        // Neither: the whole log, as it stands.
        case nil: through = nil
        }
        let state: LogState
        do {
            // Every migration started by then, settled ones included (the live state holds only the unsettled).
            // (Sequence 0 is the empty state only where the log starts at genesis; before an archived base, replay says so.)
            let base = try await coordinator.log.baseHead().sequence
            state = through == 0 && base == 0 ? LogState() : try await History.replay(coordinator.log, through: through, keepingSettled: true)
        } catch {
            if case .invalidRequest(let why) = error { throw APIError.invalid(why) }
            throw APIError(.storage(error))
        }
        return Lockstep_V1_StateAtResponse(state)
    }

    public func verify(_ request: Lockstep_V1_VerifyHistoryRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_VerifyHistoryResponse {
        try await wholeLogReads.run(for: principal.name) { () async throws(APIError) in await verifyWhole() }
    }

    private func verifyWhole() async -> Lockstep_V1_VerifyHistoryResponse {
        do {
            let report = try await HistoryVerifier.verify(coordinator.log)
            return .with {
                $0.ok = true
                $0.events = report.events
                $0.headSequence = report.head.sequence
                $0.headChainHash = Data(report.head.chainHash.bytes)
                $0.snapshotChecked = report.snapshotChecked ?? 0
                $0.digest = report.digest.hex
                $0.migrations = UInt64(report.migrations)
                $0.plans = UInt64(report.plans)
                $0.baseSequence = report.base
            }
        } catch {
            // A broken history is an answer, not a failure of the call.
            return .with {
                $0.ok = false
                $0.problemCode = error.code
                $0.problem = APIError.withoutCode(error.description, error.code)
            }
        }
    }

    /// Events after `sequence`; at damage, the intact events before it and `damaged` (the next read,
    /// after them, reports the damage).
    private func read(after sequence: UInt64, limit: Int) async throws(APIError) -> (events: [StoredEvent], damaged: Bool) {
        let (events, damage) = await coordinator.log.readIntact(after: sequence, limit: limit)
        if let damage, events.isEmpty { throw APIError(.storage(damage)) }
        return (events, damage != nil)
    }

    /// Events of `stream` after `sequence`.
    private func read(stream: String, after sequence: UInt64, limit: Int) async throws(APIError) -> [StoredEvent] {
        do throws(EventLogError) { return try await coordinator.log.read(stream: stream, after: sequence, limit: limit) } catch {
            throw APIError(.storage(error))
        }
    }

    /// The error for a migration these reads did not find: `log_archived` when its events were archived
    /// out of the log, else `migration_not_found`.
    private func notFound(_ id: MigrationID) async throws(APIError) -> APIError {
        do throws(EventLogError) {
            _ = try await coordinator.readMigrationSayingArchived(id)
        } catch {
            return APIError(.storage(error))
        }
        return APIError(.rejected(.migrationNotFound(id)))
    }

    public func explain(_ request: Lockstep_V1_ExplainRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ExplainResponse {
        try APIError.checkIdentifier(request.migrationID, "migration_id")
        if !request.nodeID.isEmpty { try APIError.checkIdentifier(request.nodeID, "node_id") }
        let id = MigrationID(request.migrationID)
        let events: [(sequence: UInt64, event: RecordedEvent)]
        do throws(EventLogError) { events = try await History.migrationEvents(id, in: coordinator.log) } catch { throw APIError(.storage(error)) }
        if events.isEmpty { throw try await notFound(id) }
        let explanation: HistoryExplain.Explanation
        do throws(HistoryExplain.Failure) {
            explanation = try HistoryExplain.explain(events, node: request.nodeID.isEmpty ? nil : NodeID(request.nodeID))
        } catch {
            throw APIError.invalid(error.description)
        }
        return Lockstep_V1_ExplainResponse(explanation)
    }

    public func diff(_ request: Lockstep_V1_DiffHistoryRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_DiffHistoryResponse {
        try await wholeLogReads.run(for: principal.name) { () async throws(APIError) in try await diff(request) }
    }

    private func diff(_ request: Lockstep_V1_DiffHistoryRequest) async throws(APIError) -> Lockstep_V1_DiffHistoryResponse {
        if !request.migrationID.isEmpty { try APIError.checkIdentifier(request.migrationID, "migration_id") }
        guard request.hasFrom, request.hasTo, request.from.at != nil, request.to.at != nil else {
            throw APIError.invalid("a diff needs two points, from and to: each a sequence or a time_ms")
        }
        let from = try await sequence(of: request.from)
        let to = try await sequence(of: request.to)
        guard from <= to else { throw APIError.invalid("from (sequence \(from)) must not come after to (sequence \(to))") }
        let old: LogState
        let new: LogState
        do {
            (old, new) = try await History.states(coordinator.log, from: from, to: to)
        } catch {
            if case .invalidRequest(let why) = error { throw APIError.invalid(why) }
            throw APIError(.storage(error))
        }
        if !request.migrationID.isEmpty, !new.everyMigrationInOrder.contains(where: { $0.id.rawValue == request.migrationID }) {
            throw try await notFound(MigrationID(request.migrationID))
        }
        return .with {
            $0.fromSequence = from
            $0.toSequence = to
            $0.changes = HistoryDiff.changes(from: old, to: new, migration: request.migrationID.isEmpty ? nil : MigrationID(request.migrationID))
        }
    }

    private func sequence(of point: Lockstep_V1_HistoryPoint) async throws(APIError) -> UInt64 {
        switch point.at {
        case .sequence(let sequence)?: sequence
        case .timeMs(let time)?: try await lastSequence(recordedAtOrBefore: Instant(millisecondsSinceEpoch: time))
        case nil: 0
        }
    }

    /// The last event recorded at or before `time` (0 when none was).
    private func lastSequence(recordedAtOrBefore time: Instant) async throws(APIError) -> UInt64 {
        do throws(EventLogError) { return try await History.lastSequence(in: coordinator.log, recordedAtOrBefore: time) } catch {
            throw APIError(.storage(error))
        }
    }

    package static func envelope(_ stored: StoredEvent) throws(APIError) -> Lockstep_V1_EventEnvelope {
        do {
            let record = try EventRecordCodec.decodeRecord(stored.record)
            return .with {
                $0.sequence = stored.sequence
                $0.chainHash = Data(stored.chainHash.bytes)
                $0.record = record
            }
        } catch {
            throw APIError(.storage(.corrupted(position: stored.sequence, reason: "the record does not decode: \(error)")))
        }
    }

    package init(coordinator: Coordinator, limits: APILimits = APILimits()) {
        self.coordinator = coordinator
        wholeLogReads = WholeLogReads(max: limits.historyReadsMax, perPrincipalMax: limits.historyReadsPerPrincipalMax)
        exports = WholeLogReads(max: limits.exportsMax, perPrincipalMax: limits.exportsPerPrincipalMax, what: "exports of the history")
    }
}

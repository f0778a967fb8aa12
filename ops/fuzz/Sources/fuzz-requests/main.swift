import FuzzDriver
import LockstepCore
import LockstepWire
import SwiftProtobuf

/// Any bytes as each API request message, in protobuf and in JSON (the first byte picks the message and
/// the encoding): decoding never traps, and what decodes goes through the checks the edge applies before
/// anything reaches `decide` (identifiers, numbers, instants, a JSON key written twice), none of which
/// may trap either.
// Exported too: libFuzzer's archive brings its own `main`, which names this symbol (ours runs first).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzRequests(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let first = input.first else { return 0 }
    let selector = Int(first)
    let body = Array(input.dropFirst())
    let types = RequestTypes.all
    let type = types[(selector >> 1) % types.count]
    let json = selector & 1 == 1
    let message: (any SwiftProtobuf.Message)?
    if json {
        message = try? type.init(jsonUTF8Bytes: body, options: JSONDecodingOptions())
        // The edge's duplicate-key check runs on bodies that decoded; on any bytes it must answer, not trap.
        _ = JSONKeys.firstRepeated(in: body, protobufFields: true)
        _ = JSONKeys.firstRepeated(in: body)
    } else {
        message = try? type.init(serializedBytes: body)
    }
    if let message { RequestTypes.check(message) }
    return 0
}

enum RequestTypes {
    static let all: [any SwiftProtobuf.Message.Type] = [
        Lockstep_V1_PollRequest.self, Lockstep_V1_HeartbeatRequest.self, Lockstep_V1_ReportProgressRequest.self,
        Lockstep_V1_CompleteRequest.self, Lockstep_V1_FailRequest.self, Lockstep_V1_ApplyPlanRequest.self,
        Lockstep_V1_ListPlansRequest.self, Lockstep_V1_StartMigrationRequest.self, Lockstep_V1_StageRequest.self,
        Lockstep_V1_RecordMetricRequest.self, Lockstep_V1_ListEventsRequest.self, Lockstep_V1_StateAtRequest.self,
        Lockstep_V1_VerifyHistoryRequest.self, Lockstep_V1_WatchRequest.self, Lockstep_V1_GetMigrationRequest.self,
        Lockstep_V1_ListMigrationsRequest.self, Lockstep_V1_PauseMigrationRequest.self, Lockstep_V1_ResumeMigrationRequest.self,
        Lockstep_V1_AbortMigrationRequest.self, Lockstep_V1_GateDecisionRequest.self, Lockstep_V1_ReleaseServiceLeaseRequest.self,
        Lockstep_V1_ListServiceLeasesRequest.self, Lockstep_V1_DeclareFreezeRequest.self, Lockstep_V1_ListFreezesRequest.self,
        Lockstep_V1_EndFreezeRequest.self, Lockstep_V1_StopLineRequest.self, Lockstep_V1_BreakGlassRequest.self,
        Lockstep_V1_CreateConsoleLinkRequest.self,
    ]

    /// The edge's checks on a decoded request's fields; every one must answer, none may trap.
    static func check(_ message: any SwiftProtobuf.Message) {
        func id(_ value: String) { _ = MigrationState.identifierProblem(value, what: "id") }
        switch message {
        case let request as Lockstep_V1_PollRequest:
            id(request.service)
            id(request.agentID)
            _ = min(request.waitMs, 30_000)
        case let request as Lockstep_V1_RecordMetricRequest:
            id(request.migrationID)
            id(request.nodeID)
            _ = MetricSample.micros(request.value)
            for instant in [request.windowStartMs, request.windowEndMs] {
                _ = Instant(millisecondsSinceEpoch: instant).description
                _ = Instant(millisecondsSinceEpoch: instant).adding(milliseconds: CoreLimits.durationMillisMax)
            }
        case let request as Lockstep_V1_StateAtRequest:
            if case .timeMs(let time) = request.at { _ = Instant(millisecondsSinceEpoch: time).description }
        case let request as Lockstep_V1_ListEventsRequest:
            if let migration = RecordedEvent.migration(ofStream: request.stream) { id(migration.rawValue) }
            if let plan = RecordedPlanEvent.plan(ofStream: request.stream) { id(plan) }
            _ = request.afterSequence < UInt64(Int64.max)
        case let request as Lockstep_V1_ReportProgressRequest:
            if request.percent <= 100 { _ = UInt8(request.percent) }
            let parts = request.leaseID.split(separator: "/", omittingEmptySubsequences: false)
            for part in parts { id(String(part)) }
        case let request as Lockstep_V1_StartMigrationRequest:
            id(request.plan)
            id(request.migrationID)
        case let request as Lockstep_V1_GateDecisionRequest:
            id(request.migrationID)
            id(request.nodeID)
        case let request as Lockstep_V1_DeclareFreezeRequest:
            // The core's own checks, on any instants and services a request can carry.
            let freeze = Freeze(id: request.id, services: Array(request.services.prefix(CoreLimits.freezeServicesMax + 1)),
                                from: Instant(millisecondsSinceEpoch: request.fromMs),
                                until: request.untilMs == 0 ? nil : Instant(millisecondsSinceEpoch: request.untilMs), reason: request.reason, declaredBy: "fuzz")
            _ = LogState().decide(.freezes(.declare(freeze)), now: Instant(millisecondsSinceEpoch: 1_700_000_000_000))
        case let request as Lockstep_V1_BreakGlassRequest:
            id(request.migrationID)
            id(request.nodeID)
            _ = BreakGlassScope(rawValue: request.scope)
        default:
            break
        }
    }
}

runFuzzer { data, size in fuzzRequests(data, size) }

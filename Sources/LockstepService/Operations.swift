// The operation table: every operation of the API declared once (issue 15, item 6). Both transports
// serve it from here: the JSON route and the gRPC method each run an operation through one gate per
// transport (authenticate, then `Principal.require(operation)`, then the handler, timed under the
// operation's name), and check that their handler's message types are the table's. `OperationTableTests`
// holds the table against agent.proto's services and docs/openapi.yaml; `lockstep debug operations`
// prints it for the scripts that probe every route (ops/check-openapi, bad_input.py).

/// One operation of the API.
public struct APIOperation: Hashable, Sendable {
    /// Its name: the metric label (`method`) on both transports, and the JSON route's path under `/v1/`.
    public var name: String { storage.fields.name }
    /// What a caller does with it, in words, for refusals ("apply plans").
    public var summary: String { storage.fields.summary }
    /// Who may call it (an admin may call anything). Finer rules that depend on the request (an agent
    /// acts only for its services) are the service layer's.
    public var roles: Set<Principal.Role> { storage.fields.roles }
    /// The gRPC service (fully qualified) and method.
    public var service: String { storage.fields.service }
    public var method: String { storage.fields.method }
    /// The request and response messages (full protobuf names).
    public var request: String { storage.fields.request }
    public var response: String { storage.fields.response }
    /// The response is a stream: gRPC server-streaming, NDJSON over HTTP, pulled at the reader's pace.
    public var streams: Bool { storage.fields.streams }
    /// The JSON route's verb: POST with the request as a JSON body, or GET (a cacheable read, with the
    /// request in the path and query).
    public var verb: Verb { storage.fields.verb }
    /// The JSON route's path (Hummingbird's syntax: `:name` is a path parameter).
    public var path: String { storage.fields.path }
    /// It writes (appends, or holds a step lease's timer): only the writer serves it; a replica answers
    /// `not_writer` naming the writer. Every other operation is a read any coordinator serves.
    public var writes: Bool { storage.fields.writes }

    public enum Verb: String, Hashable, Sendable {
        case get = "GET", post = "POST"
    }

    /// The fields, behind one reference: every call passes its operation along (the gate, the timer, the
    /// refusal), and a copy of eight counted fields cost eight retains and eight releases
    /// (docs/benchmarks-api-history.md, session 35). Never changed once made.
    private let storage: Storage

    private struct Fields: Hashable, Sendable {
        let name, summary, service, method, request, response, path: String
        let roles: Set<Principal.Role>
        let streams, writes: Bool
        let verb: Verb
    }

    private final class Storage: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    init(_ name: String, _ summary: String, roles: Set<Principal.Role>, _ service: String, _ method: String,
         _ request: String, _ response: String, streams: Bool = false, verb: Verb = .post, path: String? = nil, writes: Bool = false) {
        storage = Storage(Fields(name: name, summary: summary, service: "lockstep.v1." + service, method: method,
                                 request: "lockstep.v1." + request, response: "lockstep.v1." + response, path: path ?? "/v1/" + name,
                                 roles: roles, streams: streams, writes: writes, verb: verb))
    }

    public static func == (lhs: APIOperation, rhs: APIOperation) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields
    }

    /// By name: operations that are equal have one name (the table's names are distinct, `OperationTableTests`).
    public func hash(into hasher: inout Hasher) { hasher.combine(storage.fields.name) }
}

extension APIOperation {
    /// Who reads migrations, plans and the history.
    static let readers: Set<Principal.Role> = OperatorAPI.readers

    public static let poll = APIOperation("agent/poll", "poll for steps", roles: [.agent], "AgentService", "Poll", "PollRequest", "PollResponse", writes: true)
    public static let heartbeat = APIOperation("agent/heartbeat", "report on steps", roles: [.agent], "AgentService", "Heartbeat",
                                            "HeartbeatRequest", "HeartbeatResponse", writes: true)
    public static let reportProgress = APIOperation("agent/progress", "report on steps", roles: [.agent], "AgentService", "ReportProgress",
                                                 "ReportProgressRequest", "ReportProgressResponse", writes: true)
    public static let complete = APIOperation("agent/complete", "report on steps", roles: [.agent], "AgentService", "Complete",
                                           "CompleteRequest", "CompleteResponse", writes: true)
    public static let fail = APIOperation("agent/fail", "report on steps", roles: [.agent], "AgentService", "Fail", "FailRequest", "FailResponse", writes: true)

    public static let applyPlan = APIOperation("plans", "apply plans", roles: [.operator], "MigrationService", "ApplyPlan",
                                            "ApplyPlanRequest", "ApplyPlanResponse", writes: true)
    public static let validatePlan = APIOperation("plans/validate", "validate plans", roles: readers, "MigrationService", "ValidatePlan",
                                               "ApplyPlanRequest", "ValidatePlanResponse")
    public static let listPlans = APIOperation("plans/list", "list plans", roles: readers, "MigrationService", "ListPlans",
                                            "ListPlansRequest", "ListPlansResponse")
    public static let startMigration = APIOperation("migrations", "start migrations", roles: [.operator], "MigrationService", "StartMigration",
                                                 "StartMigrationRequest", "StartMigrationResponse", writes: true)
    public static let getMigration = APIOperation("migrations/get", "read migrations", roles: readers, "MigrationService", "GetMigration",
                                               "GetMigrationRequest", "Migration")
    public static let listMigrations = APIOperation("migrations/list", "read migrations", roles: readers, "MigrationService", "ListMigrations",
                                                 "ListMigrationsRequest", "ListMigrationsResponse")
    public static let pause = APIOperation("migrations/pause", "pause migrations", roles: [.operator], "MigrationService", "PauseMigration",
                                        "PauseMigrationRequest", "ChangeResponse", writes: true)
    public static let resume = APIOperation("migrations/resume", "resume migrations", roles: [.operator], "MigrationService", "ResumeMigration",
                                         "ResumeMigrationRequest", "ChangeResponse", writes: true)
    public static let abort = APIOperation("migrations/abort", "abort migrations", roles: [.operator], "MigrationService", "AbortMigration",
                                        "AbortMigrationRequest", "ChangeResponse", writes: true)
    public static let approve = APIOperation("migrations/approve", "approve gates", roles: [.approver], "MigrationService", "Approve",
                                          "GateDecisionRequest", "ChangeResponse", writes: true)
    public static let reject = APIOperation("migrations/reject", "reject gates", roles: [.approver], "MigrationService", "Reject",
                                         "GateDecisionRequest", "ChangeResponse", writes: true)
    public static let watch = APIOperation("migrations/watch", "watch migrations", roles: readers, "MigrationService", "Watch",
                                        "WatchRequest", "EventEnvelope", streams: true)
    public static let releaseServiceLease = APIOperation("service-leases/release", "force-release service leases", roles: [.operator],
                                                      "MigrationService", "ReleaseServiceLease", "ReleaseServiceLeaseRequest", "ChangeResponse", writes: true)
    public static let listServiceLeases = APIOperation("service-leases/list", "read service leases", roles: readers, "MigrationService",
                                                    "ListServiceLeases", "ListServiceLeasesRequest", "ListServiceLeasesResponse")
    /// Operators, and agents of the node's service (checked by the service layer).
    public static let recordMetric = APIOperation("metrics/record", "record metric samples", roles: [.operator, .agent], "MigrationService",
                                               "RecordMetric", "RecordMetricRequest", "RecordMetricResponse", writes: true)

    public static let declareFreeze = APIOperation("freezes", "declare freezes", roles: [.operator], "MigrationService", "DeclareFreeze",
                                                "DeclareFreezeRequest", "FreezeResponse", writes: true)
    public static let listFreezes = APIOperation("freezes/list", "read freezes", roles: readers, "MigrationService", "ListFreezes",
                                              "ListFreezesRequest", "ListFreezesResponse")
    public static let endFreeze = APIOperation("freezes/end", "end freezes", roles: [.operator], "MigrationService", "EndFreeze",
                                            "EndFreezeRequest", "FreezeResponse", writes: true)
    public static let stopLine = APIOperation("line/stop", "stop the line", roles: [.operator], "MigrationService", "StopLine",
                                           "StopLineRequest", "FreezeResponse", writes: true)
    public static let listWebhookDeliveries = APIOperation("webhooks/deliveries", "read webhook deliveries", roles: readers, "MigrationService",
                                                        "ListWebhookDeliveries", "ListWebhookDeliveriesRequest", "ListWebhookDeliveriesResponse")
    /// Operators reach the core, which takes it from admins only (`break_glass_not_admin`).
    public static let breakGlass = APIOperation("migrations/break-glass", "break the glass", roles: [.operator], "MigrationService", "BreakGlass",
                                             "BreakGlassRequest", "ChangeResponse", writes: true)
    /// Everyone with a console (its roles are the readers'), for themselves: a one-time sign-in link.
    public static let createConsoleLink = APIOperation("console/links", "make console sign-in links", roles: readers, "MigrationService",
                                                    "CreateConsoleLink", "CreateConsoleLinkRequest", "ConsoleLink")

    /// Readers, and agents of a service the migration changes (checked by the service layer).
    public static let stage = APIOperation("stage", "read stages", roles: readers.union([.agent]), "StageService", "GetStage",
                                        "StageRequest", "Stage", verb: .get, path: "/v1/stage/:migration")

    public static let listEvents = APIOperation("history/events", "read the history", roles: readers, "HistoryService", "ListEvents",
                                             "ListEventsRequest", "ListEventsResponse")
    public static let exportEvents = APIOperation("history/export", "read the history", roles: readers, "HistoryService", "ExportEvents",
                                               "ListEventsRequest", "EventEnvelope", streams: true)
    public static let stateAt = APIOperation("history/state", "read the history", roles: readers, "HistoryService", "GetStateAt",
                                          "StateAtRequest", "StateAtResponse")
    public static let verifyHistory = APIOperation("history/verify", "verify the history", roles: readers, "HistoryService", "VerifyHistory",
                                                "VerifyHistoryRequest", "VerifyHistoryResponse")
    public static let explainMigration = APIOperation("history/explain", "read the history", roles: readers, "HistoryService", "ExplainMigration",
                                                   "ExplainRequest", "ExplainResponse")
    public static let diffHistory = APIOperation("history/diff", "read the history", roles: readers, "HistoryService", "DiffHistory",
                                              "DiffHistoryRequest", "DiffHistoryResponse")

    /// Every operation, in the order the API documents them.
    public static let all: [APIOperation] = [
        poll, heartbeat, reportProgress, complete, fail,
        applyPlan, validatePlan, listPlans, startMigration, getMigration, listMigrations, pause, resume, abort, approve, reject, watch,
        releaseServiceLease, listServiceLeases, recordMetric,
        declareFreeze, listFreezes, endFreeze, stopLine, breakGlass, listWebhookDeliveries, createConsoleLink,
        stage,
        listEvents, exportEvents, stateAt, verifyHistory, explainMigration, diffHistory,
    ]

    /// The table as JSON lines, one operation each (what `lockstep debug operations` prints).
    public static var jsonLines: String {
        func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        return all.map { operation in
            let roles = operation.roles.map(\.rawValue).sorted().map(quoted).joined(separator: ",")
            return "{" + [
                "\"name\":" + quoted(operation.name), "\"summary\":" + quoted(operation.summary), "\"roles\":[" + roles + "]",
                "\"service\":" + quoted(operation.service), "\"method\":" + quoted(operation.method),
                "\"request\":" + quoted(operation.request), "\"response\":" + quoted(operation.response),
                "\"streams\":" + (operation.streams ? "true" : "false"), "\"verb\":" + quoted(operation.verb.rawValue),
                "\"path\":" + quoted(operation.path), "\"writes\":" + (operation.writes ? "true" : "false"),
            ].joined(separator: ",") + "}\n"
        }.joined()
    }
}

extension Principal {
    /// The gate every transport applies before an operation's handler runs: the principal needs one of
    /// the operation's roles (or admin). Refused with `permission_denied` before anything is read, so
    /// nobody without the role learns which migrations, nodes or plans exist.
    package func require(_ operation: APIOperation) throws(APIError) {
        if operation.roles.count == 1, let role = operation.roles.first {
            try require(role, to: operation.summary)
        } else {
            try require(anyOf: operation.roles, to: operation.summary)
        }
        if operation.writes, let refusal = writesElsewhere { throw refusal }
    }
}

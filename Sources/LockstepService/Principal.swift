import LockstepCore

/// Who is calling, as established by authentication, and what they may do. Deny by default: a call
/// needs a role that allows it, and agents are scoped to named services.
public struct Principal: Hashable, Sendable {
    public enum Role: String, Hashable, Sendable, CaseIterable {
        case agent, `operator`, approver, auditor, admin

        // Compared and hashed by case. The standard library's defaults for a raw-value enum compare and
        // hash the raw value, a String made and hashed on every role check of every call (`perf`:
        // `String.hash(into:)` under `Set.contains` in each call's gate, docs/benchmarks-api-history.md,
        // session 35).
        private var ordinal: Int {
            switch self {
            case .agent: 0
            case .operator: 1
            case .approver: 2
            case .auditor: 3
            case .admin: 4
            }
        }

        public static func == (lhs: Role, rhs: Role) -> Bool { lhs.ordinal == rhs.ordinal }
        public func hash(into hasher: inout Hasher) { hasher.combine(ordinal) }
    }

    public var name: String {
        get { storage.fields.name }
        set { change { $0.name = newValue } }
    }
    public var roles: Set<Role> {
        get { storage.fields.roles }
        set { change { $0.roles = newValue } }
    }
    /// For agents: the services they may poll, lease and report for (empty = none).
    public var services: Set<String> {
        get { storage.fields.services }
        set { change { $0.services = newValue } }
    }
    /// For approvers: the owner groups they belong to (used by approvals).
    public var ownerGroups: Set<String> {
        get { storage.fields.ownerGroups }
        set { change { $0.ownerGroups = newValue } }
    }

    public init(name: String, roles: Set<Role>, services: Set<String> = [], ownerGroups: Set<String> = []) {
        storage = Storage(Fields(name: name, roles: roles, services: services, ownerGroups: ownerGroups))
    }

    private init(storage: Storage) { self.storage = storage }

    /// `lockstep serve --dev` only: a person on loopback who may do everything, and who belongs to every
    /// owner group a gate asks for (separation of duties still holds: nobody approves their own request).
    public var isDeveloper: Bool {
        get { storage.fields.isDeveloper }
        set { change { $0.isDeveloper = newValue } }
    }

    /// Set on a replica (docs/operations.md): the refusal every operation that writes gets, naming the
    /// writer, after the caller's roles are checked (so nobody without them learns who writes). Beside the
    /// shared fields, not among them: a replica sets it on every call, on a principal whose fields its
    /// token table shares, which would otherwise be made again every time.
    package var writesElsewhere: APIError?

    /// The fields, behind one reference: a principal is copied into every call's work (a poll's cursor,
    /// a report's closure), and a copy of its name and three sets cost a retain and a release each, every
    /// call (docs/benchmarks-api-history.md, session 35). Never changed: a change makes new storage
    /// (principals are changed only as they are made, never on a call's path).
    private var storage: Storage

    private struct Fields: Hashable, Sendable {
        var name: String
        var roles: Set<Role>
        var services: Set<String>
        var ownerGroups: Set<String>
        var isDeveloper = false
    }

    private final class Storage: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private mutating func change(_ body: (inout Fields) -> Void) {
        var fields = storage.fields
        body(&fields)
        storage = Storage(fields)
    }

    public static func == (lhs: Principal, rhs: Principal) -> Bool {
        lhs.writesElsewhere == rhs.writesElsewhere && (lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.fields)
        hasher.combine(writesElsewhere)
    }

    /// `lockstep serve --dev`: one principal that may do everything, for loopback experiments only.
    public static let developer = developer(named: "dev")

    /// A `--dev` principal named `name`: how a second person (an approver) acts on loopback.
    public static func developer(named name: String) -> Principal {
        // Made whole, in one storage: under `--dev` a token `as:NAME` makes one on every call.
        Principal(storage: Storage(Fields(name: name, roles: Set(Role.allCases), services: [], ownerGroups: [], isDeveloper: true)))
    }

    /// Under `--dev`, who the caller is: `dev`, or NAME for a bearer token `as:NAME` (any other token is
    /// ignored, as `--dev` authenticates nobody).
    public static func developer(authorization header: String?) throws(APIError) -> Principal {
        guard let header, let token = header.split(separator: " ", maxSplits: 1).last, token.hasPrefix("as:") else { return .developer }
        let name = String(token.dropFirst(3))
        if let problem = MigrationState.identifierProblem(name, what: "the --dev name after as:") {
            throw APIError(.unauthenticated, problem)
        }
        return .developer(named: name)
    }

    /// Whether this principal may act as an agent of `service`.
    public func mayAct(forService service: String) -> Bool {
        roles.contains(.admin) || (roles.contains(.agent) && services.contains(service))
    }

    package func require(_ role: Role, to what: String) throws(APIError) {
        guard roles.contains(role) || roles.contains(.admin) else {
            throw APIError(.permissionDenied, "\(name) may not \(what) (needs the \(role.rawValue) role)")
        }
    }

    package func require(anyOf roles: Set<Role>, to what: String) throws(APIError) {
        guard !self.roles.isDisjoint(with: roles) || self.roles.contains(.admin) else {
            let names = roles.map(\.rawValue).sorted().joined(separator: ", ")
            throw APIError(.permissionDenied, "\(name) may not \(what) (needs one of the roles \(names))")
        }
    }

    /// Whether this principal may report on a node's step: it acts for the service the node names first
    /// (the one its steps belong to).
    package func mayReport(on node: NodeSpec) -> Bool {
        mayAct(forService: node.stepService)
    }

    package func requireAgent(of service: String) throws(APIError) {
        guard mayAct(forService: service) else {
            throw APIError(.permissionDenied, "\(name) is not an agent of service \(service)")
        }
    }

    /// The refusal an agent gets for a node that is not of its services, whether or not the migration
    /// and node exist: the same answer either way, so agents cannot probe for other services' work.
    package func notItsNode(_ migration: MigrationID, _ node: NodeID) -> APIError {
        APIError(.permissionDenied,
                 "\(name) is an agent of \(services.sorted().joined(separator: ", ")); \(migration)/\(node) is not a step of those services, or does not exist")
    }

    /// The actor recorded in events: always the principal, never a name from a request body.
    package var agentActor: Actor { Actor(kind: "agent", id: name) }
    package var userActor: Actor { Actor(kind: "user", id: name) }
}

@testable import LockstepService
import Testing

/// `Principal` and `APIOperation` keep their fields behind one reference (one retain per copy, not one
/// per field), and `Principal.Role` compares and hashes by case. Each is still a value: a copy changed
/// leaves the original alone, equality is field by field, and equal values hash alike.
@Suite struct PrincipalValueTests {
    @Test func eachRoleIsEqualOnlyToItselfAndHashesAlike() {
        for role in Principal.Role.allCases {
            for other in Principal.Role.allCases {
                #expect((role == other) == (role.rawValue == other.rawValue), "\(role) and \(other)")
            }
        }
        #expect(Set(Principal.Role.allCases).count == Principal.Role.allCases.count)
        #expect(Set([Principal.Role.agent, .admin]).contains(.admin) && !Set([Principal.Role.agent]).contains(.auditor))
    }

    @Test func aChangedCopyLeavesTheOriginalAlone() {
        let original = Principal(name: "ci", roles: [.agent], services: ["orders"], ownerGroups: ["payments"])
        var copy = original
        copy.name = "other"
        copy.roles.insert(.operator)
        copy.services.insert("billing")
        copy.ownerGroups = []
        copy.isDeveloper = true
        copy.writesElsewhere = APIError(.notWriter, "the writer is elsewhere")
        #expect(original.name == "ci" && original.roles == [.agent] && original.services == ["orders"])
        #expect(original.ownerGroups == ["payments"] && !original.isDeveloper && original.writesElsewhere == nil)
        #expect(copy.name == "other" && copy.roles == [.agent, .operator] && copy.services == ["orders", "billing"])
        #expect(copy.ownerGroups.isEmpty && copy.isDeveloper && copy.writesElsewhere != nil)
    }

    @Test func equalityIsFieldByFieldAndEqualPrincipalsHashAlike() {
        func make() -> Principal { Principal(name: "ci", roles: [.agent, .auditor], services: ["orders"], ownerGroups: ["payments"]) }
        let a = make()
        let b = make()
        #expect(a == b && a.hashValue == b.hashValue)
        let changes: [(inout Principal) -> Void] = [
            { $0.name = "cd" }, { $0.roles.remove(.auditor) }, { $0.services = [] }, { $0.ownerGroups.insert("x") },
            { $0.isDeveloper = true }, { $0.writesElsewhere = APIError(.notWriter, "elsewhere") },
        ]
        for (index, change) in changes.enumerated() {
            var changed = make()
            change(&changed)
            #expect(changed != a, "change \(index)")
        }
        #expect(Principal.developer == Principal.developer(named: "dev"))
        let developer = Principal.developer(named: "ann")
        #expect(developer.name == "ann" && developer.isDeveloper && developer.roles == Set(Principal.Role.allCases))
        #expect(developer.services.isEmpty && developer.ownerGroups.isEmpty && developer.writesElsewhere == nil)
    }

    @Test func everyOperationEqualsItselfAndNoOther() {
        for (index, operation) in APIOperation.all.enumerated() {
            for (otherIndex, other) in APIOperation.all.enumerated() {
                #expect((operation == other) == (index == otherIndex), "\(operation.name) and \(other.name)")
            }
        }
        #expect(Set(APIOperation.all).count == APIOperation.all.count)
        // Fields read through the reference are the table's.
        #expect(APIOperation.poll.name == "agent/poll" && APIOperation.poll.service == "lockstep.v1.AgentService")
        #expect(APIOperation.poll.method == "Poll" && APIOperation.poll.writes && APIOperation.poll.roles == [.agent])
    }

    /// Two operations made apart (two references) with the same fields are equal and hash alike; one field
    /// different, and they are not equal.
    @Test func operationsMadeApartAreEqualFieldByField() {
        func poll(summary: String = "poll for steps", roles: Set<Principal.Role> = [.agent], path: String? = nil, writes: Bool = true) -> APIOperation {
            APIOperation("agent/poll", summary, roles: roles, "AgentService", "Poll", "PollRequest", "PollResponse", path: path, writes: writes)
        }
        #expect(poll() == APIOperation.poll && poll().hashValue == APIOperation.poll.hashValue)
        #expect(poll() == poll())
        for changed in [poll(summary: "other"), poll(roles: [.operator]), poll(path: "/v1/elsewhere"), poll(writes: false)] {
            #expect(changed != APIOperation.poll)
        }
    }
}

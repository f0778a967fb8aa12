import LockstepCore
import Testing

/// `NodeState` keeps its rarely set fields behind one shared reference (copy on write). A node must
/// still behave as a value: equality, hashing and copies as when the fields were stored in place.
@Suite struct NodeStateTests {
    static let decision = GateDecision(approver: "bob", comment: "ok", at: t(1))

    @Test func aCopyChangedLeavesTheOriginalAsItWas() {
        var original = NodeState(id: NodeID("n"))
        original.approvals.append(Self.decision)
        var copy = original
        copy.approvals.append(GateDecision(approver: "carol", comment: "", at: t(2)))
        copy.exposure.samples.append(MetricSample(name: "errors", valueMicros: 1, windowStart: t(0), windowEnd: t(3), source: "prober"))
        copy.checks.append(CheckResult(check: "c", outcome: .pass, evidence: "", at: t(4)))
        copy.breakGlass = [.freeze]
        copy.lastFailure = "boom"
        copy.rejection = Self.decision
        #expect(original.approvals == [Self.decision])
        #expect(original.exposure.samples.isEmpty && original.checks.isEmpty && original.breakGlass.isEmpty)
        #expect(original.lastFailure == nil && original.rejection == nil)
        #expect(copy.approvals.count == 2 && copy.exposure.samples.count == 1 && copy.checks.count == 1)
        #expect(copy != original)
    }

    @Test func equalityAndHashingGoByTheFieldsNotByWhoHoldsThem() {
        // One built with the fields, one that set them after, one set and then set back.
        let built = NodeState(id: NodeID("n"), lastFailure: "x", approvals: [Self.decision])
        var set = NodeState(id: NodeID("n"))
        set.lastFailure = "x"
        set.approvals = [Self.decision]
        var back = built
        back.progress = StepProgress(node: NodeID("n"), token: FencingToken(1), percent: 5, message: "m")
        back.progress = nil
        for node in [set, back] {
            #expect(node == built)
            #expect(node.hashValue == built.hashValue)
        }
        #expect(Set([built, set, back]).count == 1)
        var other = built
        other.exposure.awaitingDecision = true
        #expect(other != built)
    }

    @Test func theDefaultsReadAsBefore() {
        let node = NodeState(id: NodeID("n"))
        #expect(node.lastFailure == nil && node.approvals.isEmpty && node.rejection == nil && node.progress == nil)
        #expect(node.exposure == ExposureProgress() && node.breakGlass.isEmpty && node.checks.isEmpty)
        #expect(node == NodeState(id: NodeID("n"), exposure: ExposureProgress()))
    }
}

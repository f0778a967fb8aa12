@testable import LockstepH2
import Testing

/// The work of a header block, bounded before its fields become Strings (`H2HeaderBudget`).
@Suite struct H2HeaderBudgetTests {
    let limits: H2Limits = {
        var limits = H2Limits()
        limits.headerListBytesMax = 1_000
        limits.headerFieldsMax = 10
        return limits
    }()

    @Test func fieldsAreKeptWithinTheLimitsDroppedPastThemAndAbusePastFourTimesThem() {
        var budget = H2HeaderBudget()
        // 100 + 368 + 32 = 500 bytes counted a field: two fit 1,000 exactly.
        #expect(budget.count(nameBytes: 100, valueBytes: 368, limits: limits) == .keep)
        #expect(budget.count(nameBytes: 100, valueBytes: 368, limits: limits) == .keep)
        #expect(budget.count(nameBytes: 0, valueBytes: 0, limits: limits) == .drop)  // 1,032
        #expect(budget.count(nameBytes: 2_000, valueBytes: 936, limits: limits) == .drop)  // 4,000 exactly
        #expect(budget.count(nameBytes: 0, valueBytes: 0, limits: limits) == .abusive)  // 4,032
    }

    @Test func fieldsCountOnTheirOwnAndABlockStartsAgainFromNothing() {
        var budget = H2HeaderBudget()
        for _ in 1...10 { #expect(budget.count(nameBytes: 1, valueBytes: 1, limits: limits) == .keep) }
        for _ in 11...40 { #expect(budget.count(nameBytes: 1, valueBytes: 1, limits: limits) == .drop) }
        #expect(budget.count(nameBytes: 1, valueBytes: 1, limits: limits) == .abusive)  // the 41st field
        budget.reset()
        #expect(budget.count(nameBytes: 1, valueBytes: 1, limits: limits) == .keep)
    }

    @Test func hugeCountsAndLimitsSaturateInsteadOfTrapping() {
        var budget = H2HeaderBudget()
        #expect(budget.count(nameBytes: .max, valueBytes: .max, limits: limits) == .abusive)
        #expect(budget.bytes == .max)
        var unlimited = H2Limits()
        unlimited.headerListBytesMax = .max
        unlimited.headerFieldsMax = .max
        var open = H2HeaderBudget()
        #expect(open.count(nameBytes: .max, valueBytes: .max, limits: unlimited) == .keep)
    }
}

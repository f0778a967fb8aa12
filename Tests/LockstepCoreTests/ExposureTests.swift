import LockstepCore
import Testing

/// A canary: expand, then `rollout` exposed at 1, 10, 50 and 100 % with a 60 s bake after each stage,
/// judged on error_rate (pass ≤ 1 %, marginal ≤ 2 %, at least 3 samples), then contract.
func exposurePlan(onMarginal: MarginalPolicy = .advance, rollback: RollbackSpec? = RollbackSpec(action: "route-back")) -> PlanSnapshot {
    PlanSnapshot(
        name: "canary", version: 1, contentHash: "c0ffee",
        services: [ServiceSpec(name: "orders", owners: ["orders-team"])],
        nodes: [
            NodeSpec(id: NodeID("expand"), services: ["orders"], phase: .expand, action: "apply-schema", rollback: RollbackSpec(action: "drop-schema")),
            NodeSpec(id: NodeID("rollout"), services: ["orders"], phase: .live, action: "route", needs: [NodeID("expand")], rollback: rollback,
                     exposure: ExposureSpec(stages: [1, 10, 50, 100].map(ExposureStage.percent), bakeMillis: 60_000),
                     analysis: AnalysisSpec(metrics: [MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 10_000,
                                                                  marginalMicros: 20_000, minSamples: 3)],
                                            onMarginal: onMarginal)),
            NodeSpec(id: NodeID("contract"), services: ["orders"], phase: .contract, action: "drop-columns", needs: [NodeID("rollout")]),
        ])
}

func exposureStarted(_ plan: PlanSnapshot = exposurePlan()) -> MigrationEvent {
    .migrationStarted(MigrationStarted(migration: migrationID, plan: plan, startedAt: t(0), startedBy: "alice"))
}

func sample(_ value: Int64, _ name: String = "error_rate") -> MetricSample {
    MetricSample(name: name, valueMicros: value, windowStart: t(0), windowEnd: t(60), source: "prometheus")
}

@Suite struct ExposureTests {
    let rollout = NodeID("rollout")

    /// expand done; rollout's first stage (1 %) set by token 1 at 10 s: baking until 70 s.
    var atFirstStage: [MigrationEvent] {
        [exposureStarted(), leased("expand", token: 1), completed("expand", token: 1), leased("rollout", token: 1, at: 10), completed("rollout", token: 1),
         .exposureStageReached(ExposureStageReached(node: rollout, stage: 1, bakeUntil: t(70)))]
    }

    func samples(_ values: [Int64], stage: UInt32 = 1) -> [MigrationEvent] {
        values.map { .metricSampled(MetricSampled(node: rollout, stage: stage, sample: sample($0))) }
    }

    @Test func completingAStagesStepSetsTheStageAndStartsItsBake() {
        let before = [exposureStarted(), leased("expand", token: 1), completed("expand", token: 1), leased("rollout", token: 1, at: 10)]
        let state = MigrationState.given(before)!
        #expect(state.nextStage(of: rollout) == .percent(1))
        #expect(decide(before, .completeStep(node: rollout, token: FencingToken(1)), at: 10) == .accepted([
            completed("rollout", token: 1), .exposureStageReached(ExposureStageReached(node: rollout, stage: 1, bakeUntil: t(70))),
        ]))
        let baking = MigrationState.given(atFirstStage)!
        #expect(baking.node(rollout)?.status == .baking && baking.currentStage(of: rollout) == .percent(1))
        #expect(baking.nodeDisplayStatus(rollout) == .baking && baking.nextBakeEnd == t(70))
        #expect(baking.node(rollout)?.serviceLeases.isHeld == true, "a baking node keeps its services")
        // No step while it bakes, and no judging before the bake is over.
        #expect(decide(atFirstStage, .leaseStep(node: rollout, agent: "a", ttlMillis: 1_000), at: 20)
            == .rejected(.nodeNotReady(rollout, status: .baking, waitingOn: [])))
        #expect(decide(atFirstStage, .evaluateExposure(node: rollout), at: 69) == .rejected(.bakeNotOver(rollout, until: t(70))))
    }

    @Test func passAdvancesToTheNextStageWithTheEvidenceRecorded() {
        let events = atFirstStage + samples([4_000, 6_000, 5_000])
        let decision = decide(events, .evaluateExposure(node: rollout), at: 70)
        let check = exposurePlan().node(rollout)!.analysis!.metrics[0]
        #expect(decision == .accepted([.analysisEvaluated(AnalysisRecord(
            node: rollout, stage: 1, outcome: .pass, decision: .advance,
            evidence: [MetricEvidence(check: check, samples: 3, meanMicros: 5_000, minMicros: 4_000, maxMicros: 6_000, outcome: .pass)],
            planContentHash: "c0ffee"))]))
        guard case .accepted(let recorded) = decision else { return }
        let after = MigrationState.given(events + recorded)!
        #expect(after.node(rollout)?.status == .pending && after.nextStage(of: rollout) == .percent(10) && after.isReady(rollout))
        #expect(after.node(rollout)?.serviceLeases.isHeld == true, "between stages it keeps its services")
        #expect(after.node(rollout)?.attempts == 0, "each stage has its own attempts")
    }

    @Test func theLastStagesPassSucceedsTheNode() {
        var events = [exposureStarted(), leased("expand", token: 1), completed("expand", token: 1)]
        for stage in UInt32(1)...4 {
            events += [leased("rollout", token: UInt64(stage), at: 10), completed("rollout", token: UInt64(stage)),
                       .exposureStageReached(ExposureStageReached(node: rollout, stage: stage, bakeUntil: t(70)))]
            events += samples([1_000, 1_000, 1_000], stage: stage)
            let verdict = decide(events, .evaluateExposure(node: rollout), at: 70)
            guard case .accepted(let recorded) = verdict else { Issue.record("stage \(stage): \(verdict)"); return }
            events += recorded
        }
        let state = MigrationState.given(events)!
        #expect(state.node(rollout)?.status == .succeeded && state.currentStage(of: rollout) == .percent(100))
        #expect(state.isReady(NodeID("contract")))
    }

    @Test func marginalAdvancesWithAWarningOrPausesWhereThePlanSaysSo() {
        let events = atFirstStage + samples([15_000, 15_000, 15_000])
        guard case .accepted(let advance) = decide(events, .evaluateExposure(node: rollout), at: 70),
              case .analysisEvaluated(let record) = advance.first else { Issue.record("no decision"); return }
        #expect(record.outcome == .marginal && record.decision == .advanceWithWarning && advance.count == 1)

        let strict = [exposureStarted(exposurePlan(onMarginal: .pause))] + atFirstStage.dropFirst() + samples([15_000, 15_000, 15_000])
        guard case .accepted(let paused) = decide(strict, .evaluateExposure(node: rollout), at: 70) else { Issue.record("no decision"); return }
        #expect(paused.count == 2)
        guard case .analysisEvaluated(let pausing) = paused[0], case .migrationPaused(let reason, _) = paused[1] else { Issue.record("\(paused)"); return }
        #expect(pausing.outcome == .marginal && pausing.decision == .pause)
        #expect(reason == "the analysis of rollout at stage 1 is marginal and the plan says pause; decide, then resume or abort")
    }

    @Test func tooFewSamplesAreInconclusiveAndPauseThenResumingIsARecordedOverride() {
        let events = atFirstStage + samples([1_000, 1_000])
        guard case .accepted(let paused) = decide(events, .evaluateExposure(node: rollout), at: 70),
              case .analysisEvaluated(let record) = paused[0] else { Issue.record("no decision"); return }
        #expect(record.outcome == .inconclusive && record.decision == .pause && record.evidence[0].samples == 2)
        let state = MigrationState.given(events + paused)!
        #expect(state.status == .paused && state.nodeDisplayStatus(rollout) == .awaitingDecision && state.nextBakeEnd == nil)
        #expect(state.node(rollout)?.serviceLeases.isHeld == true, "a paused exposure keeps its services")
        // A person decides to go on: the resume records the override, and the next stage is ready.
        let resumed = decide(events + paused, .resume, at: 100)
        #expect(resumed == .accepted([.migrationResumed(rearmed: []), .analysisOverridden(node: rollout, stage: 1)]))
        guard case .accepted(let going) = resumed else { return }
        #expect(MigrationState.given(events + paused + going)!.nextStage(of: rollout) == .percent(10))
    }

    @Test func failAbortsAndRollsBackAutomaticallyReturningTheExposureFirst() {
        // Stage 2 (10 %) breaches: error rate 5 %.
        var events = atFirstStage + samples([1_000, 1_000, 1_000])
        guard case .accepted(let first) = decide(events, .evaluateExposure(node: rollout), at: 70) else { Issue.record("stage 1"); return }
        events += first + [leased("rollout", token: 2, at: 80), completed("rollout", token: 2),
                           .exposureStageReached(ExposureStageReached(node: rollout, stage: 2, bakeUntil: t(140)))]
        events += samples([50_000, 40_000, 60_000], stage: 2)
        let decision = decide(events, .evaluateExposure(node: rollout), at: 140)
        guard case .accepted(let recorded) = decision, recorded.count == 2,
              case .analysisEvaluated(let record) = recorded[0], case .migrationAborted(let report) = recorded[1] else {
            Issue.record("\(decision)")
            return
        }
        #expect(record.outcome == .fail && record.decision == .rollback && record.evidence[0].meanMicros == 50_000)
        #expect(report.trigger == .metric && report.reason == "the analysis of rollout failed at stage 10 (error_rate)")
        // The exposure is undone first (the most recent), then what came before it.
        #expect(report.rollback == [rollout, NodeID("expand")] && report.skipped == [NodeID("contract")])
        let aborting = MigrationState.given(events + recorded)!
        #expect(aborting.status == .aborting && aborting.rollbackQueue.first == rollout)
        #expect(aborting.plan.node(rollout)?.exposure?.start == .percent(0))
    }

    @Test func anExposureNodeWithoutARollbackActionIsStillUndone() {
        let plan = exposurePlan(rollback: nil)
        let events = [exposureStarted(plan)] + atFirstStage.dropFirst()
        guard case .accepted(let aborted) = decide(events, .abort(reason: "stop"), at: 20), case .migrationAborted(let report) = aborted[0] else {
            Issue.record("no abort")
            return
        }
        #expect(report.rollback == [rollout, NodeID("expand")] && report.nothingToUndo.isEmpty && report.trigger == .operator)
    }

    @Test func samplesAreTakenOnlyDuringABakeOnlyForJudgedMetricsAndOnlyUpToTheLimit() {
        #expect(decide(atFirstStage, .recordMetric(node: rollout, sample: sample(1_000)), at: 20)
            == .accepted([.metricSampled(MetricSampled(node: rollout, stage: 1, sample: sample(1_000)))]))
        #expect(decide(atFirstStage, .recordMetric(node: rollout, sample: sample(1_000, "latency_ms")), at: 20)
            == .rejected(.invalidArgument("the analysis of rollout judges error_rate, not latency_ms")))
        #expect(decide(atFirstStage, .recordMetric(node: NodeID("expand"), sample: sample(1_000)), at: 20) == .rejected(.noAnalysis(NodeID("expand"))))
        let notYet = Array(atFirstStage.prefix(4))
        #expect(decide(notYet, .recordMetric(node: rollout, sample: sample(1_000)), at: 15) == .rejected(.notBaking(rollout, status: "running")))
        var backwards = sample(1_000)
        backwards.windowEnd = t(-1)
        #expect(decide(atFirstStage, .recordMetric(node: rollout, sample: backwards), at: 20)
            == .rejected(.invalidArgument("the sample's window ends (\(t(-1))) before it starts (\(t(0)))")))
        let full = atFirstStage + samples(Array(repeating: 1_000, count: CoreLimits.metricSamplesPerBakeMax))
        #expect(decide(full, .recordMetric(node: rollout, sample: sample(1_000)), at: 20)
            == .rejected(.tooManySamples(rollout, limit: CoreLimits.metricSamplesPerBakeMax)))
    }

    @Test func aSampleAfterTheBakeEndedIsRefusedAndTheGateStaysDecidedBetweenStages() {
        #expect(decide(atFirstStage, .recordMetric(node: rollout, sample: sample(1_000)), at: 71)
            == .rejected(.notBaking(rollout, status: "being judged (its bake ended at \(t(70)))")))
        let events = atFirstStage + samples([1_000, 1_000, 1_000])
        guard case .accepted(let advanced) = decide(events, .evaluateExposure(node: rollout), at: 70) else { Issue.record("no decision"); return }
        // Between stages the node is pending again; its (absent here) gate is not reopened.
        #expect(decide(events + advanced, .approve(node: rollout, approver: "bob", groups: ["orders-team"], comment: "ok"), at: 75)
            == .rejected(.noGate(rollout)))
    }

    @Test func aNodeThatFailsMidRolloutUnderPauseKeepsItsServicesAndIsUndoneFirst() {
        var plan = exposurePlan()
        plan.nodes[1].onFailure = .pause
        plan.nodes.append(NodeSpec(id: NodeID("side"), services: ["ledger"], phase: .custom, action: "x", rollback: RollbackSpec(action: "y")))
        plan.services.append(ServiceSpec(name: "ledger", owners: ["ledger-team"]))
        var events = [exposureStarted(plan)] + atFirstStage.dropFirst() + samples([1_000, 1_000, 1_000])
        guard case .accepted(let advanced) = decide(events, .evaluateExposure(node: rollout), at: 70) else { Issue.record("stage 1"); return }
        // `side` completes while the rollout is under way; then the rollout sets its second stage.
        events += advanced + [leased("side", token: 1, at: 75), completed("side", token: 1), leased("rollout", token: 2, at: 80),
                              completed("rollout", token: 2), .exposureStageReached(ExposureStageReached(node: rollout, stage: 2, bakeUntil: t(140)))]
        events += samples([1_000, 1_000, 1_000], stage: 2)
        guard case .accepted(let second) = decide(events, .evaluateExposure(node: rollout), at: 140) else { Issue.record("stage 2"); return }
        events += second + [leased("rollout", token: 3, at: 150)]
        guard case .accepted(let failing) = decide(events, .failStep(node: rollout, token: FencingToken(3), reason: "boom", retryable: false), at: 155) else {
            Issue.record("no failure")
            return
        }
        let paused = MigrationState.given(events + failing)!
        #expect(paused.status == .paused && paused.node(rollout)?.status == .failed)
        #expect(paused.node(rollout)?.serviceLeases.isHeld == true, "its exposure is still out: it keeps its services")
        guard case .accepted(let aborted) = decide(events + failing, .abort(reason: "stop"), at: 90),
              case .migrationAborted(let report) = aborted.first else { Issue.record("no abort"); return }
        // The exposure moved last in completion order at its newest stage: undone before `side`.
        #expect(report.rollback == [rollout, NodeID("side"), NodeID("expand")], "\(report)")
    }

    @Test func decimalsBecomeMicrosOnlyWithinTheLimit() {
        #expect(MetricSample.micros(0.015) == 15_000 && MetricSample.micros(-2.5) == -2_500_000)
        #expect(MetricSample.micros(0.000_000_6) == 1, "rounded to the nearest millionth")
        #expect(MetricSample.micros(1e9) == CoreLimits.metricMicrosMagnitudeMax)
        #expect(MetricSample.micros(1e9 + 1) == nil && MetricSample.micros(-1e9 - 1) == nil)
        #expect(MetricSample.micros(.nan) == nil && MetricSample.micros(.infinity) == nil)
        // The core refuses a sample beyond the limit however it was made.
        #expect(decide(atFirstStage, .recordMetric(node: rollout, sample: sample(CoreLimits.metricMicrosMagnitudeMax + 1)), at: 20)
            == .rejected(.invalidArgument("metric value \(CoreLimits.metricMicrosMagnitudeMax + 1) µ is beyond ±\(CoreLimits.metricMicrosMagnitudeMax) µ")))
    }

    @Test func evaluationIsTheWorstOfItsMetricsAndIntegerOnly() {
        let analysis = AnalysisSpec(metrics: [
            MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 10_000, marginalMicros: 20_000, minSamples: 1),
            MetricCheck(name: "success", direction: .higherIsBetter, passMicros: 990_000, marginalMicros: 980_000, minSamples: 2),
        ])
        #expect(analysis.evaluate([sample(5_000), sample(995_000, "success"), sample(999_000, "success")]).outcome == .pass)
        #expect(analysis.evaluate([sample(5_000), sample(985_000, "success"), sample(985_000, "success")]).outcome == .marginal)
        #expect(analysis.evaluate([sample(5_000), sample(985_000, "success")]).outcome == .inconclusive)
        #expect(analysis.evaluate([sample(25_000), sample(985_000, "success")]).outcome == .fail, "fail is worse than inconclusive")
        // Boundaries: at the threshold passes; the mean rounds toward zero.
        #expect(analysis.evaluate([sample(10_000), sample(990_000, "success"), sample(990_001, "success")]).outcome == .pass)
        // Extreme values saturate instead of trapping.
        let extreme = analysis.evaluate([sample(.max), sample(.max), sample(990_000, "success"), sample(990_000, "success")])
        #expect(extreme.outcome == .fail)
    }
}

/// The cohort rule: stable (same key, same answer, everywhere) and monotonic (exposed at 10 % stays
/// exposed at every larger percentage), checked over many generated keys.
@Suite struct CohortTests {
    @Test func theRuleIsStableMonotonicAndRoughlyUniform() async {
        var exposedAt10 = 0
        let keys = 20_000
        for index in 0..<keys {
            // Seconds of CPU: the other tests get the thread back now and then (LockstepTestSupport's yieldToOtherTests).
            if index % 500 == 0 { await Task.yield() }
            let key = "user-\(index)"
            let bucket = Cohort.bucket(migration: migrationID, node: NodeID("rollout"), key: key)
            // Stable: computed again (as another replica would), the same.
            #expect(Cohort.bucket(migration: migrationID, node: NodeID("rollout"), key: key) == bucket)
            var wasExposed = false
            for percent in UInt32(0)...100 {
                let exposed = Cohort.isExposed(migration: migrationID, node: NodeID("rollout"), key: key, percent: percent)
                // Monotonic: once inside, inside at every larger percentage.
                #expect(!wasExposed || exposed, "\(key) left the cohort at \(percent) %")
                wasExposed = exposed
            }
            #expect(!Cohort.isExposed(migration: migrationID, node: NodeID("rollout"), key: key, percent: 0))
            #expect(Cohort.isExposed(migration: migrationID, node: NodeID("rollout"), key: key, percent: 100))
            if Cohort.isExposed(migration: migrationID, node: NodeID("rollout"), key: key, percent: 10) { exposedAt10 += 1 }
        }
        // About a tenth (the hash spreads keys evenly); a loose bound, not a statistical test.
        #expect((1_700...2_300).contains(exposedAt10), "\(exposedAt10) of \(keys) exposed at 10 %")
        // Fixed values, so other languages can check their implementation against ours (docs/exposure.md).
        #expect(Cohort.bucket(migration: MigrationID("m1"), node: NodeID("rollout"), key: "user-42") == Self.knownBucket)
    }

    /// Computed independently in Python from the description in docs/exposure.md.
    static let knownBucket: UInt64 = 9_107
}

import LockstepCore
import LockstepWire

// `lockstep history explain` (issue 21, docs/history.md): why a migration, or one of its nodes, is where
// it is, answered from the log: the chain of decisions back to the start, each with what triggered it,
// its evidence and its actor. Drawn only from the migration's events, so any replica or exported history
// gives the same answer.

public enum HistoryExplain {
    /// One link of the chain: the event, and what it says.
    public struct Link: Hashable, Sendable {
        public var sequence: UInt64
        public var at: Instant
        public var actor: String
        public var text: String
    }

    /// The answer: where it is now (`headline`), then the links, newest first, back to the start.
    public struct Explanation: Hashable, Sendable {
        public var headline: String
        public var links: [Link]

        /// Lines for a terminal: the headline, then `  #SEQ TIME ACTOR: text`, each cause after what it caused.
        public var lines: [String] {
            [headline] + links.enumerated().map { index, link in
                "  \(index == 0 ? "" : "← ")#\(link.sequence) \(link.at) \(link.actor): \(link.text)"
            }
        }
    }

    public struct Failure: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Why migration `events` (its stream, in order, with global sequences) is where it is; with `node`,
    /// why that node is.
    public static func explain(_ events: [(sequence: UInt64, event: RecordedEvent)], node: NodeID? = nil) throws(Failure) -> Explanation {
        guard let first = events.first, case .migrationStarted = first.event.event else {
            throw Failure(description: "the history has no start for this migration")
        }
        var state: MigrationState?
        for (_, recorded) in events { state = MigrationState.evolve(state, recorded.event) }
        guard let final = state else { throw Failure(description: "the history has no start for this migration") }
        func link(_ entry: (sequence: UInt64, event: RecordedEvent), _ text: String? = nil) -> Link {
            Link(sequence: entry.sequence, at: entry.event.metadata.recordedAt, actor: entry.event.metadata.actor.description,
                 text: text ?? entry.event.event.summary)
        }
        let start = link(first)
        if let node {
            guard final.node(node) != nil else { throw Failure(description: "migration \(final.id) has no node \(node)") }
            return explain(node: node, in: final, events: events, link: link, start: start)
        }
        var links: [Link] = []
        let last = { (match: (MigrationEvent) -> Bool) in events.last { match($0.event.event) } }
        let reason = final.statusReason.map { ": \($0)" } ?? ""
        let headline = "\(final.id) is \(final.status.rawValue)\(reason) (plan \(final.plan.name)@\(final.plan.version))"
        switch final.status {
        case .succeeded:
            if let settled = last({ if case .migrationSucceeded = $0 { true } else { false } }) { links.append(link(settled)) }
            // Every node done: each node's completion (or skip), in plan order.
            for spec in final.plan.nodes {
                if let done = events.last(where: { entry in
                    if case .stepCompleted(let completed) = entry.event.event { completed.node == spec.id && completed.kind == .forward } else { false }
                }) {
                    links.append(link(done))
                }
            }
        case .rolledBack, .failed, .aborting:
            if let settled = last({ event in
                switch event {
                case .migrationRolledBack, .migrationFailed: true
                default: false
                }
            }) {
                links.append(link(settled))
            }
            if final.status == .failed, let broken = last({ if case .stepFailed(let failed) = $0 { failed.kind == .rollback } else { false } }) {
                links.append(link(broken))
            }
            if let abortIndex = events.lastIndex(where: { if case .migrationAborted = $0.event.event { true } else { false } }) {
                let abort = events[abortIndex]
                links.append(link(abort))
                links += cause(of: abort, before: events[..<abortIndex], link: link)
            }
        case .paused:
            if let pauseIndex = events.lastIndex(where: { if case .migrationPaused = $0.event.event { true } else { false } }) {
                let pause = events[pauseIndex]
                links.append(link(pause))
                links += cause(of: pause, before: events[..<pauseIndex], link: link)
            }
        case .running:
            // What it waits for now: each node not done, with the event that put it there.
            for spec in final.plan.nodes {
                let status = final.nodeDisplayStatus(spec.id)
                guard ![.succeeded, .skipped, .rolledBack, .pending].contains(status) else { continue }
                if let latest = events.last(where: { $0.event.event.reportNode == spec.id }) {
                    links.append(link(latest, "\(spec.id) is \(status.rawValue), since: \(latest.event.event.summary)"))
                }
            }
        }
        // Newest first, as every chain reads.
        if final.status == .succeeded || final.status == .running { links.sort { $0.sequence > $1.sequence } }
        if links.last?.sequence != start.sequence { links.append(start) }
        return Explanation(headline: headline, links: links)
    }

    /// The most links a node's chain lists; the older ones are counted in one line.
    public static let nodeLinksMax = 200

    /// What set off an abort or a pause, from the events before it: its trigger's evidence.
    static func cause(of entry: (sequence: UInt64, event: RecordedEvent), before earlier: ArraySlice<(sequence: UInt64, event: RecordedEvent)>,
                      link: ((sequence: UInt64, event: RecordedEvent), String?) -> Link) -> [Link] {
        var links: [Link] = []
        func latest(_ match: (MigrationEvent) -> Bool) -> (sequence: UInt64, event: RecordedEvent)? { earlier.last { match($0.event.event) } }
        let trigger: AbortTrigger? = if case .migrationAborted(let report) = entry.event.event { report.trigger } else { nil }
        // A rejected gate is a person's decision, whatever recorded the abort after it.
        if trigger == .operator, case .migrationAborted = entry.event.event {
            let before = Array(earlier.suffix(2))
            if let rejected = before.last(where: { if case .approvalRejected = $0.event.event { true } else { false } }),
               before.last.map({ if case .approvalRejected = $0.event.event { true } else if case .migrationPaused = $0.event.event { true } else { false } }) == true {
                links.append(link(rejected, nil))
            }
        }
        switch trigger {
        case .metric?:
            if let analysis = latest({ if case .analysisEvaluated(let record) = $0 { record.outcome == .fail } else { false } }) {
                links.append(link(analysis, nil))
                if case .analysisEvaluated(let record) = analysis.event.event {
                    let samples = earlier.filter { entry in
                        if case .metricSampled(let sampled) = entry.event.event { sampled.node == record.node && sampled.stage == record.stage } else { false }
                    }
                    if let newest = samples.last {
                        links.append(link(newest, "\(samples.count) metric sample(s) of \(record.node) at stage \(record.stage), the newest: \(newest.event.event.summary)"))
                    }
                    if let stage = earlier.last(where: { entry in
                        if case .exposureStageReached(let reached) = entry.event.event { reached.node == record.node && reached.stage == record.stage } else { false }
                    }) {
                        links.append(link(stage, nil))
                    }
                }
            }
        case .retriesExhausted?:
            if let failed = latest({ if case .stepFailed(let failed) = $0 { failed.kind == .forward } else { false } }) {
                links.append(link(failed, nil))
                if case .stepFailed(let last) = failed.event.event {
                    let attempts = earlier.filter { entry in
                        if case .stepFailed(let failed) = entry.event.event { failed.node == last.node && failed.kind == .forward } else { false }
                    }
                    if attempts.count > 1, let firstFailure = attempts.first {
                        links.append(link(firstFailure, "\(attempts.count) failed attempts of \(last.node), the first: \(firstFailure.event.event.summary)"))
                    }
                }
            }
        case .check?:
            if let check = latest({ if case .checkReported(let reported) = $0 { reported.outcome == .fail } else { false } }) { links.append(link(check, nil)) }
        case .deadline?, .operator?:
            break
        case nil:
            // A pause: its cause is the event recorded with it, just before it in the stream (an analysis, a
            // failed step, a rejected gate), when it is one of those.
            if case .migrationPaused = entry.event.event, let previous = earlier.last {
                switch previous.event.event {
                case .analysisEvaluated, .stepFailed, .approvalRejected: if !links.contains(where: { $0.sequence == previous.sequence }) { links.append(link(previous, nil)) }
                default: break
                }
            }
        }
        return links
    }

    /// A node's chain: its events, newest first, back to the start.
    static func explain(node: NodeID, in final: MigrationState, events: [(sequence: UInt64, event: RecordedEvent)],
                        link: ((sequence: UInt64, event: RecordedEvent), String?) -> Link, start: Link) -> Explanation {
        let status = final.nodeDisplayStatus(node)
        var headline = "\(node) of \(final.id) is \(status.rawValue)"
        if let state = final.node(node), state.attempts > 0 { headline += " after \(counted(state.attempts, "attempt"))" }
        var links = events.filter { $0.event.event.reportNode == node }.reversed().map { link($0, nil) }
        // The abort that concerned it.
        let shared = events.filter { entry in
            switch entry.event.event {
            case .migrationAborted(let report): report.rollback.contains(node) || report.skipped.contains(node) || report.abandoned.contains(node)
                || report.failed.contains(node)
            default: false
            }
        }
        links += shared.map { link($0, nil) }
        links.sort { $0.sequence > $1.sequence }
        if links.count > nodeLinksMax, let oldest = links.last {
            let hidden = links.count - nodeLinksMax
            links = Array(links.prefix(nodeLinksMax))
            links.append(Link(sequence: oldest.sequence, at: oldest.at, actor: oldest.actor,
                              text: "… and \(hidden) earlier event(s) of \(node) (history export has every one)"))
        }
        links.append(start)
        return Explanation(headline: headline, links: links)
    }
}

extension Lockstep_V1_ExplainResponse {
    /// The API's form of an explanation (the server's answer, and the CLI's from a log it reads itself).
    public init(_ explanation: HistoryExplain.Explanation) {
        self.init()
        headline = explanation.headline
        links = explanation.links.map { link in
            .with {
                $0.sequence = link.sequence
                $0.atMs = link.at.millisecondsSinceEpoch
                $0.actor = link.actor
                $0.text = link.text
            }
        }
    }
}

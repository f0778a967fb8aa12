import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

// `lockstep plan diff` (issue 20): what applying a plan file would change, for a pull request or a pipeline.

extension PlanCommand {
    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What applying a plan file would change against an applied version: nodes, order, gates, params.",
            discussion: """
                Against the newest applied version of the file's plan, or --against VERSION; on the server, or in \
                --data / --store. One line per difference: `+ node`, `- node`, `~ node ID: FIELD OLD → NEW`, \
                `~ plan: …`, `~ order: …`. Exit status: 0 no change, 9 it differs (or the plan is not applied yet), \
                1 the file has lint errors or there is no such version.
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Argument(help: "The plan file (YAML).") var file: String
        @Option(help: "The applied version to compare with (default: the newest).") var against: UInt64?

        /// The exit status when the file differs from the applied version.
        static let differs: Int32 = 9

        func run() async throws {
            try await reportingFailures { try await compare() }
        }

        func compare() async throws {
            let plan = try usablePlan(file, refusing: "nothing to compare", exitCode: 1).plan
            var versions: [PlanSnapshot] = []
            if let location = try local.location(environment: false) {
                let state = try await withReadOnlyLog(location) { try await History.replay($0) }
                versions = state.plans[plan.name] ?? []
            } else {
                try await server.run { lockstep in versions = try await Self.appliedVersions(of: plan.name, lockstep) }
            }
            let local = plan.hashed()
            guard let newest = versions.last else {
                print("plan \(plan.name) is not applied yet: applying \(file) makes version 1 (content hash \(local.contentHash)) with \(counted(plan.nodes.count, "node"))")
                throw ExitCode(Self.differs)
            }
            let base: PlanSnapshot
            if let against {
                guard let found = versions.first(where: { $0.version == against }) else {
                    throw CommandFailure(message: "plan \(plan.name) has no version \(against) (versions 1 to \(newest.version))", exitCode: 1)
                }
                base = found
            } else {
                base = newest
            }
            let changes = PlanDiff.changes(from: base, to: local)
            if changes.isEmpty {
                print("no changes: \(file) is \(plan.name)@\(base.version) (content hash \(base.contentHash))")
                return
            }
            let next = versions.first { $0.contentHash == local.contentHash }
            print("\(plan.name)@\(base.version) (content hash \(base.contentHash)) → \(file) (content hash \(local.contentHash))"
                + (next.map { ", the same as version \($0.version)" } ?? ""))
            for line in changes { print(line) }
            print(counted(changes.count, "change"))
            throw ExitCode(Self.differs)
        }

        /// Every applied version of `name`, oldest first, from the plan's stream on the server.
        static func appliedVersions(of name: String, _ lockstep: LockstepClient) async throws -> [PlanSnapshot] {
            var versions: [PlanSnapshot] = []
            try await eachEvent(lockstep, stream: RecordedPlanEvent.stream(of: name)) { envelope in
                if case .plan(let recorded) = try EventRecordCodec.domainRecord(envelope.record), case .planApplied(let plan) = recorded.event {
                    versions.append(plan)
                }
            }
            return versions
        }
    }
}

import Foundation
import LockstepCore
import LockstepWire
import SwiftProtobuf

// `lockstep plan diff` (issue 20): what applying a plan file would change against an applied version,
// node by node and field by field, in the plan's own terms (docs/plan-format.md).

/// The differences between two versions of a plan, as lines for a review.
public enum PlanDiff {
    /// One line per difference, in plan order: `+ node ID (…)`, `- node ID`, `~ node ID: FIELD OLD → NEW`,
    /// `~ plan: FIELD OLD → NEW`, `~ order: …`. Empty when the content is the same.
    public static func changes(from old: PlanSnapshot, to new: PlanSnapshot) -> [String] {
        if old.hashed().contentHash == new.hashed().contentHash { return [] }
        var lines: [String] = []
        // The plan's own fields (everything but its nodes, name, version and hash).
        let oldPlan = fields(of: old)
        let newPlan = fields(of: new)
        for change in compare(oldPlan, newPlan, path: "") { lines.append("~ plan: \(change)") }
        let oldIDs = old.nodes.map(\.id)
        let newIDs = new.nodes.map(\.id)
        let oldNodes = nodeFields(of: old)
        let newNodes = nodeFields(of: new)
        for node in new.nodes {
            guard old.node(node.id) != nil else {
                var about = ["\(node.services.count == 1 ? "service" : "services") \(node.services.joined(separator: ", "))", "phase \(node.phase.rawValue)",
                             "action \(node.action)"]
                if !node.needs.isEmpty { about.append("needs \(node.needs.map(\.rawValue).joined(separator: ", "))") }
                if node.approval != nil { about.append("approval gate") }
                lines.append("+ node \(node.id) (\(about.joined(separator: "; ")))")
                continue
            }
            for change in compare(oldNodes[node.id.rawValue], newNodes[node.id.rawValue], path: "") { lines.append("~ node \(node.id): \(change)") }
        }
        for node in old.nodes where new.node(node.id) == nil { lines.append("- node \(node.id)") }
        // The order nodes are listed in (which breaks ties between ready nodes), among those in both.
        let kept = newIDs.filter { oldIDs.contains($0) }
        let keptBefore = oldIDs.filter { newIDs.contains($0) }
        if kept != keptBefore {
            lines.append("~ order: \(kept.map(\.rawValue).joined(separator: ", ")) (was \(keptBefore.map(\.rawValue).joined(separator: ", ")))")
        }
        // The content differs in a way the JSON view cannot show (params that read back equal, such as
        // numbers beyond a double's precision): never "no changes" when applying would make a version.
        if lines.isEmpty {
            for node in new.nodes {
                guard let before = old.node(node.id) else { continue }
                if before.paramsJSON != node.paramsJSON { lines.append("~ node \(node.id): params \(before.paramsJSON) → \(node.paramsJSON)") }
                if before.rollback?.paramsJSON != node.rollback?.paramsJSON {
                    lines.append("~ node \(node.id): rollback params \(before.rollback?.paramsJSON ?? "(none)") → \(node.rollback?.paramsJSON ?? "(none)")")
                }
            }
        }
        if lines.isEmpty { lines.append("~ plan: the content differs (content hash \(old.hashed().contentHash) → \(new.hashed().contentHash))") }
        return lines
    }

    /// A plan's own fields as JSON values (its nodes, identity and hash left out).
    static func fields(of plan: PlanSnapshot) -> [String: Any] {
        var object = json(Lockstep_V1_PlanSnapshot(plan))
        for key in ["nodes", "name", "version", "content_hash"] { object[key] = nil }
        return object
    }

    /// Each node's fields as JSON values by id, its params parsed (so a change inside them is named).
    static func nodeFields(of plan: PlanSnapshot) -> [String: [String: Any]] {
        let nodes = json(Lockstep_V1_PlanSnapshot(plan))["nodes"] as? [[String: Any]] ?? []
        var byID: [String: [String: Any]] = [:]
        for var node in nodes {
            guard let id = node.removeValue(forKey: "id") as? String else { continue }
            for (field, parsed) in [("params_json", "params"), ("rollback_params_json", "rollback_params")] {
                if let text = node.removeValue(forKey: field) as? String {
                    node[parsed] = (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) ?? text
                }
            }
            byID[id] = node
        }
        return byID
    }

    static func json(_ message: some SwiftProtobuf.Message) -> [String: Any] {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        guard let text = try? message.jsonString(options: options),
              let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        else { return [:] }
        return object
    }

    /// `FIELD OLD → NEW` for each leaf that differs, fields in name order.
    static func compare(_ old: Any?, _ new: Any?, path: String) -> [String] {
        if let old = old as? [String: Any], let new = new as? [String: Any] {
            return Set(old.keys).union(new.keys).sorted().flatMap { key in
                compare(old[key], new[key], path: path.isEmpty ? key : "\(path).\(key)")
            }
        }
        let before = render(old)
        let after = render(new)
        return before == after ? [] : ["\(path) \(before) → \(after)"]
    }

    /// A value as JSON text (sorted keys), "(none)" when absent.
    static func render(_ value: Any?) -> String {
        guard let value, !(value is NSNull) else { return "(none)" }
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes]) else {
            return String(describing: value)
        }
        return String(decoding: data, as: UTF8.self)
    }
}

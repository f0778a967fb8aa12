import Foundation
import LockstepCore

// The three forms of `lockstep migration report`: Markdown (for a pull request or a wiki), HTML (one file
// with a Gantt chart of the nodes over time, as inline SVG: no script, nothing fetched), and JSON.

extension MigrationReport {
    /// A duration as people read it: "850ms", "42s", "3m 05s", "2h 04m", "3d 02h".
    public static func durationText(_ millis: Int64) -> String {
        let millis = max(0, millis)
        if millis < 1_000 { return "\(millis)ms" }
        let seconds = millis / 1_000
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3_600 { return "\(seconds / 60)m \(two(seconds % 60))s" }
        if seconds < 86_400 { return "\(seconds / 3_600)h \(two(seconds % 3_600 / 60))m" }
        return "\(seconds / 86_400)d \(two(seconds % 86_400 / 3_600))h"
    }

    /// "+3m 05s": an instant as an offset from the migration's start.
    func offset(_ at: Instant) -> String {
        at < startedAt ? "-" + Self.durationText(Self.elapsed(at, startedAt)) : "+" + Self.durationText(Self.elapsed(startedAt, at))
    }

    var headline: String {
        "\(status)" + (statusReason.isEmpty ? "" : " (\(statusReason))")
    }

    var integrityLine: String {
        let head = "head sequence \(integrity.headSequence), hash \(integrity.headHashHex)"
        return integrity.verified ? "\(head), verified (hash chain and every record checked)" : "\(head), NOT verified: \(integrity.problem)"
    }

    var eventsLine: String {
        guard let first = timeline.first, let last = timeline.last else { return "none" }
        return "\(counted(timeline.count, "event")), sequences \(first.sequence)–\(last.sequence)"
    }

    func durationsText(_ node: NodeSummary) -> String {
        node.durations.isEmpty ? "-" : node.durations.map { "\($0.status) \(Self.durationText($0.millis))" }.joined(separator: ", ")
    }

    // MARK: Markdown

    public var markdown: String {
        func cell(_ text: String) -> String {
            guard !text.isEmpty else { return "-" }
            // Scalar by scalar: a line break of any kind would end the row, a pipe the cell.
            var out = ""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "|": out += "\\|"
                case "\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}": out += " "
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out
        }
        func table(_ header: [String], _ rows: [[String]]) -> [String] {
            ["| " + header.joined(separator: " | ") + " |", "|" + header.map { _ in " --- |" }.joined()]
                + rows.map { "| " + $0.map(cell).joined(separator: " | ") + " |" }
        }
        var lines = [
            "# Migration \(migration): plan \(plan)@\(planVersion)", "",
            "- **Outcome:** \(cell(headline))",
            "- **Started:** \(startedAt) by \(startedBy.isEmpty ? "?" : startedBy)",
            "- **Last event:** \(endedAt) (\(Self.durationText(millis)) after the start)",
            "- **Partially migrated for:** \(Self.durationText(partiallyMigratedMillis))",
            "- **Plan content hash:** `\(planContentHash)`",
            "- **History:** \(integrityLine)",
            "- **Events:** \(eventsLine)", "",
            "## People", "",
        ]
        lines += people.isEmpty ? ["Nobody acted on it."] : table(["When", "Who", "Did", "Node", "Detail"], people.map {
            ["\($0.at) (\(offset($0.at)))", $0.who, $0.action, $0.node, $0.detail]
        })
        lines += ["", "## Nodes", ""]
        lines += table(["Node", "Phase", "Services", "Outcome", "Attempts", "Failed attempts", "Rollback attempts", "Time by status"], nodes.map {
            [$0.node, $0.phase, $0.services.joined(separator: ", "), $0.outcome, String($0.attempts), String($0.failedAttempts),
             String($0.rollbackAttempts), durationsText($0)]
        })
        lines += ["", "## Rollbacks", ""]
        lines += rollbacks.isEmpty ? ["None."] : table(["Started", "Trigger", "Reason", "By", "Outcome", "Took", "Nodes to undo"], rollbacks.map {
            ["\($0.from) (\(offset($0.from)))", $0.trigger, $0.reason, $0.by, $0.outcome, $0.millis.map(Self.durationText) ?? "-", $0.nodes.joined(separator: ", ")]
        })
        lines += ["", "## Analyses and checks", ""]
        lines += judgements.isEmpty ? ["None."] : table(["When", "Node", "Kind", "Outcome", "Evidence"], judgements.map {
            ["\($0.at) (\(offset($0.at)))", $0.node, $0.kind, $0.outcome, $0.evidence]
        })
        lines += ["", "## Time per node", ""]
        lines += spans.isEmpty ? ["No node did anything."] : table(["Node", "Status", "From", "For", "Began at event"], spans.map {
            [$0.node, $0.status, offset($0.from), Self.durationText($0.millis) + ($0.open ? " (still)" : ""), "#\($0.sequence)"]
        })
        lines += ["", "## Timeline (every event)", ""]
        lines += table(["#", "When", "Node", "Event", "Actor", "What"], timeline.map {
            [String($0.sequence), "\($0.at) (\(offset($0.at)))", $0.node, $0.type, $0.actor, $0.summary]
        })
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: JSON

    /// One JSON object, keys sorted, times as ISO 8601 UTC with their milliseconds since the epoch.
    public var json: String {
        func time(_ at: Instant) -> [String: Any] { ["at": at.description, "at_ms": at.millisecondsSinceEpoch] }
        var object: [String: Any] = [
            "migration": migration, "plan": plan, "plan_version": planVersion, "plan_content_hash": planContentHash,
            "started_by": startedBy, "started_at": startedAt.description, "started_at_ms": startedAt.millisecondsSinceEpoch,
            "ended_at": endedAt.description, "ended_at_ms": endedAt.millisecondsSinceEpoch, "duration_ms": millis,
            "status": status, "status_reason": statusReason, "partially_migrated_ms": partiallyMigratedMillis,
        ]
        object["integrity"] = [
            "head_sequence": integrity.headSequence, "head_chain_hash": integrity.headHashHex, "verified": integrity.verified,
            "problem": integrity.problem,
        ] as [String: Any]
        object["people"] = people.map {
            time($0.at).merging(["sequence": $0.sequence, "who": $0.who, "action": $0.action, "node": $0.node, "detail": $0.detail]) { a, _ in a }
        }
        object["nodes"] = nodes.map {
            [
                "node": $0.node, "phase": $0.phase, "services": $0.services, "outcome": $0.outcome, "attempts": $0.attempts,
                "failed_attempts": $0.failedAttempts, "rollback_attempts": $0.rollbackAttempts,
                "durations": $0.durations.map { ["status": $0.status, "ms": $0.millis] as [String: Any] },
            ] as [String: Any]
        }
        object["spans"] = spans.map {
            [
                "node": $0.node, "status": $0.status, "from": $0.from.description, "from_ms": $0.from.millisecondsSinceEpoch,
                "to": $0.to.description, "to_ms": $0.to.millisecondsSinceEpoch, "ms": $0.millis, "open": $0.open, "sequence": $0.sequence,
            ] as [String: Any]
        }
        object["rollbacks"] = rollbacks.map {
            var rollback: [String: Any] = [
                "sequence": $0.sequence, "trigger": $0.trigger, "reason": $0.reason, "by": $0.by, "from": $0.from.description,
                "from_ms": $0.from.millisecondsSinceEpoch, "outcome": $0.outcome, "nodes": $0.nodes,
            ]
            if let to = $0.to, let millis = $0.millis {
                rollback["to"] = to.description
                rollback["to_ms"] = to.millisecondsSinceEpoch
                rollback["ms"] = millis
            }
            return rollback
        }
        object["judgements"] = judgements.map {
            time($0.at).merging(["sequence": $0.sequence, "node": $0.node, "kind": $0.kind, "outcome": $0.outcome, "evidence": $0.evidence]) { a, _ in a }
        }
        object["timeline"] = timeline.map {
            time($0.at).merging(["sequence": $0.sequence, "node": $0.node, "type": $0.type, "actor": $0.actor, "summary": $0.summary]) { a, _ in a }
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    // MARK: HTML

    /// One self-contained page: the summary, a Gantt chart of the nodes over time (inline SVG), and the
    /// tables of the Markdown form. No script and nothing loaded from elsewhere.
    public var html: String {
        func escape(_ text: String) -> String { Self.htmlEscaped(text) }
        func table(_ header: [String], _ rows: [[String]]) -> String {
            "<table><thead><tr>" + header.map { "<th>\(escape($0))</th>" }.joined() + "</tr></thead><tbody>\n"
                + rows.map { "<tr>" + $0.map { "<td>\(escape($0.isEmpty ? "-" : $0))</td>" }.joined() + "</tr>" }.joined(separator: "\n")
                + "\n</tbody></table>"
        }
        var body: [String] = [
            "<h1>Migration \(escape(migration)): plan \(escape(plan))@\(planVersion)</h1>", "<dl>",
            "<dt>Outcome</dt><dd class=\"status-\(escape(status))\">\(escape(headline))</dd>",
            "<dt>Started</dt><dd>\(startedAt) by \(escape(startedBy.isEmpty ? "?" : startedBy))</dd>",
            "<dt>Last event</dt><dd>\(endedAt) (\(Self.durationText(millis)) after the start)</dd>",
            "<dt>Partially migrated for</dt><dd>\(Self.durationText(partiallyMigratedMillis))</dd>",
            "<dt>Plan content hash</dt><dd><code>\(escape(planContentHash))</code></dd>",
            "<dt>History</dt><dd class=\"\(integrity.verified ? "verified" : "unverified")\">\(escape(integrityLine))</dd>",
            "<dt>Events</dt><dd>\(escape(eventsLine))</dd>", "</dl>",
            "<h2>Timeline</h2>", gantt(escape: escape),
            "<h2>People</h2>",
            people.isEmpty ? "<p>Nobody acted on it.</p>" : table(["When", "Who", "Did", "Node", "Detail"], people.map {
                ["\($0.at) (\(offset($0.at)))", $0.who, $0.action, $0.node, $0.detail]
            }),
            "<h2>Nodes</h2>",
            table(["Node", "Phase", "Services", "Outcome", "Attempts", "Failed attempts", "Rollback attempts", "Time by status"], nodes.map {
                [$0.node, $0.phase, $0.services.joined(separator: ", "), $0.outcome, String($0.attempts), String($0.failedAttempts),
                 String($0.rollbackAttempts), durationsText($0)]
            }),
            "<h2>Rollbacks</h2>",
            rollbacks.isEmpty ? "<p>None.</p>" : table(["Started", "Trigger", "Reason", "By", "Outcome", "Took", "Nodes to undo"], rollbacks.map {
                ["\($0.from) (\(offset($0.from)))", $0.trigger, $0.reason, $0.by, $0.outcome, $0.millis.map(Self.durationText) ?? "-",
                 $0.nodes.joined(separator: ", ")]
            }),
            "<h2>Analyses and checks</h2>",
            judgements.isEmpty ? "<p>None.</p>" : table(["When", "Node", "Kind", "Outcome", "Evidence"], judgements.map {
                ["\($0.at) (\(offset($0.at)))", $0.node, $0.kind, $0.outcome, $0.evidence]
            }),
            "<h2>Every event</h2>",
            table(["#", "When", "Node", "Event", "Actor", "What"], timeline.map {
                [String($0.sequence), "\($0.at) (\(offset($0.at)))", $0.node, $0.type, $0.actor, $0.summary]
            }),
        ]
        body.insert("<p class=\"note\">Drawn only from the migration's events; any replica or exported history gives the same report.</p>", at: 1)
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <title>Migration \(escape(migration)): \(escape(plan))@\(planVersion)</title>
            <style>
            body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2330;max-width:80rem}
            table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #d4d8e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
            th{background:#f2f4f8}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
            .verified{color:#1d6b35}.unverified{color:#a3201a;font-weight:600}.note{color:#5b6475}
            svg text{font:12px system-ui,sans-serif}
            </style></head><body>
            \(body.joined(separator: "\n"))
            </body></html>

            """
    }

    /// `text` safe inside HTML and SVG text and attribute values. Scalar by scalar, not character by
    /// character: a character may join a `<` to a scalar before it (U+0600 and `<` are one grapheme), and
    /// a comparison of characters would let it through.
    static func htmlEscaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Colours of the chart's bars, by status.
    static let barColours: [(status: String, colour: String)] = [
        ("waiting_for_services", "#c9ced8"), ("waiting_for_window", "#b8a97c"), ("awaiting_approval", "#f0b429"), ("ready", "#9fb3c8"), ("retry_wait", "#e3803a"),
        ("running", "#2f80ed"), ("checking", "#7c5cd6"), ("baking", "#27ae60"), ("awaiting_decision", "#f2994a"),
        ("paused", "#8d99ae"), ("rolling_back", "#d64545"), ("rejected", "#7a1f1f"),
    ]

    /// The Gantt chart: a row per node, a bar per span, time running left to right from the start.
    func gantt(escape: (String) -> String) -> String {
        let labelWidth = 180.0, chartWidth = 760.0, rowHeight = 22.0, top = 24.0
        let total = Double(max(1, millis))
        let rows = nodes.map(\.node)
        let height = top + Double(rows.count) * rowHeight + 40
        var svg = ["<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"\(Int(labelWidth + chartWidth + 20))\" height=\"\(Int(height))\" aria-label=\"Nodes over time\">"]
        // The time axis: the start, the middle and the end.
        for fraction in [0.0, 0.5, 1.0] {
            let x = labelWidth + fraction * chartWidth
            svg.append("<line x1=\"\(x)\" y1=\"\(top - 6)\" x2=\"\(x)\" y2=\"\(top + Double(rows.count) * rowHeight)\" stroke=\"#d4d8e0\"/>")
            let anchor = fraction == 0 ? "start" : fraction == 1 ? "end" : "middle"
            let label = fraction == 0 ? 0 : fraction == 1 ? millis : millis / 2
            svg.append("<text x=\"\(x)\" y=\"\(top - 10)\" text-anchor=\"\(anchor)\">+\(Self.durationText(label))</text>")
        }
        for (index, node) in rows.enumerated() {
            let y = top + Double(index) * rowHeight
            svg.append("<text x=\"0\" y=\"\(y + 15)\">\(escape(node))</text>")
            for span in spans where span.node == node {
                let from = Double(Self.elapsed(startedAt, span.from))
                let x = labelWidth + max(0, min(1, from / total)) * chartWidth
                let width = max(2, Double(span.millis) / total * chartWidth)
                let colour = Self.barColours.first { $0.status == span.status }?.colour ?? "#555"
                svg.append("<rect x=\"\(x)\" y=\"\(y + 3)\" width=\"\(width)\" height=\"\(rowHeight - 6)\" fill=\"\(colour)\"><title>\(escape("\(node): \(span.status) for \(Self.durationText(span.millis)) from \(offset(span.from)) (event #\(span.sequence))"))</title></rect>")
            }
        }
        // The legend: the statuses that appear.
        var x = 0.0
        let legendY = top + Double(rows.count) * rowHeight + 20
        for (status, colour) in Self.barColours where spans.contains(where: { $0.status == status }) {
            svg.append("<rect x=\"\(x)\" y=\"\(legendY - 10)\" width=\"12\" height=\"12\" fill=\"\(colour)\"/><text x=\"\(x + 16)\" y=\"\(legendY)\">\(status)</text>")
            x += 24 + Double(status.count) * 7
        }
        svg.append("</svg>")
        return svg.joined(separator: "\n")
    }
}

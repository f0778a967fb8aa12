import Yams

/// Turns a YAML value into JSON text with sorted keys and no insignificant whitespace, so the same
/// params always give the same bytes (and the same plan hash).
enum CanonicalJSON {
    static func render(_ node: Node) -> String {
        switch node {
        case .mapping(let mapping):
            let pairs = mapping.map { (key: $0.key.string ?? "", value: $0.value) }
                .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return "{" + pairs.map { quote($0.key) + ":" + render($0.value) }.joined(separator: ",") + "}"
        case .sequence(let sequence):
            return "[" + sequence.map(render).joined(separator: ",") + "]"
        case .scalar(let scalar):
            switch node.tag.description {
            case "tag:yaml.org,2002:null": return "null"
            case "tag:yaml.org,2002:bool": return scalar.string == "true" ? "true" : "false"
            case "tag:yaml.org,2002:int":
                // The strict resolver only tags plain decimal literals as int: write the digits as they are.
                return scalar.string.hasPrefix("+") ? String(scalar.string.dropFirst()) : scalar.string
            default: return quote(scalar.string)
            }
        case .alias:
            return "null"
        }
    }

    /// The first key in `node`, depth first, that JSON could not keep as written: one that is a list or a
    /// mapping (it would be written as an empty key), or one whose text another key of its mapping has
    /// (`1` and `"1"`: JSON would keep one of the two values). Its line and what is wrong.
    static func keyProblem(in node: Node) -> (line: Int, problem: String)? {
        switch node {
        case .mapping(let mapping):
            var seen = Set<String>()
            for (key, value) in mapping {
                guard case .scalar(let scalar) = key else { return (key.mark?.line ?? 0, "have a key that is a list or a mapping; keys are text") }
                guard seen.insert(scalar.string).inserted else { return (key.mark?.line ?? 0, "have the key \"\(scalar.string)\" twice") }
                if let problem = keyProblem(in: value) { return problem }
            }
        case .sequence(let sequence):
            for item in sequence {
                if let problem = keyProblem(in: item) { return problem }
            }
        case .scalar, .alias:
            break
        }
        return nil
    }

    /// A JSON string literal.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

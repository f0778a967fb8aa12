import Yams

/// The YAML subset plans are read with: YAML 1.2-style scalars and no anchors or aliases.
///
/// Yams' default resolver follows YAML 1.1, where `NO` is false, `0755` is octal, `1:30` is base-60
/// (and a long base-60 literal overflows inside Yams and traps). Plans also have no use for anchors
/// and aliases, which let a tiny file expand into an enormous tree. So plans resolve only decimal
/// integers, `true`/`false` and null; everything else is a string; and `&anchor` / `*alias` are refused.
package enum StrictYAML {
    package static let resolver: Resolver = Resolver.basic
        .appending(try! Resolver.Rule(.bool, "^(?:true|false)$"))
        .appending(try! Resolver.Rule(.int, "^[-+]?(?:0|[1-9][0-9]{0,17})$"))
        .appending(try! Resolver.Rule(.null, "^(?:~|null|)$"))

    /// The 1-based line of the first anchor (`&name`) or alias (`*name`) in `yaml`, if any.
    ///
    /// A plain scan of each line: outside quotes and comments, an `&` or `*` followed by a name, where a
    /// node may begin (line start, or after `:`, `-`, `?`, `[`, `{`, `,`). Lines inside block scalars
    /// (`|`, `>`) are text and are skipped.
    package static func firstAnchorOrAlias(in yaml: String) -> Int? {
        var blockIndent: Int?
        for (index, line) in yaml.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let indent = line.prefix { $0 == " " }.count
            if let block = blockIndent {
                if line.allSatisfy({ $0 == " " }) || indent > block { continue }
                blockIndent = nil
            }
            var quote: Character?
            var previous: Character = " "
            var nodeMayStart = true
            let characters = Array(line)
            for (position, character) in characters.enumerated() {
                if let open = quote {
                    if character == open { quote = nil }
                } else if character == "\"" || character == "'" {
                    if nodeMayStart { quote = character }
                } else if character == "#" && (previous == " " || position == 0) {
                    break
                } else if (character == "&" || character == "*") && nodeMayStart,
                          position + 1 < characters.count, !characters[position + 1].isWhitespace {
                    return index + 1
                }
                if !character.isWhitespace {
                    nodeMayStart = ":-?[{,".contains(character) && quote == nil
                }
                previous = character
            }
            let trimmed = line.trimmingTrailingComment()
            if trimmed.hasSuffix("|") || trimmed.hasSuffix(">") || trimmed.hasSuffix("|-") || trimmed.hasSuffix(">-")
                || trimmed.hasSuffix("|+") || trimmed.hasSuffix(">+") {
                blockIndent = indent
            }
        }
        return nil
    }
}

extension Substring {
    /// The line without a trailing `# comment` and trailing spaces (quotes are not considered: used only
    /// to spot block-scalar indicators at the end of a line).
    func trimmingTrailingComment() -> Substring {
        var text = self
        if let hash = text.range(of: " #") { text = text[..<hash.lowerBound] }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}

/// Durations in plan files: an integer and a unit, e.g. `500ms`, `30s`, `10m`, `2h`, `1d`.
public enum PlanDuration {
    /// Milliseconds, or nil when `text` is not a duration this format knows.
    public static func milliseconds(_ text: String) -> Int64? {
        guard case .milliseconds(let millis) = parse(text) else { return nil }
        return millis
    }

    /// What `text` is: a duration, one written as a duration (digits and a unit) too long for
    /// milliseconds to hold ("too long", not "not a duration", is what to say of it), or neither.
    public enum Parsed: Equatable {
        case milliseconds(Int64), overflow, notADuration
    }

    public static func parse(_ text: String) -> Parsed {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            guard !number.isEmpty, number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber) else { continue }
            guard let value = Int64(number) else { return .overflow }
            let (millis, overflow) = value.multipliedReportingOverflow(by: scale)
            return overflow ? .overflow : .milliseconds(millis)
        }
        return .notADuration
    }
}

import Foundation

/// Several runs of one figure: the median is reported, with min and max, because these machines are noisy.
struct Figure {
    var samples: [Double]
    var median: Double {
        let sorted = samples.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
    var min: Double { samples.min() ?? 0 }
    var max: Double { samples.max() ?? 0 }
}

/// Seconds taken by `body`, on the monotonic clock.
func timed<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let start = ContinuousClock.now
    let result = try await body()
    return (result, seconds(ContinuousClock.now - start))
}

/// Seconds taken by `body`, on the monotonic clock.
func timedSync<T>(_ body: () throws -> T) rethrows -> (T, Double) {
    let start = ContinuousClock.now
    let result = try body()
    return (result, seconds(ContinuousClock.now - start))
}

/// `duration` in seconds.
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func format(_ value: Double) -> String {
    if value >= 100_000 { return String(format: "%.0fk", value / 1_000) }
    if value >= 1_000 { return String(format: "%.1fk", value / 1_000) }
    return String(format: "%.0f", value)
}

/// One row of the printed table.
struct Row {
    var name: String
    var ours: Figure
    var reference: Figure
    var referenceName: String
    var target: Double?

    var ratio: Double { reference.median > 0 ? ours.median / reference.median : 0 }

    func cells() -> [String] {
        [name,
         "\(format(ours.median)) [\(format(ours.min))–\(format(ours.max))]",
         "\(format(reference.median)) [\(format(reference.min))–\(format(reference.max))]",
         referenceName,
         String(format: "%.2f×", ratio),
         target.map { String(format: "≥ %.1f× %@", $0, ratio >= $0 ? "met" : "MISSED") } ?? ""]
    }
}

func printTable(_ rows: [Row]) {
    let header = ["figure", "lockstep median [min–max]", "reference median [min–max]", "reference", "ratio", "target"]
    let all = [header] + rows.map { $0.cells() }
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    for (index, row) in all.enumerated() {
        print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: " | "))
        if index == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "-|-")) }
    }
}

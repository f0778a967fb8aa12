/// A point in time on the coordinator's clock, in milliseconds since the Unix epoch.
///
/// The core never reads a clock: every `Instant` it sees came in as a parameter or from an event.
public struct Instant: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    public static func < (lhs: Instant, rhs: Instant) -> Bool {
        lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
    }

    /// This instant moved forward by `milliseconds` (saturating, never traps).
    public func adding(milliseconds: Int64) -> Instant {
        let (sum, overflow) = millisecondsSinceEpoch.addingReportingOverflow(milliseconds)
        return Instant(millisecondsSinceEpoch: overflow ? (milliseconds > 0 ? .max : .min) : sum)
    }

    /// ISO 8601 in UTC with milliseconds, e.g. `2026-01-01T03:45:41.574Z` (proleptic Gregorian calendar).
    public var description: String {
        // Floor division without multiplying back: `days * 86_400_000` overflows at the ends of Int64,
        // and every Int64 (from a request, a stored event) must print without trapping.
        let millis = millisecondsSinceEpoch
        let remainder = millis % 86_400_000
        let days = millis / 86_400_000 - (remainder < 0 ? 1 : 0)
        let inDay = remainder < 0 ? remainder + 86_400_000 : remainder
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(inDay / 3_600_000, 2)):\(pad(inDay / 60_000 % 60, 2))"
            + ":\(pad(inDay / 1_000 % 60, 2)).\(pad(inDay % 1_000, 3))Z"
    }
}

/// The identity of one migration (one run of a plan version).
public struct MigrationID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static func < (lhs: MigrationID, rhs: MigrationID) -> Bool {
        lhs.rawValue.utf8.lexicographicallyPrecedes(rhs.rawValue.utf8)
    }
    public var description: String { rawValue }
}

/// The identity of a node inside a plan.
public struct NodeID: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
}

/// A fencing token: grows strictly with every lease granted for a node; reports must carry the current one.
public struct FencingToken: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: FencingToken, rhs: FencingToken) -> Bool { lhs.rawValue < rhs.rawValue }
    /// The token issued after this one.
    public var next: FencingToken { FencingToken(rawValue &+ 1) }
    public var description: String { String(rawValue) }
}

/// Limits the core enforces on what it accepts. Units are in the names.
public enum CoreLimits {
    /// Longest identifier (migration, node, service, agent, action), in UTF-8 bytes.
    public static let identifierBytesMax = 128
    /// Most nodes in one plan.
    public static let planNodesMax = 1_000
    /// Most services one node may transition at once.
    public static let nodeServicesMax = 16
    /// Most dependencies one node may list.
    public static let nodeNeedsMax = 64
    /// Longest free-text reason (pause, abort, failure), in UTF-8 bytes.
    public static let reasonBytesMax = 1_024
    /// Most attempts a retry policy may allow.
    public static let attemptsMax: UInt32 = 100
    /// Longest step lease, in milliseconds (one day).
    public static let leaseTTLMillisMax: Int64 = 86_400_000
    /// Shortest step lease, in milliseconds.
    public static let leaseTTLMillisMin: Int64 = 100
    /// Largest `params` JSON of one action, in UTF-8 bytes.
    public static let paramsBytesMax = 65_536
    /// Most approvals one gate may require.
    public static let approvalsMax: UInt32 = 16
    /// Most owner groups one plan, service or gate may list.
    public static let ownerGroupsMax = 32
    /// Longest timeout, backoff or deadline, in milliseconds (30 days).
    public static let durationMillisMax: Int64 = 30 * 86_400_000
    /// Fewest attempts a rollback step gets, whatever the node's retry policy says.
    public static let rollbackAttemptsMin: UInt32 = 3
    /// Leases of one node that may expire (its agent lost: killed, partitioned, frozen) without the
    /// attempt counting against the node's retry policy; later expiries count as failed attempts.
    /// A resume that re-arms the node starts the count again.
    public static let agentsLostMax: UInt32 = 3
    /// Most versions kept per plan name.
    public static let planVersionsMax = 10_000
    /// Longest plan description, in UTF-8 bytes.
    public static let descriptionBytesMax = 4_096
    /// Most exposure stages per node.
    public static let exposureStagesMax = 20
    /// Most metrics one analysis judges.
    public static let analysisMetricsMax = 16
    /// Most samples of one metric recorded per node per bake.
    public static let metricSamplesPerBakeMax = 1_000
    /// Latest instant accepted from outside (a metric sample's window), in ms since 1970: 9999-12-31T23:59:59.999Z.
    public static let instantMillisMax: Int64 = 253_402_300_799_999
    /// Largest metric value or threshold, in millionths (±10^15: a billion with six decimals).
    public static let metricMicrosMagnitudeMax: Int64 = 1_000_000_000_000_000
    /// Most freezes declared and not ended at once.
    public static let freezesMax = 1_000
    /// Most services one freeze names (none: every service).
    public static let freezeServicesMax = 64
    /// Windows one level (the plan, a service, a node) may declare.
    public static let windowsPerLevelMax = 16
    /// Offset changes recorded per time zone when a migration starts (about three years of daylight saving).
    public static let zoneOffsetChangesMax = 64
    /// The largest offset from UTC a zone may record, in seconds (18 hours).
    public static let zoneOffsetSecondsMax: Int32 = 64_800
    /// How far ahead, in days, the core looks for a node's windows to open (a weekly schedule repeats within it).
    public static let windowSearchDays = 8
    /// Preflight checks one node may require.
    public static let checksPerNodeMax = 16
    /// After a check did not run (its agent lost, or unable to run it), how long until it is offered again, in milliseconds.
    public static let checkNotRunRetryMillis: Int64 = 5_000
}

extension String {
    /// The longest prefix of at most `limit` UTF-8 bytes that ends on a character's scalar boundary:
    /// cutting bytes blindly can split a scalar, whose replacement character (3 bytes) makes the text
    /// longer than the limit it was cut to, and a refused reason.
    public func prefix(utf8Bytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var bytes = 0
        var scalars = String.UnicodeScalarView()
        for scalar in unicodeScalars {
            let size = UTF8.width(scalar)
            guard bytes + size <= limit else { break }
            bytes += size
            scalars.append(scalar)
        }
        return String(scalars)
    }
}

extension String {
    /// This text as a message may quote it: control characters (C0, DEL, C1), the line and paragraph
    /// separators and the bidirectional controls written as `\u{1B}`, so a value quoted back to whoever
    /// sent it cannot move a terminal's cursor, clear its screen, forge a line of a log or reorder what
    /// is shown. Quoting twice changes nothing (a backslash stays as it is: a message built of quoted
    /// values may be quoted whole again).
    public var quotable: String {
        var out = ""
        for scalar in unicodeScalars {
            switch scalar.value {
            case 0..<0x20, 0x7F...0x9F, 0x061C, 0x200E, 0x200F, 0x2028...0x202E, 0x2066...0x2069:
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

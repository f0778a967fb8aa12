import Foundation
import LockstepCore

/// The one place Lockstep reads a time-zone database (Foundation's, from the machine's tzdata or ICU):
/// the coordinator resolves the zones a plan's windows name into `ZoneOffsets` when a migration starts,
/// and `migration_started` records them. The core and replay never come here (docs/gates.md).
public enum TimeZoneDatabase {
    /// How far ahead of a migration's start its zones' offsets are recorded, in days (about three years;
    /// after the last recorded change the offset stays as it was).
    public static let recordedDays = 1_096

    /// Whether `zone` names a zone this machine knows.
    public static func isKnown(_ zone: String) -> Bool { ChangeWindow.zoneNameProblem(zone) == nil && TimeZone(identifier: zone) != nil }

    /// The zones of `zones` this machine does not know, in the order given.
    public static func unknown(_ zones: [String]) -> [String] { zones.filter { !isKnown($0) } }

    /// `zone`'s offsets from a day before `start` to `recordedDays` after it; nil when the zone is unknown.
    public static func offsets(of zone: String, from start: Instant) -> ZoneOffsets? {
        guard ChangeWindow.zoneNameProblem(zone) == nil, let timeZone = TimeZone(identifier: zone) else { return nil }
        let begin = Date(timeIntervalSince1970: Double(start.millisecondsSinceEpoch) / 1_000 - 86_400)
        let end = begin.addingTimeInterval(Double(recordedDays + 1) * 86_400)
        var offsets = ZoneOffsets(zone: zone, initialOffsetSeconds: Int32(clamping: timeZone.secondsFromGMT(for: begin)))
        var current = offsets.initialOffsetSeconds
        var cursor = begin
        while offsets.changes.count < CoreLimits.zoneOffsetChangesMax, let next = timeZone.nextDaylightSavingTimeTransition(after: cursor), next < end,
              next > cursor {
            cursor = next
            let offset = Int32(clamping: timeZone.secondsFromGMT(for: next))
            guard offset != current else { continue }
            current = offset
            offsets.changes.append(OffsetChange(at: Instant(millisecondsSinceEpoch: Int64((next.timeIntervalSince1970 * 1_000).rounded())),
                                                offsetSeconds: offset))
        }
        return offsets
    }

    /// The offsets of every zone `plan`'s windows name, as a start records them; the unknown zones when
    /// any is not known here.
    public static func offsets(for plan: PlanSnapshot, from start: Instant) -> Result<[ZoneOffsets], UnknownTimeZones> {
        var all: [ZoneOffsets] = []
        var unknown: [String] = []
        for zone in plan.windowZones {
            if let offsets = offsets(of: zone, from: start) { all.append(offsets) } else { unknown.append(zone) }
        }
        return unknown.isEmpty ? .success(all) : .failure(UnknownTimeZones(zones: unknown))
    }
}

/// Zones a plan's windows name that the time-zone database does not know.
public struct UnknownTimeZones: Error, Hashable, Sendable {
    public var zones: [String]
}

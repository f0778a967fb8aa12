// Change windows (docs/gates.md, "Change windows"): the days and local hours, in a named time zone, when a
// node's forward steps may start. The plan, a service and a node may each declare windows; a node's
// forward step may start when every level that declares any has one open. Rollback steps always may.
//
// The core never reads the time-zone database: the coordinator that starts a migration resolves each zone
// its plan names into UTC offsets over the migration's life (`ZoneOffsets`), and `migration_started`
// records them. Whether a window is open is then arithmetic on recorded facts, the same on any machine
// whatever its TZ or tzdata.

/// Days of the week and local hours in a named time zone.
public struct ChangeWindow: Hashable, Sendable, CustomStringConvertible {
    /// Bit 0 is Monday ... bit 6 is Sunday.
    public var days: UInt8
    /// Minutes after local midnight, 0..<1440.
    public var startMinute: UInt16
    /// Minutes after local midnight, 1...1440 (24:00). At or before `startMinute` the window runs past
    /// midnight into the next day (a window opening on Friday at 22:00 and closing at 02:00 is open early on Saturday).
    public var endMinute: UInt16
    /// An IANA time-zone name (`Europe/Berlin`) or `UTC`.
    public var zone: String

    public init(days: UInt8, startMinute: UInt16, endMinute: UInt16, zone: String) {
        self.days = days
        self.startMinute = startMinute
        self.endMinute = endMinute
        self.zone = zone
    }

    public static let minutesPerDay: UInt16 = 1_440
    public static let dayNames = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

    /// The window as a plan writes it, e.g. `Mon-Fri 09:00-16:00 Europe/Berlin` (one spelling per window).
    public var description: String {
        "\(Self.daysText(days)) \(Self.clock(startMinute))-\(Self.clock(endMinute)) \(zone)"
    }

    /// Runs of three or more days as a range, others listed: `Mon-Fri`, `Mon,Wed,Fri`, `Sat,Sun`.
    static func daysText(_ days: UInt8) -> String {
        var parts: [String] = []
        var day = 0
        while day < 7 {
            guard days & (1 << day) != 0 else { day += 1; continue }
            var last = day
            while last + 1 < 7 && days & (1 << (last + 1)) != 0 { last += 1 }
            if last - day >= 2 {
                parts.append("\(dayNames[day])-\(dayNames[last])")
            } else {
                parts.append(contentsOf: dayNames[day...last])
            }
            day = last + 1
        }
        return parts.joined(separator: ",")
    }

    static func clock(_ minute: UInt16) -> String {
        let hours = minute / 60, minutes = minute % 60
        return (hours < 10 ? "0" : "") + String(hours) + ":" + (minutes < 10 ? "0" : "") + String(minutes)
    }

    /// Parses `DAYS HH:MM-HH:MM ZONE` (DAYS: `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`, `daily`; a range may wrap,
    /// `Fri-Mon`); a sentence saying what is wrong otherwise. The zone's spelling is checked, not its existence
    /// (the coordinator checks that against its time-zone database).
    public static func parse(_ text: String) -> Result<ChangeWindow, WindowSyntaxError> {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 3 else {
            return .failure(WindowSyntaxError("window \"\(text.prefix(utf8Bytes: 80).quotable)\" is not DAYS HH:MM-HH:MM ZONE (for example Mon-Fri 09:00-16:00 Europe/Berlin)"))
        }
        var days: UInt8 = 0
        if fields[0].lowercased() == "daily" {
            days = 0x7F
        } else {
            for part in fields[0].split(separator: ",", omittingEmptySubsequences: false) {
                let ends = part.split(separator: "-", omittingEmptySubsequences: false)
                let indices = ends.map { end in dayNames.firstIndex { $0.lowercased() == end.lowercased() } }
                guard (1...2).contains(indices.count), let first = indices[0], let last = indices[indices.count - 1] else {
                    return .failure(WindowSyntaxError("window days \"\(String(fields[0]).prefix(utf8Bytes: 40).quotable)\" must be days (Mon ... Sun) or ranges of them (Mon-Fri), separated by commas, or daily"))
                }
                var day = first
                while true {
                    days |= 1 << day
                    if day == last { break }
                    day = (day + 1) % 7
                }
            }
        }
        let hours = fields[1].split(separator: "-", omittingEmptySubsequences: false)
        guard hours.count == 2, let start = minute(of: hours[0], allowing24: false), let end = minute(of: hours[1], allowing24: true) else {
            return .failure(WindowSyntaxError("window hours \"\(String(fields[1]).prefix(utf8Bytes: 40).quotable)\" must be HH:MM-HH:MM (00:00 to 24:00)"))
        }
        guard start != end else {
            return .failure(WindowSyntaxError("window hours \(fields[1]) open and close at the same minute; for a whole day write 00:00-24:00"))
        }
        let zone = String(fields[2])
        if let problem = zoneNameProblem(zone) { return .failure(WindowSyntaxError(problem)) }
        return .success(ChangeWindow(days: days, startMinute: start, endMinute: end, zone: zone))
    }

    private static func minute(of text: Substring, allowing24: Bool) -> UInt16? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2,
              parts.allSatisfy({ $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }),
              let hours = UInt16(parts[0]), let minutes = UInt16(parts[1]), minutes < 60 else { return nil }
        if hours == 24 && minutes == 0 && allowing24 { return minutesPerDay }
        return hours < 24 ? hours * 60 + minutes : nil
    }

    /// What is wrong with `zone` as a time-zone name, or nil: `UTC`, or IANA-style segments of letters,
    /// digits, `_`, `-` and `+` separated by `/`, at most 64 bytes.
    public static func zoneNameProblem(_ zone: String) -> String? {
        let allowed = zone.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2F || byte == 0x5F || byte == 0x2D || byte == 0x2B
        }
        guard !zone.isEmpty, zone.utf8.count <= 64, allowed, !zone.hasPrefix("/"), !zone.hasSuffix("/"), !zone.contains("//"), !zone.contains("..") else {
            return "time zone \"\(zone.prefix(utf8Bytes: 80).quotable)\" is not a time-zone name such as Europe/Berlin or UTC"
        }
        return nil
    }

    /// Whether the window is open at `instant`, reading local time with `offsets` (UTC when nil).
    public func contains(_ instant: Instant, offsets: ZoneOffsets?) -> Bool {
        let offsetMillis = Int64(offsets?.offsetSeconds(at: instant) ?? 0) * 1_000
        let local = instant.millisecondsSinceEpoch.addingReportingOverflow(offsetMillis)
        guard !local.overflow else { return false }
        let (day, inDay) = Self.floorDivision(local.partialValue, 86_400_000)
        let minute = UInt16(inDay / 60_000)
        // 1970-01-01 was a Thursday (index 3, Monday being 0).
        let weekday = Int(Self.floorDivision(day &+ 3, 7).remainder)
        let openDay = days & (1 << weekday) != 0
        if startMinute < endMinute { return openDay && startMinute <= minute && minute < endMinute }
        let dayBefore = (weekday + 6) % 7
        return (openDay && minute >= startMinute) || (days & (1 << dayBefore) != 0 && minute < endMinute)
    }

    /// Instants near which the window opens or closes, local days `fromDay...toDay` (days since the epoch,
    /// local): each edge's local time read with every offset in force within 18 hours of it (before and
    /// after an offset change, so a local time that happens twice, or not at all, hides no edge). Only
    /// candidates: `MigrationState` checks each one. The caller keeps the days within the years 0...9999.
    func edges(fromDay: Int64, toDay: Int64, offsets: ZoneOffsets?) -> [Instant] {
        var edges: [Instant] = []
        var day = fromDay
        while day <= toDay {
            for minute in [startMinute, endMinute] {
                let local = day * 86_400_000 + Int64(minute) * 60_000
                var seen: [Int32] = []
                for around in [local - 64_800_000, local, local + 64_800_000] {
                    let offset = offsets?.offsetSeconds(at: Instant(millisecondsSinceEpoch: around)) ?? 0
                    guard !seen.contains(offset) else { continue }
                    seen.append(offset)
                    edges.append(Instant(millisecondsSinceEpoch: local - Int64(offset) * 1_000))
                }
            }
            day += 1
        }
        return edges
    }

    static func floorDivision(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = value % divisor
        return remainder < 0 ? (value / divisor - 1, remainder + divisor) : (value / divisor, remainder)
    }
}

/// Why a window's text does not parse.
public struct WindowSyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A time zone's offsets from UTC over a span of time, as the coordinator's time-zone database gave them
/// when a migration started: the offset before the first change, then each change in order.
public struct ZoneOffsets: Hashable, Sendable {
    public var zone: String
    public var initialOffsetSeconds: Int32
    /// Strictly increasing instants, each with the offset from then on.
    public var changes: [OffsetChange]

    public init(zone: String, initialOffsetSeconds: Int32, changes: [OffsetChange] = []) {
        self.zone = zone
        self.initialOffsetSeconds = initialOffsetSeconds
        self.changes = changes
    }

    /// The offset in force at `instant` (binary search over the changes).
    public func offsetSeconds(at instant: Instant) -> Int32 {
        var low = 0, high = changes.count
        while low < high {
            let middle = (low + high) / 2
            if changes[middle].at <= instant { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? initialOffsetSeconds : changes[low - 1].offsetSeconds
    }

    /// What is wrong with these offsets as a record, or nil.
    public func problem() -> String? {
        if let problem = ChangeWindow.zoneNameProblem(zone) { return problem }
        guard changes.count <= CoreLimits.zoneOffsetChangesMax else {
            return "zone \(zone) records \(changes.count) offset changes; the limit is \(CoreLimits.zoneOffsetChangesMax)"
        }
        let limit = CoreLimits.zoneOffsetSecondsMax
        for offset in [initialOffsetSeconds] + changes.map(\.offsetSeconds) where !(-limit...limit).contains(offset) {
            return "zone \(zone) records an offset of \(offset) s; offsets lie within ±\(limit) s"
        }
        for (earlier, later) in zip(changes, changes.dropFirst()) where earlier.at >= later.at {
            return "zone \(zone) records its offset changes out of order (\(earlier.at), then \(later.at))"
        }
        return nil
    }
}

/// From `at` on, the zone is `offsetSeconds` ahead of UTC.
public struct OffsetChange: Hashable, Sendable {
    public var at: Instant
    public var offsetSeconds: Int32
    public init(at: Instant, offsetSeconds: Int32) {
        self.at = at
        self.offsetSeconds = offsetSeconds
    }
}

/// A node's forward step waits for its windows: which are closed, and when they next open together.
public struct WindowWait: Hashable, Sendable {
    /// The closed windows that hold it, as the plan writes them ("A or B" within a level, "; " between levels).
    public var windows: String
    /// When every level next has a window open (nil: not within `CoreLimits.windowSearchDays` days).
    public var opensAt: Instant?
    public init(windows: String, opensAt: Instant?) {
        self.windows = windows
        self.opensAt = opensAt
    }
}

extension PlanSnapshot {
    /// The time zones the plan's windows name, sorted, each once.
    public var windowZones: [String] {
        let all = windows + services.flatMap(\.windows) + nodes.flatMap(\.windows)
        return Array(Set(all.map(\.zone))).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// The levels of windows that apply to `node`'s forward steps: the plan's, each of its services', its
    /// own; only levels that declare any. Each level is open when one of its windows is.
    public func windowLevels(of node: NodeSpec) -> [[ChangeWindow]] {
        var levels: [[ChangeWindow]] = []
        if !windows.isEmpty { levels.append(windows) }
        for index in serviceDeclarations(of: node) where !services[index].windows.isEmpty {
            levels.append(services[index].windows)
        }
        if !node.windows.isEmpty { levels.append(node.windows) }
        return levels
    }
}

extension MigrationState {
    /// The recorded offsets of `zone` (nil when none were recorded: the window reads UTC).
    func offsets(of zone: String) -> ZoneOffsets? { zones.first { $0.zone == zone } }

    /// Whether every level has a window open at `instant`.
    func windowsOpen(_ levels: [[ChangeWindow]], at instant: Instant) -> Bool {
        levels.allSatisfy { level in level.contains { $0.contains(instant, offsets: offsets(of: $0.zone)) } }
    }

    /// The first instant after `now` (within `CoreLimits.windowSearchDays` days) at which `levels` go from
    /// closed to open, or from open to closed: the edges of every window and the zones' offset changes are
    /// the only instants where that can happen, so each is checked.
    func nextWindowChange(_ levels: [[ChangeWindow]], after now: Instant) -> Instant? {
        // (An instant outside the years 1970...9999 has no window edges worth finding; the arithmetic below stays in range.)
        guard (0...CoreLimits.instantMillisMax).contains(now.millisecondsSinceEpoch) else { return nil }
        let horizon = now.adding(milliseconds: Int64(CoreLimits.windowSearchDays) * 86_400_000)
        let (today, _) = ChangeWindow.floorDivision(now.millisecondsSinceEpoch, 86_400_000)
        var candidates: [Instant] = []
        for window in levels.joined() {
            candidates += window.edges(fromDay: today - 1, toDay: today + Int64(CoreLimits.windowSearchDays) + 1, offsets: offsets(of: window.zone))
        }
        for zone in zones { candidates += zone.changes.map(\.at) }
        let openNow = windowsOpen(levels, at: now)
        return candidates.filter { $0 > now && $0 <= horizon }.sorted().first { windowsOpen(levels, at: $0) != openNow }
    }

    /// Whether node `id`'s windows hold its forward step back at `now`: the cheap test (no search for the
    /// next opening) for the grant pass, hand-overs, yields and timers.
    public func windowsClosed(_ id: NodeID, at now: Instant) -> Bool {
        guard plan.hasWindows, let levels = windowLevels(concerning: id) else { return false }
        return !windowsOpen(levels, at: now)
    }

    /// Whether windows concern node `id`'s forward steps: it has some, its migration runs forward (running
    /// or paused), and no admin broke the glass on its windows.
    func windowLevels(concerning id: NodeID) -> [[ChangeWindow]]? {
        guard status == .running || status == .paused, let spec = plan.node(id), node(id)?.breakGlass.contains(.window) != true else { return nil }
        let levels = plan.windowLevels(of: spec)
        return levels.isEmpty ? nil : levels
    }

    /// What holds node `id`'s forward step back at `now` by its windows: nil when they are open, it has
    /// none, an admin broke the glass, or the migration is not running forward.
    public func windowWait(_ id: NodeID, at now: Instant) -> WindowWait? {
        guard let levels = windowLevels(concerning: id), !windowsOpen(levels, at: now) else { return nil }
        let closed = levels.filter { level in !level.contains { $0.contains(now, offsets: offsets(of: $0.zone)) } }
        return WindowWait(windows: closed.map { $0.map(\.description).joined(separator: " or ") }.joined(separator: "; "),
                          opensAt: nextWindowChange(levels, after: now))
    }

    /// The next instant after `now` at which the windows of a node with a forward step to come open or
    /// close: when the coordinator's timer looks again (polls park until then, requests set aside may be
    /// granted, holders that have not started give their services back).
    public func nextWindowChange(after now: Instant) -> Instant? {
        guard plan.hasWindows else { return nil }
        return nodes.compactMap { node -> Instant? in
            guard node.status == .pending, needsSatisfied(node.id), let levels = windowLevels(concerning: node.id) else { return nil }
            // Closed with no opening found within the search: look again at its end (an offset change
            // beyond it may yet open them).
            return nextWindowChange(levels, after: now)
                ?? (windowsOpen(levels, at: now) ? nil : now.adding(milliseconds: Int64(CoreLimits.windowSearchDays) * 86_400_000))
        }.min()
    }
}

/// What holds a node's forward step back at an instant: a freeze in force over its services, or its
/// closed change windows. Rollback steps are never held. The one rule steps, grants, hand-overs,
/// yields, polls and status all read (docs/gates.md).
public enum ForwardHold: Hashable, Sendable {
    case freeze(Freeze)
    case window(WindowWait)

    /// The refusal of `node`'s forward step under this hold.
    public func rejection(of node: NodeID) -> Rejection {
        switch self {
        case .freeze(let freeze): .frozen(node, freeze: freeze.id, until: freeze.until)
        case .window(let wait): .outsideWindow(node, windows: wait.windows, opensAt: wait.opensAt)
        }
    }

    /// When it ends, if that is known (a freeze's end time; a window's opening within the search horizon).
    public var until: Instant? {
        switch self {
        case .freeze(let freeze): freeze.until
        case .window(let wait): wait.opensAt
        }
    }

    /// Why a holder that has not started gives its services back.
    var yieldReason: String {
        switch self {
        case .freeze(let freeze): "freeze \(freeze.id) holds its forward step and it has not started"
        case .window(let wait): "its change window is closed (\(wait.windows)) and it has not started"
        }
    }
}

extension LogState {
    /// What holds node `node` of `migration`'s forward step back at `now`: a freeze first, then its
    /// windows; nil when neither does (or admins broke the glass on both).
    public func forwardHold(_ node: NodeID, of migration: MigrationState, at now: Instant) -> ForwardHold? {
        if let freeze = freeze(holding: node, of: migration, at: now) { return .freeze(freeze) }
        return migration.windowWait(node, at: now).map(ForwardHold.window)
    }

    /// Whether a freeze or closed windows hold node `node` of `migration`'s forward step back at `now`:
    /// `forwardHold` without finding when the hold ends, for the paths that only need to know.
    public func isForwardHeld(_ node: NodeID, of migration: MigrationState, at now: Instant) -> Bool {
        freeze(holding: node, of: migration, at: now) != nil || migration.windowsClosed(node, at: now)
    }
}

extension PlanSnapshot {
    /// What would hold node `node`'s forward step back at `now` by its windows, read with `zones` (for
    /// lint: a node whose windows never open together).
    public func windowWait(of node: NodeID, zones: [ZoneOffsets], at now: Instant) -> WindowWait? {
        windowWaits(zones: zones, at: now)(node)
    }

    /// `windowWait` for any node of the plan, from one migration state built once (lint asks for every node).
    public func windowWaits(zones: [ZoneOffsets], at now: Instant) -> (NodeID) -> WindowWait? {
        let state = MigrationState(started: MigrationStarted(migration: MigrationID("lint"), plan: self, startedAt: now, zones: zones))
        return { state.windowWait($0, at: now) }
    }
}

extension LogState {
    /// Nodes of running migrations whose forward step is ready or waits for its services, held back at
    /// `now` by their closed change windows (the `lockstep_nodes_waiting_for_window` gauge).
    public func nodesWaitingForWindow(at now: Instant) -> Int {
        migrations.values.reduce(0) { count, migration in
            guard migration.status == .running, migration.plan.hasWindows else { return count }
            return count + migration.nodes.filter { node in
                let status = migration.nodeDisplayStatus(node.id)
                return (status == .ready || status == .waitingForServices) && freeze(holding: node.id, of: migration, at: now) == nil
                    && migration.windowsClosed(node.id, at: now)
            }.count
        }
    }
}

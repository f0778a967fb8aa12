// A connection's per-stream bookkeeping, keyed by stream id, without Swift's seeded hashing.

/// Values by HTTP/2 stream id, for the engine's tables of one connection (the slot of each open
/// stream, the handlers still running, the streams whose answer is being sent, whose `closed` is
/// listened to).
///
/// Swift's `Dictionary` hashes every key with SipHash under a per-process seed, which is what makes it
/// safe against keys chosen to collide. A request touched four of these tables by its id (paced writers
/// and peer resets are two more), a dozen look-ups, inserts and removals in all: hashing and the dictionaries' look-ups were 4.2 % of the
/// engine's samples answering inline, 3.5 % of a gRPC call's (`perf`, docs/benchmarks-api-history.md,
/// session 35). Here the id is hashed by one multiplication
/// (Fibonacci hashing) into an open-addressed table with linear probing, kept at most half full.
///
/// The peer chooses the ids, so it could choose ids that collide. What bounds the cost is what bounds
/// the table: a connection's open streams and running handlers are limited (`H2Limits`), so a probe
/// visits at most that many slots, however the ids were chosen. Removals shift the entries after them
/// back (no tombstones), so a table that churns through millions of streams stays as fast as a new one.
/// Id 0 marks an empty slot: it is the connection's own id, never a stream's.
struct StreamIDMap<Value> {
    /// `keys[i] == 0`: slot `i` is empty (and `values[i]` nil). No slots until the first entry (a
    /// connection's tables cost nothing while it is idle).
    private var keys: ContiguousArray<Int32> = []
    private var values: ContiguousArray<Value?> = []
    /// `keys.count - 1`; the capacity is a power of two.
    private var mask = 0
    /// 32 - log2(capacity): the multiplication's top bits are the slot.
    private var shift: UInt32 = 32
    private(set) var count = 0

    /// An empty map, with no storage until its first entry.
    init() {}

    var isEmpty: Bool { count == 0 }

    /// How many entries fit before the map grows (half its slots).
    var capacity: Int { keys.count / 2 }

    /// The slot `id` would sit in with no collision, in a table of 2^(32 - `shift`) slots.
    static func home(_ id: Int32, shift: UInt32) -> Int {
        Int((UInt32(bitPattern: id) &* 0x9E37_79B1) >> shift)
    }

    private func home(_ id: Int32) -> Int { Self.home(id, shift: shift) }

    /// The slot holding `id`, or the empty slot where it would go.
    private func slot(of id: Int32) -> (index: Int, found: Bool) {
        var index = home(id)
        while true {
            let key = keys[index]
            if key == id { return (index, true) }
            if key == 0 { return (index, false) }
            index = (index + 1) & mask
        }
    }

    subscript(id: Int32) -> Value? {
        get {
            guard !isEmpty, id != 0 else { return nil }
            let (index, found) = slot(of: id)
            return found ? values[index] : nil
        }
        set {
            guard let newValue else {
                removeValue(forKey: id)
                return
            }
            // Stream 0 is the connection's: libnghttp2 reports no stream events for it.
            guard id != 0 else { return assertionFailure("stream id 0 is the connection's, not a stream's") }
            if keys.isEmpty { resize(to: 8) }
            var (index, found) = slot(of: id)
            if !found {
                if 2 * (count + 1) > keys.count {
                    resize(to: keys.count * 2)
                    index = slot(of: id).index
                }
                keys[index] = id
                count += 1
            }
            values[index] = newValue
        }
    }

    func contains(_ id: Int32) -> Bool {
        !isEmpty && id != 0 && slot(of: id).found
    }

    /// Removes `id`'s entry, returning its value (nil: there was none).
    @discardableResult
    mutating func removeValue(forKey id: Int32) -> Value? {
        guard !isEmpty, id != 0 else { return nil }
        let (index, found) = slot(of: id)
        guard found else { return nil }
        let value = values[index].take()
        count -= 1
        // Backward shift: each entry after the hole that may move into it (its home is not in the cyclic
        // range between the hole and itself) does, so every entry stays reachable from its home.
        var hole = index
        var next = (hole + 1) & mask
        while keys[next] != 0 {
            let wanted = home(keys[next])
            let stays = hole <= next ? (hole < wanted && wanted <= next) : (hole < wanted || wanted <= next)
            if !stays {
                keys[hole] = keys[next]
                values[hole] = values[next].take()
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = 0
        return value
    }

    /// Empties the map, keeping its capacity.
    mutating func removeAll() {
        guard !isEmpty else { return }
        for index in keys.indices where keys[index] != 0 {
            keys[index] = 0
            values[index] = nil
        }
        count = 0
    }

    /// Calls `body` with each entry, in no particular order, copying nothing.
    func forEach(_ body: (Int32, Value) -> Void) {
        for index in keys.indices {
            if let value = values[index] { body(keys[index], value) }
        }
    }

    /// The entries, in no particular order (an array: for a caller that changes the map as it goes).
    var entries: [(id: Int32, value: Value)] {
        var entries: [(id: Int32, value: Value)] = []
        forEach { entries.append(($0, $1)) }
        return entries
    }

    /// Moves every entry into a table of `slots` slots (a power of two, at least twice the entries).
    private mutating func resize(to slots: Int) {
        let (oldKeys, oldValues) = (keys, values)
        keys = ContiguousArray(repeating: 0, count: slots)
        values = ContiguousArray(repeating: nil, count: slots)
        mask = slots - 1
        shift = UInt32(32 - slots.trailingZeroBitCount)
        for index in oldKeys.indices where oldKeys[index] != 0 {
            let slot = slot(of: oldKeys[index]).index
            keys[slot] = oldKeys[index]
            values[slot] = oldValues[index]
        }
    }
}

extension StreamIDMap: Sendable where Value: Sendable {}

extension StreamIDMap where Value == Void {
    /// As a set of ids: adds `id`.
    mutating func insert(_ id: Int32) { self[id] = () }

    /// As a set of ids: removes `id`.
    mutating func remove(_ id: Int32) { removeValue(forKey: id) }
}

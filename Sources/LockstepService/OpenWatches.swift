import Synchronization

/// The watches open at once, in all and per principal (`APILimits.watchesMax`,
/// `watchesPerPrincipalMax`). A watch holds its place from the moment it is admitted until its events
/// are dropped (the last copy of its `WatchEvents` gone): while it reads a page, while it waits for a
/// client that reads nothing, and while it is parked between events alike.
public final class OpenWatches: Sendable {
    public let openMax: Int
    public let perPrincipalMax: Int
    private let state = Mutex<(open: Int, byOwner: [String: Int])>((0, [:]))

    public init(openMax: Int, perPrincipalMax: Int) {
        self.openMax = openMax
        self.perPrincipalMax = perPrincipalMax
    }

    /// Watches open now.
    public var count: Int { state.withLock { $0.open } }

    /// A place for one more of `owner`'s watches, or nil when every place, or every one of `owner`'s, is taken.
    func admit(_ owner: String) -> Place? {
        let admitted = state.withLock { state in
            let owned = state.byOwner[owner, default: 0]
            guard state.open < openMax, owned < perPrincipalMax else { return false }
            state.open += 1
            state.byOwner[owner] = owned + 1
            return true
        }
        return admitted ? Place(owner: owner, of: self) : nil
    }

    fileprivate func release(_ owner: String) {
        state.withLock { state in
            state.open -= 1
            let owned = state.byOwner[owner, default: 1] - 1
            state.byOwner[owner] = owned > 0 ? owned : nil
        }
    }

    /// One admitted watch's place, given back when the last reference to it goes.
    public final class Place: Sendable {
        let owner: String
        let watches: OpenWatches

        fileprivate init(owner: String, of watches: OpenWatches) {
            self.owner = owner
            self.watches = watches
        }

        deinit {
            watches.release(owner)
        }
    }
}

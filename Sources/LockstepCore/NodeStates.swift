/// A migration's node states in plan order, kept in copy-on-write chunks of `chunkLength` nodes, with
/// the positions of the nodes that hold a step lease.
///
/// A command works on a copy of its migration's state (its bookkeeping folds the events into one), and
/// the fold then changes one or two nodes. With one flat array, that copy retained every field of every
/// node, so a command cost more the longer its plan: about 3,000 retains and releases for 1,000 nodes.
/// Here a copy retains one buffer per chunk, and changing a node copies only its chunk.
///
/// The lease timer asks after every append which nodes hold a lease: `leased` answers from a word of
/// bits per 64 nodes, kept as nodes are changed, instead of a walk over every node.
///
/// It reads and writes as an array does (`RandomAccessCollection`, `MutableCollection`, indices from 0).
/// Every chunk but the last holds `chunkLength` nodes and the bits follow from the nodes, so equal
/// contents have equal stored values: the synthesized equality and hashing go by the contents.
public struct NodeStates: RandomAccessCollection, MutableCollection, Hashable, Sendable, ExpressibleByArrayLiteral {
    /// Nodes per chunk: a power of two, so a node's chunk and place are a shift and a mask.
    public static let chunkLength = 1 << chunkShift
    @usableFromInline static let chunkShift = 5
    @usableFromInline static let placeMask = chunkLength - 1

    @usableFromInline var chunks: [[NodeState]]
    /// Bit `i % 64` of word `i / 64` is set when node `i` holds a step lease.
    @usableFromInline var leaseBits: [UInt64]
    public private(set) var count: Int

    public init() {
        chunks = []
        leaseBits = []
        count = 0
    }

    public init<S: Sequence>(_ nodes: S) where S.Element == NodeState {
        self.init()
        for node in nodes { append(node) }
    }

    public init(arrayLiteral nodes: NodeState...) { self.init(nodes) }

    /// Indices are a plain range: a `for index in nodes.indices` loop holds no copy of the nodes, so
    /// writes in it stay in place.
    public typealias Indices = Range<Int>

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }
    @inlinable public func index(after i: Int) -> Int { i + 1 }
    @inlinable public func index(before i: Int) -> Int { i - 1 }
    @inlinable public var indices: Range<Int> { 0..<count }

    @inlinable public subscript(position: Int) -> NodeState {
        _read {
            precondition(position >= 0 && position < count, "node index \(position) out of range 0..<\(count)")
            yield chunks[position >> Self.chunkShift][position & Self.placeMask]
        }
        _modify {
            precondition(position >= 0 && position < count, "node index \(position) out of range 0..<\(count)")
            let chunk = position >> Self.chunkShift, place = position & Self.placeMask
            defer { markLease(position, held: chunks[chunk][place].lease != nil) }
            yield &chunks[chunk][place]
        }
    }

    public mutating func append(_ node: NodeState) {
        if count & Self.placeMask == 0 {
            chunks.append([])
            chunks[chunks.count - 1].reserveCapacity(Self.chunkLength)
        }
        if count & 63 == 0 { leaseBits.append(0) }
        chunks[chunks.count - 1].append(node)
        count += 1
        markLease(count - 1, held: node.lease != nil)
    }

    @inlinable mutating func markLease(_ position: Int, held: Bool) {
        let bit = UInt64(1) << UInt64(position & 63)
        let word = leaseBits[position >> 6]
        let marked = held ? word | bit : word & ~bit
        if marked != word { leaseBits[position >> 6] = marked }
    }

    /// The positions of the nodes that hold a step lease, in order.
    public var leased: [Int] {
        var positions: [Int] = []
        for (index, word) in leaseBits.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                positions.append(index << 6 | bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return positions
    }
}

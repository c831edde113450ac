import CForklift

/// A multi-producer, multi-consumer FIFO of task nodes, never full.
///
/// The fast path is a bounded lock-free ring (one CAS to push, one to pop; each cell carries a
/// sequence number that says whether it is free or full for the current lap). When the ring is
/// full, nodes go to an overflow list under a lock, which consumers drain once the ring is
/// empty; order between the two is not kept, which no caller relies on.
final class TaskQueue {
    private let cells: UnsafeMutablePointer<fls_ring_cell>
    private let mask: UInt64
    /// Enqueue position at [0], dequeue position at [8]: separate cache lines.
    private let positions: UnsafeMutablePointer<UInt64>
    private let overflowLock = Lock()
    private var overflowHead: UnsafeMutablePointer<fls_node>?
    private var overflowTail: UnsafeMutablePointer<fls_node>?
    /// Nodes in the overflow list; read without the lock to skip it when empty.
    private let overflowCount: UnsafeMutablePointer<UInt64>

    /// - Parameter capacity: ring cells, rounded up to a power of two.
    init(capacity: Int = 4096) {
        var size = 2
        while size < capacity { size <<= 1 }
        cells = .allocate(capacity: size)
        for i in 0..<size { (cells + i).initialize(to: fls_ring_cell(sequence: UInt64(i), item: nil)) }
        mask = UInt64(size - 1)
        positions = .allocate(capacity: 24)
        positions.initialize(repeating: 0, count: 24)
        overflowCount = positions + 16
    }

    deinit {
        cells.deallocate()
        positions.deallocate()
    }

    /// Appends a node. Never fails.
    @inline(__always)
    func push(_ node: UnsafeMutablePointer<fls_node>) {
        if !pushRing(node) { pushOverflow(node) }
    }

    /// Removes the oldest node, or returns nil when empty.
    @inline(__always)
    func pop() -> UnsafeMutablePointer<fls_node>? {
        if let node = popRing() { return node }
        if fls_atomic_load_u64(overflowCount) == 0 { return nil }
        return popOverflow()
    }

    /// Whether the queue looked empty at the moment of the call.
    var isEmpty: Bool {
        fls_atomic_load_u64(positions) == fls_atomic_load_u64(positions + 8) && fls_atomic_load_u64(overflowCount) == 0
    }

    private func pushRing(_ node: UnsafeMutablePointer<fls_node>) -> Bool {
        var position = fls_atomic_load_relaxed_u64(positions)
        while true {
            let cell = cells + Int(position & mask)
            let sequence = fls_atomic_load_u64(Self.sequence(of: cell))
            let difference = Int64(bitPattern: sequence &- position)
            if difference == 0 {
                if fls_atomic_cas_u64(positions, &position, position + 1) {
                    cell.pointee.item = UnsafeMutableRawPointer(node)
                    fls_atomic_store_u64(Self.sequence(of: cell), position + 1)
                    return true
                }
            } else if difference < 0 {
                return false
            } else {
                position = fls_atomic_load_relaxed_u64(positions)
            }
        }
    }

    private func popRing() -> UnsafeMutablePointer<fls_node>? {
        let dequeue = positions + 8
        var position = fls_atomic_load_relaxed_u64(dequeue)
        while true {
            let cell = cells + Int(position & mask)
            let sequence = fls_atomic_load_u64(Self.sequence(of: cell))
            let difference = Int64(bitPattern: sequence &- (position + 1))
            if difference == 0 {
                if fls_atomic_cas_u64(dequeue, &position, position + 1) {
                    let node = cell.pointee.item!.assumingMemoryBound(to: fls_node.self)
                    fls_atomic_store_u64(Self.sequence(of: cell), position + mask + 1)
                    return node
                }
            } else if difference < 0 {
                return nil
            } else {
                position = fls_atomic_load_relaxed_u64(dequeue)
            }
        }
    }

    /// The cell's sequence word, addressed without a Swift access to the whole cell.
    @inline(__always)
    private static func sequence(of cell: UnsafeMutablePointer<fls_ring_cell>) -> UnsafeMutablePointer<UInt64> {
        (UnsafeMutableRawPointer(cell) + MemoryLayout<fls_ring_cell>.offset(of: \fls_ring_cell.sequence)!)
            .assumingMemoryBound(to: UInt64.self)
    }

    private func pushOverflow(_ node: UnsafeMutablePointer<fls_node>) {
        overflowLock.withLock {
            node.pointee.next = nil
            if let tail = overflowTail { tail.pointee.next = node } else { overflowHead = node }
            overflowTail = node
            _ = fls_atomic_add_u64(overflowCount, 1)
        }
    }

    private func popOverflow() -> UnsafeMutablePointer<fls_node>? {
        overflowLock.withLock {
            guard let head = overflowHead else { return nil }
            overflowHead = head.pointee.next
            if overflowHead == nil { overflowTail = nil }
            _ = fls_atomic_sub_u64(overflowCount, 1)
            return head
        }
    }
}

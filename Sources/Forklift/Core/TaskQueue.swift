#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A multi-producer, multi-consumer FIFO of task nodes, never full.
///
/// The fast path is a bounded lock-free ring (one CAS to push, one to pop; each cell carries a
/// sequence number that says whether it is free or full for the current lap). When the ring is
/// full, nodes go to an overflow list under a lock, which consumers drain once the ring is
/// empty; order between the two is not kept, which no caller relies on.
///
/// A value type over raw memory, so using it costs no reference counting; its owner calls
/// `destroy()` once.
struct TaskQueue {
    private let cells: UnsafeMutablePointer<fls_ring_cell>
    private let mask: UInt64
    /// Each on its own cache line: enqueue position [0], dequeue position [8], overflow count
    /// [16] (read without the lock to skip the list when empty), overflow head and tail [24, 25].
    private let positions: UnsafeMutablePointer<UInt64>
    private let overflowMutex: UnsafeMutablePointer<pthread_mutex_t>
    private var overflowCount: UnsafeMutablePointer<UInt64> { positions + 16 }
    private var overflowEnds: UnsafeMutablePointer<UnsafeMutablePointer<fls_node>?> {
        UnsafeMutableRawPointer(positions + 24).assumingMemoryBound(to: UnsafeMutablePointer<fls_node>?.self)
    }

    /// - Parameter capacity: ring cells, rounded up to a power of two.
    init(capacity: Int = 2048) {
        var size = 2
        while size < capacity { size <<= 1 }
        cells = UnsafeMutableRawPointer.allocate(byteCount: size * MemoryLayout<fls_ring_cell>.stride, alignment: 64)
            .bindMemory(to: fls_ring_cell.self, capacity: size)
        for i in 0..<size { (cells + i).initialize(to: fls_ring_cell(sequence: UInt64(i), item: nil, padding: (0, 0, 0, 0, 0, 0))) }
        mask = UInt64(size - 1)
        positions = .allocate(capacity: 32)
        positions.initialize(repeating: 0, count: 32)
        overflowMutex = .allocate(capacity: 1)
        pthread_mutex_init(overflowMutex, nil)
    }

    /// Frees the queue's memory. Nodes still queued are not freed.
    func destroy() {
        pthread_mutex_destroy(overflowMutex)
        overflowMutex.deallocate()
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
                    // The next cell was last written by the consumer that emptied it: start
                    // fetching it now so the next push does not stall on that miss.
                    fls_prefetch_for_write(cells + Int((position + 1) & mask))
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
        pthread_mutex_lock(overflowMutex)
        node.pointee.next = nil
        if let tail = overflowEnds[1] { tail.pointee.next = node } else { overflowEnds[0] = node }
        overflowEnds[1] = node
        _ = fls_atomic_add_u64(overflowCount, 1)
        pthread_mutex_unlock(overflowMutex)
    }

    private func popOverflow() -> UnsafeMutablePointer<fls_node>? {
        pthread_mutex_lock(overflowMutex)
        defer { pthread_mutex_unlock(overflowMutex) }
        guard let head = overflowEnds[0] else { return nil }
        overflowEnds[0] = head.pointee.next
        if overflowEnds[0] == nil { overflowEnds[1] = nil }
        _ = fls_atomic_sub_u64(overflowCount, 1)
        return head
    }
}

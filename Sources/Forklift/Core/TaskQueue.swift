import CForklift

/// A multi-producer, multi-consumer FIFO of task nodes, never full.
///
/// The fast path is a bounded lock-free ring (one CAS to push, one to pop; each cell carries a
/// sequence number that says whether it is free or full for the current lap). When the ring is
/// full, nodes go to an overflow list under a lock, which consumers drain once the ring is
/// empty; order between the two is not kept, which no caller relies on.
///
/// A cell may also carry a small task itself (`pushTask`): its consumer copies it into a node
/// on its own stack (`pop(into:)`, marked `is_cell_copy`), so no node is allocated, written by
/// one core and read by another, and freed for such a task.
///
/// A value type over raw memory, so using it costs no reference counting; its owner calls
/// `destroy()` once.
struct TaskQueue {
    private let cells: UnsafeMutablePointer<fls_ring_cell>
    private let mask: UInt64
    /// Each on its own cache line: enqueue position [0], dequeue position [8], overflow count
    /// [16] (read without the lock to skip the list when empty), overflow head and tail [24, 25]
    /// with the overflow lock's word [26].
    private let positions: UnsafeMutablePointer<UInt64>
    /// Guards the overflow list: a word lock, which spins briefly before it sleeps (its
    /// holders hold it for a few instructions, so a futex sleep would cost more than the wait).
    private let overflowLock: WordLock
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
        for i in 0..<size {
            var cell = fls_ring_cell()
            cell.sequence = UInt64(i)
            (cells + i).initialize(to: cell)
        }
        mask = UInt64(size - 1)
        positions = .allocate(capacity: 32)
        positions.initialize(repeating: 0, count: 32)
        overflowLock = WordLock(word: UnsafeMutableRawPointer(positions + 26).assumingMemoryBound(to: UInt32.self))
    }

    /// Frees the queue's memory. Nodes still queued are not freed.
    func destroy() {
        cells.deallocate()
        positions.deallocate()
    }

    /// Appends a node. Never fails.
    @inline(__always)
    func push(_ node: UnsafeMutablePointer<fls_node>) {
        if !pushRing(node) { pushOverflow(node) }
    }

    /// Appends a task carried by a ring cell itself, without a node: `kind` FLS_NODE_GROUP or an
    /// FLS_NODE_APPLY without a result, an argument of at most `FLS_CELL_INLINE` bytes (copied).
    /// Returns false, queuing nothing, when the ring is full (the caller then queues a node).
    @inline(__always)
    func pushTask(kind: UInt32, _ fn: fl_task_fn, user: UnsafeMutableRawPointer?, owner: UnsafeMutableRawPointer?,
                  arg: UnsafeRawPointer?, length: Int) -> Bool {
        guard let (cell, position) = claimCellForPush() else { return false }
        fls_ring_cell_put_task(cell, kind, fn, user, owner, length > 0 ? arg : nil, UInt32(length))
        publish(cell, position: position)
        return true
    }

    /// Removes the oldest node, or returns nil when empty. A task that a cell carried comes out
    /// as a copy in `scratch` (which is then what this returns): run it before the next pop
    /// into the same scratch, and do not free it.
    @inline(__always)
    func pop(into scratch: UnsafeMutablePointer<fls_node>) -> UnsafeMutablePointer<fls_node>? {
        if let node = popRing(into: scratch) { return node }
        if fls_atomic_load_u64(overflowCount) == 0 { return nil }
        return popOverflow()
    }

    /// `pop(into:)` for a queue that only ever holds nodes (`push`).
    @inline(__always)
    func pop() -> UnsafeMutablePointer<fls_node>? {
        if let node = popRing(into: nil) { return node }
        if fls_atomic_load_u64(overflowCount) == 0 { return nil }
        return popOverflow()
    }

    /// Whether the queue looked empty at the moment of the call.
    var isEmpty: Bool {
        fls_atomic_load_u64(positions) == fls_atomic_load_u64(positions + 8) && fls_atomic_load_u64(overflowCount) == 0
    }

    private func pushRing(_ node: UnsafeMutablePointer<fls_node>) -> Bool {
        guard let (cell, position) = claimCellForPush() else { return false }
        fls_ring_cell_put_node(cell, node)
        publish(cell, position: position)
        return true
    }

    /// Takes the cell at the enqueue position for writing; nil when the ring is full.
    @inline(__always)
    private func claimCellForPush() -> (UnsafeMutablePointer<fls_ring_cell>, UInt64)? {
        var position = fls_atomic_load_relaxed_u64(positions)
        while true {
            let cell = cells + Int(position & mask)
            let sequence = fls_atomic_load_u64(Self.sequence(of: cell))
            let difference = Int64(bitPattern: sequence &- position)
            if difference == 0 {
                if fls_atomic_cas_u64(positions, &position, position + 1) { return (cell, position) }
            } else if difference < 0 {
                return nil
            } else {
                position = fls_atomic_load_relaxed_u64(positions)
            }
        }
    }

    /// Hands a written cell to the consumers.
    @inline(__always)
    private func publish(_ cell: UnsafeMutablePointer<fls_ring_cell>, position: UInt64) {
        fls_atomic_store_u64(Self.sequence(of: cell), position + 1)
        // The next cell was last written by the consumer that emptied it: start fetching it
        // now so the next push does not stall on that miss.
        fls_prefetch_for_write(cells + Int((position + 1) & mask))
    }

    private func popRing(into scratch: UnsafeMutablePointer<fls_node>?) -> UnsafeMutablePointer<fls_node>? {
        let dequeue = positions + 8
        var position = fls_atomic_load_relaxed_u64(dequeue)
        while true {
            let cell = cells + Int(position & mask)
            let sequence = fls_atomic_load_u64(Self.sequence(of: cell))
            let difference = Int64(bitPattern: sequence &- (position + 1))
            if difference == 0 {
                if fls_atomic_cas_u64(dequeue, &position, position + 1) {
                    // Read out before the cell is handed back to the producers.
                    let node = fls_ring_cell_take(cell, scratch)!
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
            if let tail = overflowEnds[1] { tail.pointee.next = node } else { overflowEnds[0] = node }
            overflowEnds[1] = node
            _ = fls_atomic_add_u64(overflowCount, 1)
        }
    }

    private func popOverflow() -> UnsafeMutablePointer<fls_node>? {
        overflowLock.withLock {
            guard let head = overflowEnds[0] else { return nil }
            overflowEnds[0] = head.pointee.next
            if overflowEnds[0] == nil { overflowEnds[1] = nil }
            _ = fls_atomic_sub_u64(overflowCount, 1)
            return head
        }
    }
}

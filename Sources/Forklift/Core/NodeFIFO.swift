import CForklift

/// A multi-producer, single-consumer FIFO of task nodes: unbounded, intrusive (linked through
/// `fls_node.next`), with a wait-free push (one atomic exchange). Strictly first in, first out,
/// which the callback thread relies on for completion order.
///
/// A value type over raw memory; the owner calls `destroy()` once, when empty.
struct NodeFIFO {
    /// [0] head (consumer only), [8] tail (producers): separate cache lines.
    private let ends: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// A permanent node that keeps the list non-empty.
    private let stub: UnsafeMutablePointer<fls_node>

    init() {
        stub = .allocate(capacity: 1)
        stub.initialize(to: fls_node())
        ends = .allocate(capacity: 16)
        ends.initialize(repeating: nil, count: 16)
        ends[0] = UnsafeMutableRawPointer(stub)
        ends[8] = UnsafeMutableRawPointer(stub)
    }

    func destroy() {
        stub.deallocate()
        ends.deallocate()
    }

    private static func next(of node: UnsafeMutablePointer<fls_node>) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        UnsafeMutableRawPointer(node).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)  // `next` is the first field
    }

    /// Appends a node. Any thread.
    @inline(__always)
    func push(_ node: UnsafeMutablePointer<fls_node>) {
        fls_atomic_store_ptr(Self.next(of: node), nil)
        let previous = fls_atomic_exchange_ptr(ends + 8, UnsafeMutableRawPointer(node))!
        fls_atomic_store_ptr(Self.next(of: previous.assumingMemoryBound(to: fls_node.self)), UnsafeMutableRawPointer(node))
    }

    /// Removes the oldest node. Consumer thread only. Returns nil when empty — or, briefly,
    /// while a producer is between its two steps (`isIdle` then says false).
    func pop() -> UnsafeMutablePointer<fls_node>? {
        var head = ends[0]!.assumingMemoryBound(to: fls_node.self)
        var next = fls_atomic_load_ptr(Self.next(of: head))?.assumingMemoryBound(to: fls_node.self)
        if head == stub {
            guard let first = next else { return nil }
            ends[0] = UnsafeMutableRawPointer(first)
            head = first
            next = fls_atomic_load_ptr(Self.next(of: first))?.assumingMemoryBound(to: fls_node.self)
        }
        if let next {
            ends[0] = UnsafeMutableRawPointer(next)
            return head
        }
        guard fls_atomic_load_seq_cst_ptr(ends + 8) == UnsafeMutableRawPointer(head) else { return nil }
        push(stub)
        if let after = fls_atomic_load_ptr(Self.next(of: head))?.assumingMemoryBound(to: fls_node.self) {
            ends[0] = UnsafeMutableRawPointer(after)
            return head
        }
        return nil
    }

    /// Whether nothing is queued and no push is under way (consumer thread only).
    var isIdle: Bool {
        let head = ends[0]!
        return head == UnsafeMutableRawPointer(stub)
            && fls_atomic_load_ptr(Self.next(of: stub)) == nil
            && fls_atomic_load_seq_cst_ptr(ends + 8) == head
    }
}

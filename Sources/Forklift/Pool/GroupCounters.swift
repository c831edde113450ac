import CForklift

/// The counters of a task group, in memory that is recycled but never freed.
///
/// Each cache line holds one counter: [0] wake-up epoch (futex) and waiters, [1] tasks
/// submitted, [2 ..< 2 + slots] tasks completed by worker `i % slots`, and the last line for
/// tasks completed on other threads. A worker writes only its own line, so completions do not
/// contend with each other or with the submitter. Because blocks are never freed, a worker that
/// is still waking waiters after the group's last task can only touch a recycled block — a
/// spurious wake-up that waiters tolerate — never freed memory.
struct GroupCounters {
    static let slots = 32
    private static let line = 8  // UInt64s per cache line
    private static let lines = 2 + slots + 1
    private static let lock = Lock()
    nonisolated(unsafe) private static var free: [UnsafeMutablePointer<UInt64>] = []

    let base: UnsafeMutablePointer<UInt64>

    /// A zeroed block, recycled when possible.
    static func make() -> GroupCounters {
        let block = lock.withLock { free.popLast() } ?? .allocate(capacity: lines * line)
        block.initialize(repeating: 0, count: lines * line)
        return GroupCounters(base: block)
    }

    /// Returns the block for reuse.
    func recycle() {
        Self.lock.withLock { Self.free.append(base) }
    }

    var epoch: UnsafeMutablePointer<UInt32> { UnsafeMutableRawPointer(base).assumingMemoryBound(to: UInt32.self) }
    var waiters: UnsafeMutablePointer<UInt32> { epoch + 1 }
    var submitted: UnsafeMutablePointer<UInt64> { base + Self.line }

    /// The completion counter of worker `slot` (-1: not a worker).
    @inline(__always)
    func completed(_ slot: Int) -> UnsafeMutablePointer<UInt64> {
        base + Self.line * (slot < 0 ? 2 + Self.slots : 2 + slot % Self.slots)
    }

    /// Tasks submitted and not yet completed.
    var pending: UInt64 {
        // Completions are read before submissions: a task counted complete was counted submitted.
        var done: UInt64 = 0
        for slot in -1..<Self.slots { done &+= fls_atomic_load_u64(completed(slot)) }
        return fls_atomic_load_u64(submitted) &- done
    }
}

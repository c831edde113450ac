import CForklift

/// Parks idle threads on a futex without lost wake-ups.
///
/// A waiter calls `prepareWait()`, re-checks its condition, then either `cancelWait()` or
/// `wait(_:until:)`. A notifier changes the condition first, then calls `notifyOne()` or
/// `notifyAll()`. Sequentially consistent ordering between the waiter's registration and the
/// notifier's check guarantees that either the waiter sees the change or the notifier sees
/// the waiter. Notifying costs one fence and one load while nobody waits.
///
/// A value type over raw memory (no reference counting); its owner calls `destroy()` once.
struct EventCount {
    /// [0]: epoch, bumped by each notification; [16]: number of registered waiters.
    private let words: UnsafeMutablePointer<UInt32>

    init() {
        words = .allocate(capacity: 32)  // two words, padded to their own cache lines
        words.initialize(repeating: 0, count: 32)
    }

    /// Frees the memory. No thread may be waiting.
    func destroy() { words.deallocate() }

    private var epoch: UnsafeMutablePointer<UInt32> { words }
    private var waiters: UnsafeMutablePointer<UInt32> { words + 16 }

    /// Registers the caller as a waiter; returns the key for `wait`.
    func prepareWait() -> UInt32 {
        _ = fls_atomic_add_u32(waiters, 1)
        return fls_atomic_load_u32(epoch)
    }

    /// Withdraws a registration made by `prepareWait` whose condition turned out true.
    func cancelWait() {
        _ = fls_atomic_sub_u32(waiters, 1)
    }

    /// Sleeps until a notification after `prepareWait` or the deadline. Returns false on timeout.
    @discardableResult
    func wait(_ key: UInt32, until deadline: Deadline) -> Bool {
        var woke = true
        if fls_atomic_load_u32(epoch) == key {
            woke = fls_futex_wait(epoch, key, deadline.remainingNanoseconds) == 0
        }
        _ = fls_atomic_sub_u32(waiters, 1)
        return woke
    }

    /// Wakes one registered waiter, if any.
    @inline(__always)
    func notifyOne() {
        fls_fence_seq_cst()
        if fls_atomic_load_u32(waiters) != 0 {
            _ = fls_atomic_add_u32(epoch, 1)
            fls_futex_wake(epoch, 1)
        }
    }

    /// Wakes every registered waiter.
    func notifyAll() {
        fls_fence_seq_cst()
        if fls_atomic_load_u32(waiters) != 0 {
            _ = fls_atomic_add_u32(epoch, 1)
            fls_futex_wake(epoch, Int32.max)
        }
    }
}

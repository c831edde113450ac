import CForklift

/// A set of tasks on one pool that can be awaited together (TBB's task_group,
/// libdispatch's dispatch_group). Tasks carry no result handle: the group counts them and
/// keeps the first failure.
final class TaskGroup {
    let pool: Pool
    /// [0] completion epoch (futex), [1] waiters, [2..3] pending tasks (UInt64).
    private let words: UnsafeMutablePointer<UInt32>
    private let failureLock = Lock()
    private var firstFailure: Failure?
    private var failures = 0

    private var epoch: UnsafeMutablePointer<UInt32> { words }
    private var waiters: UnsafeMutablePointer<UInt32> { words + 1 }
    private var pending: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 2).assumingMemoryBound(to: UInt64.self)
    }

    init(pool: Pool) {
        self.pool = pool
        words = .allocate(capacity: 4)
        words.initialize(repeating: 0, count: 4)
    }

    deinit { words.deallocate() }

    /// Queues one task of the group; the argument is copied.
    @inline(__always)
    func submit(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int) throws(Failure) {
        guard let node = TaskNodes.make(kind: UInt32(FLS_NODE_GROUP)) else { throw Failure(FL_ENOMEM, "no memory for a task") }
        do {
            try TaskNodes.copyArgument(node, arg, length)
        } catch {
            TaskNodes.free(node)
            throw error
        }
        node.pointee.fn = fn
        node.pointee.user = user
        node.pointee.owner = Unmanaged.passRetained(self).toOpaque()
        _ = fls_atomic_add_u64(pending, 1)
        do {
            try pool.submit(node)
        } catch {
            _ = fls_atomic_sub_u64(pending, 1)
            Unmanaged<TaskGroup>.fromOpaque(node.pointee.owner!).release()
            TaskNodes.free(node)
            throw error
        }
    }

    /// Runs (or cancels) one task of the group and counts it done. Called by a worker.
    @inline(__always)
    func run(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        if cancelled {
            record(Failure(FL_ECANCELED, "a task of the group was cancelled"))
        } else {
            var slot = ResultSlot.pending
            TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                           slot: &slot, index: 0, cancelled: pool.cancelledFlag)
            if slot.status != FL_OK, let failure = ResultSlot.failure(&slot) { record(failure) }
            ResultSlot.clear(&slot)
        }
        if fls_atomic_sub_u64(pending, 1) == 1 {
            fls_fence_seq_cst()
            if fls_atomic_load_u32(waiters) != 0 {
                _ = fls_atomic_add_u32(epoch, 1)
                fls_futex_wake(epoch, Int32.max)
            }
        }
    }

    private func record(_ failure: Failure) {
        failureLock.withLock {
            failures += 1
            if firstFailure == nil { firstFailure = failure }
        }
    }

    private var isIdle: Bool { fls_atomic_load_u64(pending) == 0 }

    /// Waits until every task submitted so far has completed, then reports (and forgets) the
    /// first failure since the previous wait.
    func wait(until deadline: Deadline) throws(Failure) {
        let done = pool.helpWhileWaiting(until: deadline, isDone: { isIdle }) { slice in
            while !isIdle {
                _ = fls_atomic_add_u32(waiters, 1)
                let key = fls_atomic_load_u32(epoch)
                if !isIdle {
                    let timedOut = fls_futex_wait(epoch, key, slice.remainingNanoseconds) != 0
                    _ = fls_atomic_sub_u32(waiters, 1)
                    if timedOut || slice.hasPassed { return isIdle }
                } else {
                    _ = fls_atomic_sub_u32(waiters, 1)
                }
            }
            return true
        }
        guard done else { throw Failure(FL_ETIMEDOUT, "\(fls_atomic_load_u64(pending)) tasks still pending at the deadline") }
        let outcome: (Failure?, Int) = failureLock.withLock {
            defer { firstFailure = nil; failures = 0 }
            return (firstFailure, failures)
        }
        if let failure = outcome.0 {
            throw Failure(failure.code, "\(outcome.1) task(s) of the group failed; first: \(failure.message)")
        }
    }
}

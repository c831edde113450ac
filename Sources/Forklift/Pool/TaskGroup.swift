import CForklift

/// A set of tasks on one pool that can be awaited together (TBB's task_group,
/// libdispatch's dispatch_group). Tasks carry no result handle: the group counts them and
/// keeps the first failure. Nodes point at the group without retaining it: `fl_group_destroy`
/// waits for every task first.
final class TaskGroup {
    /// Retained for the group's life; used through `_withUnsafeGuaranteedRef` on the hot path.
    private let poolReference: Unmanaged<Pool>
    private let cancelledFlag: UnsafePointer<UInt32>
    private let counters = GroupCounters.make()
    private let failureLock = Lock()
    private var firstFailure: Failure?
    private var failures = 0

    init(pool: Pool) {
        poolReference = Unmanaged.passRetained(pool)
        cancelledFlag = pool.cancelledFlag
    }

    deinit {
        counters.recycle()
        poolReference.release()
    }

    var pool: Pool { poolReference.takeUnretainedValue() }

    /// Queues one task of the group; the argument is copied.
    @inline(__always)
    func submit(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int) throws(Failure) {
        let owner = Unmanaged.passUnretained(self).toOpaque()
        _ = fls_atomic_add_u64(counters.submitted, 1)
        do {
            try poolReference._withUnsafeGuaranteedRef { pool in
                Result { () throws(Failure) in
                    try pool.submitTask(kind: UInt32(FLS_NODE_GROUP), fn, user: user, owner: owner, arg: arg, length: length)
                }
            }.get()
        } catch {
            _ = fls_atomic_add_u64(counters.completed(-1), 1)
            throw error
        }
    }

    /// Runs (or cancels) one task of the group and counts it complete.
    /// - Parameter slot: the calling worker's index, or -1 on another thread.
    @inline(__always)
    func run(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool, slot: Int) {
        if cancelled {
            record(Failure(FL_ECANCELED, "a task of the group was cancelled"))
        } else {
            var result = ResultSlot.pending
            TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                           slot: &result, index: 0, cancelled: cancelledFlag)
            if result.status != FL_OK, let failure = ResultSlot.failure(&result) { record(failure) }
            ResultSlot.discard(&result)
        }
        // From here on only the counter block is touched: once the count is visible, a waiter
        // may return and destroy the group.
        let counters = self.counters
        _ = fls_atomic_add_u64(counters.completed(slot), 1)
        if fls_atomic_load_u32(counters.waiters) != 0 {
            _ = fls_atomic_add_u32(counters.epoch, 1)
            fls_futex_wake(counters.epoch, Int32.max)
        }
    }

    private func record(_ failure: Failure) {
        failureLock.withLock {
            failures += 1
            if firstFailure == nil { firstFailure = failure }
        }
    }

    private var isIdle: Bool { counters.pending == 0 }

    /// Waits until every task submitted so far has completed, then reports (and forgets) the
    /// first failure since the previous wait.
    func wait(until deadline: Deadline) throws(Failure) {
        let done = pool.helpWhileWaiting(until: deadline, isDone: { isIdle }) { slice in
            var spin = SpinWait()
            while !isIdle && spin.count < 2000 { spin.pause() }
            while !isIdle {
                _ = fls_atomic_add_u32(counters.waiters, 1)
                let key = fls_atomic_load_u32(counters.epoch)
                let timedOut = isIdle ? false : fls_futex_wait(counters.epoch, key, slice.remainingNanoseconds) != 0
                _ = fls_atomic_sub_u32(counters.waiters, 1)
                if timedOut || slice.hasPassed { return isIdle }
            }
            return true
        }
        guard done else { throw Failure(FL_ETIMEDOUT, "\(counters.pending) tasks still pending at the deadline") }
        let outcome: (Failure?, Int) = failureLock.withLock {
            defer { firstFailure = nil; failures = 0 }
            return (firstFailure, failures)
        }
        if let failure = outcome.0 {
            throw Failure(failure.code, "\(outcome.1) task(s) of the group failed; first: \(failure.message)")
        }
    }
}

import CForklift

/// How a pool's work moves: where a submission goes, how a worker finds its next node, how
/// parked workers are woken, how a node runs, and how a waiting worker helps. See
/// ARCHITECTURE.md, "Threads" and "Work representation".
extension Pool {
    // MARK: Finding work

    /// The next node for `worker` (nil: any other thread): its own deque first (newest, still
    /// in cache), then the shared queue, then the oldest node of another worker's deque.
    /// A task that a queue cell carried comes out as a copy in `scratch` (see `TaskQueue`).
    @inline(__always)
    func findWork(for worker: PoolWorker?, into scratch: UnsafeMutablePointer<fls_node>) -> UnsafeMutablePointer<fls_node>? {
        if let worker, let node = fls_deque_take(worker.deque) { return node }
        if let node = queue.pop(into: scratch) { return node }
        return steal(startingAfter: worker?.index ?? -1)
    }

    private func steal(startingAfter index: Int) -> UnsafeMutablePointer<fls_node>? {
        guard workerCount > 1 || index < 0 else { return nil }
        var retry = true
        while retry {
            retry = false
            for offset in 1...workerCount {
                let victim = (index + offset + workerCount) % workerCount
                if victim == index { continue }
                var contended: Int32 = 0
                if let node = fls_deque_steal(deques[victim], &contended) { return node }
                if contended != 0 { retry = true }
            }
        }
        return nil
    }

    /// Whether any queue or deque holds work (sequentially consistent loads).
    @inline(__always)
    var hasVisibleWork: Bool {
        if !queue.isEmpty { return true }
        for i in 0..<workerCount where fls_deque_is_empty(deques[i]) == 0 { return true }
        return false
    }

    /// Whether the pool has been terminated.
    var isCancelled: Bool { fls_atomic_load_u32(cancelledFlag) != 0 }

    // MARK: Submission and execution

    /// Queues a node. On failure the node is not queued and still belongs to the caller.
    @inline(__always)
    func submit(_ node: UnsafeMutablePointer<fls_node>) throws(Failure) {
        try admitSubmission()
        if let worker = PoolWorker.current, worker.pool === self, fls_deque_push(worker.deque, node) == 0 {
            // Submitted by one of our own tasks: kept local, stolen if another worker is idle.
        } else {
            queue.push(node)
        }
        wakeWorkerIfNoneSpins()
    }

    /// Queues a small task — `kind` FLS_NODE_GROUP (`owner` the group, not retained) or an
    /// FLS_NODE_APPLY without a result (`owner` nil) — in a ring cell of its own, with no node,
    /// when it can: submitted from outside the pool, its argument (copied) at most
    /// `FLS_CELL_INLINE` bytes, the ring not full. Otherwise it queues a node as `submit` does.
    @inline(__always)
    func submitTask(kind: UInt32, _ fn: fl_task_fn, user: UnsafeMutableRawPointer?, owner: UnsafeMutableRawPointer?,
                    arg: UnsafeRawPointer?, length: Int) throws(Failure) {
        if length <= Int(FLS_CELL_INLINE) && PoolWorker.current?.pool !== self {
            try admitSubmission()
            if queue.pushTask(kind: kind, fn, user: user, owner: owner, arg: arg, length: length) {
                wakeWorkerIfNoneSpins()
                return
            }
            let node = try nodeForTask(kind: kind, fn, user: user, owner: owner, arg: arg, length: length, admitted: true)
            queue.push(node)
            wakeWorkerIfNoneSpins()
            return
        }
        let node = try nodeForTask(kind: kind, fn, user: user, owner: owner, arg: arg, length: length, admitted: false)
        do throws(Failure) {
            try submit(node)
        } catch {
            TaskNodes.free(node)
            throw error
        }
    }

    /// The node of a task that `submitTask` could not queue in a cell. If it was `admitted`
    /// already and no node can be made, the admission is undone (counted finished).
    private func nodeForTask(kind: UInt32, _ fn: fl_task_fn, user: UnsafeMutableRawPointer?, owner: UnsafeMutableRawPointer?,
                             arg: UnsafeRawPointer?, length: Int, admitted: Bool) throws(Failure) -> UnsafeMutablePointer<fls_node> {
        do throws(Failure) {
            let node = try TaskNodes.task(kind: kind, fn, user: user, arg: arg, length: length)
            node.pointee.owner = owner
            return node
        } catch {
            if admitted {
                _ = fls_atomic_add_u64(finishedElsewhere, 1)
                idle.notifyAll()
            }
            throw error
        }
    }

    /// Counts a submission (so a drain waits for it), unless the pool no longer takes any.
    @inline(__always)
    private func admitSubmission() throws(Failure) {
        _ = fls_atomic_add_u64(submittedNodes, 1)
        let current = fls_atomic_load_u32(state)
        if current != Self.running {
            _ = fls_atomic_add_u64(finishedElsewhere, 1)
            idle.notifyAll()
            throw Failure(FL_ESTATE, current == Self.closed ? "pool is closed" : "pool is terminated")
        }
    }

    /// Makes sure some worker will look at the queue: one already spinning will; otherwise
    /// wake one parked worker, unless a wake-up is already on its way. The queue push before
    /// this is sequentially consistent, and so are a spinner's exit and a parking worker's
    /// clearing of `wakePending`, so a worker that stops looking after this check sees the node.
    @inline(__always)
    func wakeWorkerIfNoneSpins() {
        if fls_atomic_load_u32(spinning) == 0 { requestWorker() }
    }

    /// Wakes one parked worker unless a wake-up is already pending.
    @inline(__always)
    func requestWorker() {
        var expected: UInt32 = 0
        if fls_atomic_load_u32(wakePending) == 0 && fls_atomic_cas_u32(wakePending, &expected, 1) {
            idle.notifyOne()
        }
    }

    /// Runs (or, once terminated, cancels) one node and frees it. `worker` is the calling
    /// worker of this pool, or nil on any other thread. (Unmanaged: a strong optional
    /// reference here cost a retain and a release per node.)
    @inline(__always)
    func execute(_ node: UnsafeMutablePointer<fls_node>, by worker: Unmanaged<PoolWorker>?) {
        let cancelled = isCancelled
        let kind = node.pointee.kind
        var handedOff = false
        if kind == FLS_NODE_GROUP {
            let slot = worker?._withUnsafeGuaranteedRef { $0.index } ?? -1
            Unmanaged<TaskGroup>.fromOpaque(node.pointee.owner!)._withUnsafeGuaranteedRef {
                $0.run(node, cancelled: cancelled, slot: slot)
            }
        } else {
            if kind == FLS_NODE_APPLY {
                handedOff = runApply(node, cancelled: cancelled)
            } else if kind == FLS_NODE_CALLBACK_APPLY {
                runCallbackApply(node, cancelled: cancelled)
                handedOff = true
            } else {
                let job = Unmanaged<PoolJob>.fromOpaque(node.pointee.owner!).takeRetainedValue()
                job.run(node: node, cancelled: cancelled)
            }
        }
        if !handedOff && node.pointee.is_cell_copy == 0 { TaskNodes.free(node) }
        if let worker {
            worker._withUnsafeGuaranteedRef { $0.countFinishedNode() }
        } else { _ = fls_atomic_add_u64(finishedElsewhere, 1) }
    }

    /// Runs a callback-only apply and sends its node, now carrying the outcome, to the callback
    /// thread.
    @inline(__always)
    private func runCallbackApply(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        var slot = ResultSlot.pending
        if cancelled {
            ResultSlot.fail(&slot, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled before it ran")
        } else {
            TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                           slot: &slot, index: 0, cancelled: cancelledFlag)
        }
        TaskNodes.releaseArgument(node)
        fls_node_result(node).pointee = slot  // moves ownership of the result into the node
        callbacks.enqueue(node: node)
    }

    /// Runs an apply node. Returns true when the node went on to the callback thread (carrying
    /// its reference to the result), so the caller must not free it.
    @inline(__always)
    private func runApply(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool) -> Bool {
        guard let owner = node.pointee.owner else {
            // Fire and forget: nobody reads the outcome.
            if !cancelled {
                var scratch = ResultSlot.pending
                TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                               slot: &scratch, index: 0, cancelled: cancelledFlag)
                ResultSlot.discard(&scratch)
            }
            return false
        }
        let box = Unmanaged<ResultBox>.fromOpaque(owner)
        let handOff: Bool = box._withUnsafeGuaranteedRef { box in
            if cancelled {
                ResultSlot.fail(box.slots, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled before it ran")
            } else {
                TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg,
                               length: node.pointee.arg_len, slot: box.slots, external: node.pointee.external,
                               externalCapacity: node.pointee.external_cap, index: 0, cancelled: cancelledFlag)
            }
            return box.complete(units: 1) && box.hasCallbacks
        }
        if handOff {
            TaskNodes.releaseArgument(node)
            callbacks.enqueue(node: node)  // carries the node's reference to the result
            return true
        }
        box.release()  // the node's reference
        return false
    }

    /// Waits until `isDone()` or the deadline. On a worker of this pool it runs queued nodes
    /// meanwhile and blocks only in short slices; elsewhere it just calls `block(deadline)`.
    func helpWhileWaiting(until deadline: Deadline, isDone: () -> Bool, block: (Deadline) -> Bool) -> Bool {
        guard let worker = PoolWorker.current, worker.pool === self else { return block(deadline) }
        return TaskNodes.withScratch { scratch in
            while !isDone() {
                if let node = findWork(for: worker, into: scratch) {
                    execute(node, by: Unmanaged.passUnretained(worker))
                    continue
                }
                if deadline.hasPassed { return isDone() }
                _ = block(deadline.earlier(than: Deadline(nanosecondsFromNow: 1_000_000)))
            }
            return true
        }
    }
}

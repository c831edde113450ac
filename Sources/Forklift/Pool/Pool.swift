import CForklift

/// A pool of worker threads with the operations of multiprocessing.Pool.
///
/// Threads: `workerCount` workers (`PoolWorker`) that take task nodes from one shared
/// `TaskQueue`, and one `CallbackThread`. Submissions from any thread push a node and wake one
/// parked worker. A worker that waits for a result of its own pool runs queued nodes meanwhile,
/// so nested submissions never deadlock.
///
/// Life cycle: running → closed (no new work; queued work finishes) or terminated (queued
/// work is cancelled, running tasks finish) → joined (threads ended, callbacks delivered).
final class Pool {
    private static let running: UInt32 = 0
    private static let closed: UInt32 = 1
    private static let terminated: UInt32 = 2

    /// The thread name prefix.
    let name: String
    let workerCount: Int
    let queue = TaskQueue()
    /// Where idle workers park.
    let idle = EventCount()
    let callbacks: CallbackThread
    /// The handle of this pool (0 until registered).
    var handle: UInt64 = 0

    private let initializer: fl_init_fn?
    private let initializerUser: UnsafeMutableRawPointer?
    private let initargs: [UInt8]

    /// Each on its own cache line: [0] state and [1] the cancelled flag (read by tasks through
    /// fl_task_cancelled); [16..17] nodes submitted (UInt64); [32] workers spinning in search
    /// of work; [48..49] nodes finished by threads other than workers (UInt64). Workers count
    /// the nodes they finish in their own line, so no counter is shared per task between the
    /// submitter and the workers.
    private let words: UnsafeMutablePointer<UInt32>
    private var state: UnsafeMutablePointer<UInt32> { words }
    /// Non-zero once the pool is terminated.
    var cancelledFlag: UnsafePointer<UInt32> { UnsafePointer(words + 1) }
    private var submittedNodes: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 16).assumingMemoryBound(to: UInt64.self)
    }
    private var finishedElsewhere: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 48).assumingMemoryBound(to: UInt64.self)
    }
    /// Workers spinning on an empty queue. A submission wakes a parked worker only when nobody
    /// spins, so a busy pool makes no futex calls.
    var spinning: UnsafeMutablePointer<UInt32> { words + 32 }
    /// 1 while a wake-up is on its way to a parked worker: further submissions need not wake
    /// another. Cleared by a worker when it wakes and before it parks, so a wake-up is never lost.
    var wakePending: UnsafeMutablePointer<UInt32> { words + 33 }

    private let lifecycle = Lock()
    private let lifecycleChanged = Condition()
    private var workers: [PoolWorker] = []
    private var initializersReported = 0
    private var initializerFailure: Failure?
    private var exitedWorkers = 0
    private var threadsJoined = false
    private var iterators: [ObjectIdentifier: ImapIterator] = [:]

    private init(workers: Int, name: String, initializer: fl_init_fn?, initializerUser: UnsafeMutableRawPointer?,
                 initargs: [UInt8]) {
        self.workerCount = workers
        self.name = name
        self.initializer = initializer
        self.initializerUser = initializerUser
        self.initargs = initargs
        self.callbacks = CallbackThread(name: "\(name)-cb")
        words = .allocate(capacity: 64)
        words.initialize(repeating: 0, count: 64)
        deques = .allocate(capacity: workers)
    }

    deinit {
        deques.deallocate()
        words.deallocate()
        queue.destroy()
        idle.destroy()
    }

    /// Starts a pool and waits until every worker has run its initializer.
    static func create(workers: Int, name: String, initializer: fl_init_fn?, initializerUser: UnsafeMutableRawPointer?,
                       initargs: [UInt8]) throws(Failure) -> Pool {
        let pool = Pool(workers: workers, name: name, initializer: initializer, initializerUser: initializerUser,
                        initargs: initargs)
        do {
            try pool.callbacks.start()
            // Every worker and its deque exist before any thread starts, so thieves can read
            // `deques` without synchronization.
            let created = try (0..<workers).map { index throws(Failure) in try PoolWorker(pool: pool, index: index) }
            for (index, worker) in created.enumerated() { pool.deques[index] = worker.deque }
            pool.workersSnapshot = created
            for worker in created {
                worker.threadID = try OSThread.start(worker)
                pool.lifecycle.withLock { pool.workers.append(worker) }
            }
        } catch {
            pool.abandon(startedWorkers: pool.lifecycle.withLock { pool.workers.count })
            throw error
        }
        let failure: Failure? = pool.lifecycle.withLock {
            while pool.initializersReported < workers { _ = pool.lifecycleChanged.wait(pool.lifecycle, until: .forever) }
            return pool.initializerFailure
        }
        if let failure {
            pool.abandon(startedWorkers: workers)
            throw failure
        }
        return pool
    }

    /// Tears down a pool whose creation failed.
    private func abandon(startedWorkers: Int) {
        terminate()
        lifecycle.withLock {
            initializersReported = max(initializersReported, startedWorkers)
            while exitedWorkers < startedWorkers { _ = lifecycleChanged.wait(lifecycle, until: .forever) }
        }
        for worker in workers { OSThread.join(worker.threadID) }
        threadsJoined = true
        _ = callbacks.stop(until: .forever)
    }

    // MARK: Workers

    /// Runs the initializer on the calling worker and reports the outcome. Returns false if it failed.
    func runInitializer() -> Bool {
        var failure: Failure?
        if let initializer {
            let code = initargs.withUnsafeBytes { initializer(initializerUser, $0.baseAddress, $0.count) }
            if code != 0 { failure = Failure(FL_EINIT, "worker initializer returned \(code)") }
        }
        lifecycle.withLock {
            initializersReported += 1
            if initializerFailure == nil { initializerFailure = failure }
            lifecycleChanged.broadcast()
        }
        return failure == nil
    }

    /// Called by each worker as it ends.
    func workerExited() {
        lifecycle.withLock {
            exitedWorkers += 1
            lifecycleChanged.broadcast()
        }
    }

    /// Whether workers should end: the pool no longer runs and every submitted node has
    /// finished. (Submissions count before they check the state, so none can slip past.)
    var isWindingDown: Bool {
        guard fls_atomic_load_u32(state) != Self.running else { return false }
        let submitted = fls_atomic_load_u64(submittedNodes)
        var finished = fls_atomic_load_u64(finishedElsewhere)
        for worker in workersSnapshot { finished += worker.finishedNodes }
        return finished == submitted
    }

    /// The workers, for counting; set before any worker starts.
    private var workersSnapshot: [PoolWorker] = []
    /// Each worker's deque, by worker index; set before any worker starts.
    private let deques: UnsafeMutablePointer<UnsafeMutablePointer<fls_deque>>

    // MARK: Finding work

    /// The next node for `worker` (nil: any other thread): its own deque first (newest, still
    /// in cache), then the shared queue, then the oldest node of another worker's deque.
    @inline(__always)
    func findWork(for worker: PoolWorker?) -> UnsafeMutablePointer<fls_node>? {
        if let worker, let node = fls_deque_take(worker.deque) { return node }
        if let node = queue.pop() { return node }
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
        _ = fls_atomic_add_u64(submittedNodes, 1)
        let current = fls_atomic_load_u32(state)
        if current != Self.running {
            _ = fls_atomic_add_u64(finishedElsewhere, 1)
            idle.notifyAll()
            throw Failure(FL_ESTATE, current == Self.closed ? "pool is closed" : "pool is terminated")
        }
        if let worker = PoolWorker.current, worker.pool === self, fls_deque_push(worker.deque, node) == 0 {
            // Submitted by one of our own tasks: kept local, stolen if another worker is idle.
        } else {
            queue.push(node)
        }
        wakeWorkerIfNoneSpins()
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
    /// worker of this pool, or nil on any other thread.
    @inline(__always)
    func execute(_ node: UnsafeMutablePointer<fls_node>, by worker: PoolWorker?) {
        let cancelled = isCancelled
        let kind = node.pointee.kind
        var handedOff = false
        if kind == FLS_NODE_GROUP {
            let slot = worker?.index ?? -1
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
        if !handedOff { TaskNodes.free(node) }
        if let worker { worker.countFinishedNode() } else { _ = fls_atomic_add_u64(finishedElsewhere, 1) }
    }

    /// Runs a callback-only apply and sends its node, now carrying the outcome, to the callback
    /// thread.
    @inline(__always)
    private func runCallbackApply(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        var slot = ResultSlot.pending
        if cancelled {
            ResultSlot.fail(&slot, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled")
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
                ResultSlot.clear(&scratch)
            }
            return false
        }
        let box = Unmanaged<ResultBox>.fromOpaque(owner)
        let handOff: Bool = box._withUnsafeGuaranteedRef { box in
            if cancelled {
                ResultSlot.fail(box.slots, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled")
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
        while !isDone() {
            if let node = findWork(for: worker) {
                execute(node, by: worker)
                continue
            }
            if deadline.hasPassed { return isDone() }
            _ = block(deadline.earlier(than: Deadline(nanosecondsFromNow: 1_000_000)))
        }
        return true
    }

    /// Whether the calling thread is one of this pool's workers or its callback thread.
    var isOwnThread: Bool {
        if let worker = PoolWorker.current, worker.pool === self { return true }
        return callbacks.isCurrentThread
    }

    // MARK: Iterators

    /// Tracks an open iterator so `close()` can drain its input.
    func register(_ iterator: ImapIterator) throws(Failure) {
        try lifecycle.withLock { () throws(Failure) in
            guard fls_atomic_load_u32(state) == Self.running else { throw Failure(FL_ESTATE, "pool is not running") }
            iterators[ObjectIdentifier(iterator)] = iterator
        }
    }

    /// Stops tracking an iterator (destroyed, or its input exhausted).
    func unregister(_ iterator: ImapIterator) {
        lifecycle.withLock { _ = iterators.removeValue(forKey: ObjectIdentifier(iterator)) }
    }

    // MARK: Life cycle

    /// Accepts no more work; queued work and open iterators' remaining input still run.
    func close() {
        lifecycle.withLock {
            guard fls_atomic_load_u32(state) == Self.running else { return }
            // Drain first, while submissions are still accepted, so no worker winds down early.
            for iterator in iterators.values { iterator.drainSource() }
            iterators.removeAll()
            fls_atomic_store_u32(state, Self.closed)
        }
        idle.notifyAll()
    }

    /// Cancels queued work (each pending task completes once, as cancelled); running tasks finish.
    func terminate() {
        let iteratorsToStop: [ImapIterator] = lifecycle.withLock {
            guard fls_atomic_load_u32(state) != Self.terminated else { return [] }
            fls_atomic_store_u32(state, Self.terminated)
            fls_atomic_store_u32(words + 1, 1)
            let open = Array(iterators.values)
            iterators.removeAll()
            return open
        }
        for iterator in iteratorsToStop { iterator.stopSource() }
        // Queued nodes complete here as cancelled; nodes in workers' deques are cancelled by
        // the workers, which keep running until every node has finished.
        while let node = queue.pop() { execute(node, by: nil) }
        idle.notifyAll()
    }

    /// Waits for the workers to end and every callback to run.
    func join(until deadline: Deadline) throws(Failure) {
        guard !isOwnThread else { throw Failure(FL_EDEADLK, "join called from a thread of the same pool") }
        try lifecycle.withLock { () throws(Failure) in
            guard fls_atomic_load_u32(state) != Self.running else {
                throw Failure(FL_ESTATE, "join requires close or terminate first")
            }
            while exitedWorkers < workers.count {
                if !lifecycleChanged.wait(lifecycle, until: deadline) && exitedWorkers < workers.count {
                    throw Failure(FL_ETIMEDOUT, "workers still busy at the deadline")
                }
            }
            if !threadsJoined {
                for worker in workers { OSThread.join(worker.threadID) }
                threadsJoined = true
            }
        }
        guard callbacks.stop(until: deadline) else { throw Failure(FL_ETIMEDOUT, "callbacks still running at the deadline") }
    }

    /// Terminates unless already closed, then joins.
    func shutDown() throws(Failure) {
        guard !isOwnThread else { throw Failure(FL_EDEADLK, "destroy called from a thread of the same pool") }
        if fls_atomic_load_u32(state) == Self.running { terminate() }
        try join(until: .forever)
    }
}

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

    /// [0] state, [1] cancelled flag (read by tasks through fl_task_cancelled),
    /// [2..3] outstanding nodes (UInt64): submitted and not yet run or cancelled.
    private let words: UnsafeMutablePointer<UInt32>
    private var state: UnsafeMutablePointer<UInt32> { words }
    /// Non-zero once the pool is terminated.
    var cancelledFlag: UnsafePointer<UInt32> { UnsafePointer(words + 1) }
    private var outstanding: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 2).assumingMemoryBound(to: UInt64.self)
    }

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
        words = .allocate(capacity: 4)
        words.initialize(repeating: 0, count: 4)
    }

    deinit { words.deallocate() }

    /// Starts a pool and waits until every worker has run its initializer.
    static func create(workers: Int, name: String, initializer: fl_init_fn?, initializerUser: UnsafeMutableRawPointer?,
                       initargs: [UInt8]) throws(Failure) -> Pool {
        let pool = Pool(workers: workers, name: name, initializer: initializer, initializerUser: initializerUser,
                        initargs: initargs)
        do {
            try pool.callbacks.start()
            for index in 0..<workers {
                let worker = PoolWorker(pool: pool, index: index)
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

    /// Whether workers should end: the pool no longer runs and no node is outstanding.
    var isWindingDown: Bool {
        fls_atomic_load_u32(state) != Self.running && fls_atomic_load_u64(outstanding) == 0
    }

    /// Whether the pool has been terminated.
    var isCancelled: Bool { fls_atomic_load_u32(cancelledFlag) != 0 }

    // MARK: Submission and execution

    /// Queues a node. On failure the node is not queued and still belongs to the caller.
    @inline(__always)
    func submit(_ node: UnsafeMutablePointer<fls_node>) throws(Failure) {
        _ = fls_atomic_add_u64(outstanding, 1)
        let current = fls_atomic_load_u32(state)
        if current != Self.running {
            nodeFinished()
            throw Failure(FL_ESTATE, current == Self.closed ? "pool is closed" : "pool is terminated")
        }
        queue.push(node)
        idle.notifyOne()
    }

    /// Runs (or cancels, once terminated) one node and frees it.
    @inline(__always)
    func execute(_ node: UnsafeMutablePointer<fls_node>) {
        let cancelled = isCancelled
        if node.pointee.kind == FLS_NODE_APPLY {
            runApply(node, cancelled: cancelled)
        } else if node.pointee.kind == FLS_NODE_GROUP {
            let group = Unmanaged<TaskGroup>.fromOpaque(node.pointee.owner!)
            group.takeUnretainedValue().run(node, cancelled: cancelled)
            group.release()
        } else {
            let job = Unmanaged<PoolJob>.fromOpaque(node.pointee.owner!).takeRetainedValue()
            job.run(node: node, cancelled: cancelled)
        }
        TaskNodes.free(node)
        nodeFinished()
    }

    @inline(__always)
    private func runApply(_ node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        guard let owner = node.pointee.owner else {
            // Fire and forget: nobody reads the outcome.
            if !cancelled {
                var scratch = ResultSlot.pending
                TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                               slot: &scratch, index: 0, cancelled: cancelledFlag)
                ResultSlot.clear(&scratch)
            }
            return
        }
        let box = Unmanaged<ResultBox>.fromOpaque(owner).takeRetainedValue()
        if cancelled {
            ResultSlot.fail(box.slots, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled")
        } else {
            TaskRunner.run(node.pointee.fn, user: node.pointee.user, arg: node.pointee.arg, length: node.pointee.arg_len,
                           slot: box.slots, external: node.pointee.external, externalCapacity: node.pointee.external_cap,
                           index: 0, cancelled: cancelledFlag)
        }
        box.complete(units: 1)
    }

    @inline(__always)
    private func nodeFinished() {
        if fls_atomic_sub_u64(outstanding, 1) == 1 && fls_atomic_load_u32(state) != Self.running {
            idle.notifyAll()
        }
    }

    /// Waits until `isDone()` or the deadline. On a worker of this pool it runs queued nodes
    /// meanwhile and blocks only in short slices; elsewhere it just calls `block(deadline)`.
    func helpWhileWaiting(until deadline: Deadline, isDone: () -> Bool, block: (Deadline) -> Bool) -> Bool {
        guard let worker = PoolWorker.current, worker.pool === self else { return block(deadline) }
        while !isDone() {
            if let node = queue.pop() {
                execute(node)
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
        while let node = queue.pop() { execute(node) }
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

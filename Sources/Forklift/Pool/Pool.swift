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
    static let running: UInt32 = 0
    static let closed: UInt32 = 1
    static let terminated: UInt32 = 2

    /// The thread name prefix.
    let name: String
    let workerCount: Int
    let queue = TaskQueue()
    /// Where idle workers park.
    let idle = EventCount()
    let callbacks: CallbackThread
    /// The handle of this pool (0 until registered).
    var handle: UInt64 = 0

    let initializer: fl_init_fn?
    let initializerUser: UnsafeMutableRawPointer?
    let initargs: [UInt8]
    /// Set for a process-backed pool: each worker thread then feeds a worker process.
    let processSettings: ProcessSettings?
    /// Called by a worker (with its index) when it has found no work for a while (it spun in
    /// vain) and is about to park (`.outOfWork`): the owner's chance to tidy up per-worker
    /// state while nothing waits for it. If it returns true, the worker parks for at most a
    /// millisecond, and if no work came meanwhile it calls again with `.stillIdle` before it
    /// parks for good.
    let idleHook: ((_ worker: Int, _ idleness: WorkerIdleness) -> Bool)?

    /// Each on its own cache line: [0] state and [1] the cancelled flag (read by tasks through
    /// fl_task_cancelled); [16..17] nodes submitted (UInt64); [32] workers spinning in search
    /// of work; [48..49] nodes finished by threads other than workers (UInt64). Workers count
    /// the nodes they finish in their own line, so no counter is shared per task between the
    /// submitter and the workers.
    private let words: UnsafeMutablePointer<UInt32>
    var state: UnsafeMutablePointer<UInt32> { words }
    /// Non-zero once the pool is terminated.
    var cancelledFlag: UnsafePointer<UInt32> { UnsafePointer(words + 1) }
    var submittedNodes: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 16).assumingMemoryBound(to: UInt64.self)
    }
    var finishedElsewhere: UnsafeMutablePointer<UInt64> {
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
                 initargs: [UInt8], processSettings: ProcessSettings?,
                 idleHook: ((_ worker: Int, _ idleness: WorkerIdleness) -> Bool)?) {
        self.workerCount = workers
        self.idleHook = idleHook
        self.processSettings = processSettings
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
                       initargs: [UInt8], processSettings: ProcessSettings? = nil,
                       idleHook: ((_ worker: Int, _ idleness: WorkerIdleness) -> Bool)? = nil) throws(Failure) -> Pool {
        let pool = Pool(workers: workers, name: name, initializer: initializer, initializerUser: initializerUser,
                        initargs: initargs, processSettings: processSettings, idleHook: idleHook)
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

    /// Runs the initializer on the calling worker (or starts its worker process, which runs it)
    /// and reports the outcome. Returns false if it failed.
    func runInitializer(process: WorkerProcess?) -> Bool {
        var failure: Failure?
        if let process {
            failure = process.start()
        } else if let initializer {
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

    /// On a process pool, runs a task on the calling thread in an idle worker process, if one
    /// can be borrowed (see `WorkerProcess`): the caller waits anyway, and no pool thread needs
    /// waking. Returns false, with nothing done, when the task must be queued instead.
    func runOnIdleProcess(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                          slot: UnsafeMutablePointer<fls_slot>, output: UnsafeMutableRawPointer?,
                          capacity: Int) -> Bool {
        guard processSettings != nil, PoolWorker.current == nil else { return false }
        // Counted as a node (before the state is checked, as submissions are), so the pool does
        // not wind down under it.
        _ = fls_atomic_add_u64(submittedNodes, 1)
        defer {
            _ = fls_atomic_add_u64(finishedElsewhere, 1)
            // Workers parked while this ran may be waiting for the pool to wind down.
            if fls_atomic_load_u32(state) != Self.running { idle.notifyAll() }
        }
        guard fls_atomic_load_u32(state) == Self.running else { return false }
        for worker in workersSnapshot {
            guard let process = worker.process, process.tryBorrow() else { continue }
            defer { process.giveBack() }
            return process.run(fn, user: user, arg: arg, length: length, slot: slot, external: output,
                               externalCapacity: capacity, index: 0, direct: true)
        }
        return false
    }
    /// Each worker's deque, by worker index; set before any worker starts.
    let deques: UnsafeMutablePointer<UnsafeMutablePointer<fls_deque>>

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
            // Worker processes are killed at once; their tasks fail as cancelled.
            for worker in workersSnapshot { worker.process?.interrupt() }
            let open = Array(iterators.values)
            iterators.removeAll()
            return open
        }
        for iterator in iteratorsToStop { iterator.stopSource() }
        // Queued nodes complete here as cancelled; nodes in workers' deques are cancelled by
        // the workers, which keep running until every node has finished.
        TaskNodes.withScratch { scratch in
            while let node = queue.pop(into: scratch) { execute(node, by: nil) }
        }
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

/// How long a worker calling a pool's `idleHook` has been without work.
enum WorkerIdleness {
    /// It spun in vain and is about to park.
    case outOfWork
    /// It parked for a millisecond at the hook's request, and no work came.
    case stillIdle
}

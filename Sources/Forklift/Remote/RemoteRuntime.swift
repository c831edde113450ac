#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A runtime of remote tasks (`fl_runtime`): a pool of worker threads (the shared scheduler)
/// that runs tasks once their arguments are ready, and the store their objects count against.
///
/// Who keeps a task alive: the objects it waits for (as a dependent), then its pool node
/// (retained), then the worker running it. Every task ends exactly once, in `RemoteTask.run`
/// or `RemoteTask.finish`. `shutDown` marks the runtime closed, then closes and drains the
/// pool: queued tasks see the mark and resolve as cancelled without running, tasks whose
/// arguments resolve later cannot be queued any more and resolve as cancelled too.
///
/// Isolated tasks (`fl_remote_options.isolate`) go to `processPool` instead: a process-backed
/// pool whose worker threads each feed one worker process, without pipelining, so a task can
/// be killed on its own. Isolated actors have a process of their own (`RemoteActor`); the
/// runtime keeps them until they are killed, and stops their processes at shutdown.
final class RemoteRuntime {
    /// Keeps the reference count, which every task or object made changes, off the fields' lines.
    private let padding = CacheLinePadding()
    let pool: Pool
    /// The pool of worker processes for isolated tasks (`process_workers`), if any.
    let processPool: Pool?
    let store: ObjectStore
    /// Task events for fl_runtime_trace_*.
    let timeline = Timeline()
    /// The CPUs that tasks asking for some hold (fl_remote_options.num_cpus).
    let cpus: CPUAccount
    /// The shut-down flag, read by every submission and task run.
    private let closed: UnsafeMutablePointer<UInt32>
    /// Tasks submitted (written by submitting threads).
    private let submitted: UnsafeMutablePointer<UInt64>
    /// Threads running (or about to claim) a task inline in fl_get (`RemoteTask.runInlineIfQueued`),
    /// which shutdown waits for as it waits for the workers.
    private let inlineRuns: UnsafeMutablePointer<UInt64>
    /// Running, finished, failed (written by the threads running tasks).
    private let outcomes: UnsafeMutablePointer<UInt64>

    /// Actors not yet killed, which shutdown kills (freeing their states, ending their
    /// processes); `actorsClosed` once it has taken them, after which none is kept.
    private let actorsLock = Lock()
    private var liveActors: [ObjectIdentifier: RemoteActor] = [:]
    private var actorsClosed = false

    init(workers: Int, storeCapacity: Int, processWorkers: Int = 0) throws(Failure) {
        let graveyard = TaskGraveyard(workers: workers, handsOverEachTask: storeCapacity > 0)
        do throws(Failure) {
            pool = try Pool.create(workers: workers, name: "forklift-remote", initializer: nil, initializerUser: nil,
                                   initargs: [], idleHook: { worker, idleness in graveyard.workerIsIdle(worker, idleness) })
        } catch {
            graveyard.destroy()
            throw error
        }
        do throws(Failure) {
            processPool = processWorkers > 0
                ? try Pool.create(workers: processWorkers, name: "forklift-isolated", initializer: nil,
                                  initializerUser: nil, initargs: [], processSettings: ProcessSettings(pipelines: false))
                : nil
        } catch {
            pool.close()
            try? pool.join(until: .forever)
            graveyard.destroy()
            throw error
        }
        store = ObjectStore(capacity: storeCapacity, sharesLargeObjects: processWorkers > 0, graveyard: graveyard)
        cpus = CPUAccount(capacity: pool.workerCount)
        // One cache line each for the flag, the submitters' counter and the runners' counters,
        // so that submitting and running threads do not take each other's lines at every task.
        let lines = UnsafeMutableRawPointer.allocate(byteCount: 4 * 64, alignment: 64)
        lines.initializeMemory(as: UInt8.self, repeating: 0, count: 4 * 64)
        closed = lines.bindMemory(to: UInt32.self, capacity: 1)
        submitted = (lines + 64).bindMemory(to: UInt64.self, capacity: 1)
        outcomes = (lines + 128).bindMemory(to: UInt64.self, capacity: 3)
        inlineRuns = (lines + 192).bindMemory(to: UInt64.self, capacity: 1)
    }

    deinit {
        UnsafeMutableRawPointer(closed).deallocate()  // the counters' lines with it
    }

    var stats: fl_runtime_stats {
        // Objects that only buried tasks still hold are not counted as alive.
        store.graveyard.releaseAll()
        return fl_runtime_stats(tasks_submitted: fls_atomic_load_u64(submitted), tasks_running: fls_atomic_load_u64(outcomes),
                         tasks_finished: fls_atomic_load_u64(outcomes + 1), tasks_failed: fls_atomic_load_u64(outcomes + 2),
                         objects: store.objectCount, object_bytes: store.bytesHeld)
    }

    /// A task starts or ends running.
    func taskRunning(_ delta: Int) {
        if delta > 0 { _ = fls_atomic_add_u64(outcomes, 1) } else { _ = fls_atomic_sub_u64(outcomes, 1) }
    }

    var isShutDown: Bool { fls_atomic_load_u32(closed) != 0 }

    /// The word `shutDown` sets first, for a reader that watches it (an isolated actor's
    /// process restarts stop when it is set).
    var closedWord: UnsafePointer<UInt32> { UnsafePointer(closed) }

    /// Submits a task: it runs once its arguments are ready.
    /// A task submitted on a thread that runs a task of this runtime becomes that task's child
    /// before it starts (see `ChildTasks`): cancelling the parent cancels it too. Actor calls
    /// do not come here: they belong to their actor, whose other callers count on them.
    func submit(_ task: RemoteTask) throws(Failure) {
        try admit()
        if let running = fls_tls_remote_task() {
            let parent = Unmanaged<RemoteTask>.fromOpaque(running).takeUnretainedValue()
            if parent.runtime === self { parent.adopt(task) }
        }
        task.start()
    }

    /// Counts a submission, unless the runtime is shut down.
    func admit() throws(Failure) {
        guard !isShutDown else { throw Failure(FL_ESTATE, "runtime is shut down") }
        store.graveyard.releaseAll()
        _ = fls_atomic_add_u64(submitted, 1)
    }

    /// Takes back the count of an admitted submission that failed after all.
    func withdraw() {
        _ = fls_atomic_sub_u64(submitted, 1)
    }

    /// Queues a task whose arguments are ready; if the pool refuses it, the task resolves as
    /// cancelled (shut down) or failed.
    func schedule(_ task: RemoteTask) {
        // A task asking for CPUs waits for them, without a worker, unless they are free.
        if task.options.cpus > 0 && !cpus.acquire(task) { return }
        enqueueHoldingCPUs(task)
    }

    /// Queues a task that has its CPUs (if it asked for any); on failure it resolves as
    /// cancelled or failed and gives them back.
    func enqueueHoldingCPUs(_ task: RemoteTask) {
        if let failure = enqueue(task) {
            task.finish(status: failure.code == FL_ESTATE ? FL_ECANCELED : failure.code, code: failure.code,
                        message: failure.code == FL_ESTATE ? "runtime shut down before the task ran" : failure.message)
            cpus.release(task)
        }
    }

    /// Hands a task to the pool; returns why not, if it could not.
    func enqueue(_ task: RemoteTask) -> Failure? {
        if task.options.isolate { return enqueueIsolated(task) }
        let retained = Unmanaged.passRetained(task)
        do throws(Failure) {
            task.markQueued()
            try pool.submitTask(kind: UInt32(FLS_NODE_APPLY), Self.runTask, user: retained.toOpaque(), owner: nil,
                                arg: nil, length: 0)
            return nil
        } catch {
            retained.release()
            // A thread waiting for the task's output may have claimed it meanwhile (see
            // `RemoteTask.runInlineIfQueued`): it runs the task and ends it, as a worker would.
            return task.withdrawFromQueue() ? error : nil
        }
    }

    /// Hands an isolated task to the process pool as a job node, which the pool's thread runs
    /// itself (an apply node's function would be sent to the worker process as it is).
    private func enqueueIsolated(_ task: RemoteTask) -> Failure? {
        guard let node = TaskNodes.make(kind: UInt32(FLS_NODE_JOB)) else { return Failure(FL_ENOMEM, "no memory for a task") }
        node.pointee.owner = Unmanaged<PoolJob>.passRetained(task).toOpaque()
        do throws(Failure) {
            try processPool!.submit(node)
            return nil
        } catch {
            Unmanaged<PoolJob>.fromOpaque(node.pointee.owner!).release()
            TaskNodes.free(node)
            return error
        }
    }

    /// Runs the task a node carries (the node's reference comes with it). The pool is only
    /// ever closed and drained, never terminated, so every node runs.
    /// An actor's calls go on running here while its next one is ready (or is handed to this
    /// worker while it lingers on the actor).
    /// The node's reference to each task that ends here goes to the graveyard (on a worker).
    private static let runTask: fl_task_fn = { user, _, _, _ in
        let task = Unmanaged<RemoteTask>.fromOpaque(user!)
        // The runtime is not retained: the task keeps it, and a count changed here at every
        // task would take the line from the threads submitting (which retain it at every task).
        let runtime = task._withUnsafeGuaranteedRef { Unmanaged.passUnretained($0.runtime) }
        runtime._withUnsafeGuaranteedRef { $0.runTasks(from: task) }
        return 0
    }

    /// Runs `first` (the reference comes with it) and, while that is an actor's call, the calls
    /// the actor gives this thread next; then lets go of each. No reference count of the
    /// runtime, its pool or its actors changes here: their lines stay with the submitting
    /// threads.
    private func runTasks(from first: Unmanaged<RemoteTask>) {
        let worker = graveyardWorker
        // A thread waiting for the task's output may have run it already.
        guard first._withUnsafeGuaranteedRef({ $0.claimForWorker() }) else {
            bury(first, worker: worker)
            return
        }
        var task: Unmanaged<RemoteTask>? = first
        while let current = task {
            let next: Unmanaged<RemoteTask>? = current._withUnsafeGuaranteedRef { task in
                task.run()
                guard let actor = task.actorIfAny else { return nil }
                return actor._withUnsafeGuaranteedRef { $0.workerCallEnded(pool: pool) }
            }
            bury(current, worker: worker)
            task = next
        }
    }

    /// The index of the calling thread among the pool's workers, or nil on any other thread.
    private var graveyardWorker: Int? {
        guard let raw = fls_tls_worker() else { return nil }
        return Unmanaged<PoolWorker>.fromOpaque(raw)._withUnsafeGuaranteedRef { $0.pool === pool ? $0.index : nil }
    }

    /// Lets go of a reference to a task that has ended: into worker `worker`'s batch in the
    /// graveyard, or at once on any other thread (nil).
    private func bury(_ task: Unmanaged<RemoteTask>, worker: Int?) {
        guard let worker else {
            task.release()
            return
        }
        store.graveyard.bury(task, worker: worker)
    }

    /// A thread waiting in fl_get is about to claim a queued task to run it itself.
    func inlineRunStarted() { _ = fls_atomic_add_u64(inlineRuns, 1) }

    /// That thread is done with the task (or did not get it).
    func inlineRunEnded() { _ = fls_atomic_sub_u64(inlineRuns, 1) }

    /// A task is about to resolve its output: count it.
    func finished(failed: Bool) {
        _ = fls_atomic_add_u64(outcomes + 1, 1)
        if failed { _ = fls_atomic_add_u64(outcomes + 2, 1) }
    }

    /// Refuses new work, lets running tasks finish and resolves every task that has not run
    /// as cancelled, then stops the workers.
    func shutDown() throws(Failure) {
        // From a task of this runtime (on a worker, or run inline by a thread in fl_get), the
        // wait for running tasks would wait for the caller.
        let runningTask = fls_tls_remote_task().map { Unmanaged<RemoteTask>.fromOpaque($0).takeUnretainedValue() }
        guard !pool.isOwnThread, runningTask?.runtime !== self else {
            throw Failure(FL_EDEADLK, "shutdown called from a task of the same runtime")
        }
        fls_atomic_store_u32(closed, 1)
        // Tasks waiting for an object that will never be sealed now fail with that cause.
        store.failUnsealed()
        for task in cpus.drain() {
            task.finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "runtime shut down before the task ran")
        }
        pool.close()
        processPool?.close()
        try pool.join(until: .forever)
        try processPool?.join(until: .forever)
        // Tasks that waiting threads took to run themselves end too (rarely any: those threads
        // hold references, so this only keeps "shutdown lets running tasks finish" true).
        while fls_atomic_load_u64(inlineRuns) != 0 { usleep(100) }
        // The workers handed their buried tasks over as they ran out of work: release them.
        store.graveyard.releaseAll()
        // No call runs any more: kill the actors still alive, free their states on this thread
        // and end their processes. Their handles stay valid until fl_actor_kill.
        let actors = actorsLock.withLock {
            defer {
                liveActors = [:]
                actorsClosed = true
            }
            return Array(liveActors.values)
        }
        for actor in actors { actor.endAtShutdown() }
        // The free shared memory the arena kept for the next large objects goes back to the
        // system (objects still referenced keep theirs).
        if store.sharesLargeObjects { fls_arena_trim() }
    }

    /// Keeps an actor whose constructor was queued until its state is freed (`forget`, after
    /// its kill and its last running call) or the runtime shuts down; not once shutdown has killed the others (its constructor, which
    /// the shutdown cancels, then makes no state).
    func keep(_ actor: RemoteActor) {
        actorsLock.withLock {
            if !actorsClosed { liveActors[ObjectIdentifier(actor)] = actor }
        }
    }

    /// Lets go of a killed actor.
    func forget(_ actor: RemoteActor) {
        actorsLock.withLock { _ = liveActors.removeValue(forKey: ObjectIdentifier(actor)) }
    }

    // MARK: The default runtime

    private static let defaultLock = Lock()
    private static var defaultHandle: UInt64 = 0

    /// The handle of the default runtime, created on first use (again after a shutdown).
    static func defaultRuntime() throws(Failure) -> UInt64 {
        try defaultLock.withLock { () throws(Failure) -> UInt64 in
            if defaultHandle != 0, (try? Registry.runtimes.with(cHandle(defaultHandle), "runtime") { _ in true }) == true {
                return defaultHandle
            }
            let runtime = try RemoteRuntime(workers: Int(fls_cpu_count()), storeCapacity: 0)
            defaultHandle = try Registry.runtimes.register(runtime)
            return defaultHandle
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The callbacks of an asynchronous submission.
struct Callbacks {
    let onResult: fl_result_cb?
    let onError: fl_result_cb?
    let user: UnsafeMutableRawPointer?

    static let none = Callbacks(onResult: nil, onError: nil, user: nil)

    var isEmpty: Bool { onResult == nil && onError == nil }
}

/// The submission operations of a pool: apply, map, starmap, strided map, imap.
extension Pool {
    /// multiprocessing's default chunk size: ceil(n / (4 * workers)), at least 1.
    func defaultChunkSize(count: Int) -> Int {
        // A process pool's workers pipeline chunks (one runner each), so it cuts finer.
        let parts = (processSettings == nil ? 4 : 32) * workerCount
        return max(1, (count + parts - 1) / parts)
    }

    /// Runs one task and waits for it. The result goes straight into `output` when it fits.
    /// - Returns: the result length, and whether it fit `output` (a result that did not fit is
    ///   dropped; its length tells the caller what to allocate).
    func apply(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
               output: UnsafeMutableRawPointer?, capacity: Int) throws(Failure) -> (length: Int, fits: Bool) {
        let box = ResultBox(kind: .apply, pool: self, items: 1, workUnits: 1, callback: nil, errorCallback: nil,
                            callbackUser: nil, callerHolds: false)
        if runOnIdleProcess(fn, user: user, arg: arg, length: length, slot: box.slots, output: output,
                            capacity: capacity) {
            box.completeAndNotify(units: 1)
        } else {
            // Deaths kept for a handed-back task whose re-run never came to run (not queued,
            // terminated, no fresh worker) go with its apply.
            defer { _ = HandedBackDeaths.take(for: box.slots) }
            try submitApply(fn, user: user, arg: arg, length: length, box: box, output: output, capacity: capacity)
            _ = box.wait(until: .forever)
        }
        let slot = box.slots
        if let failure = ResultSlot.failure(slot) { throw failure }
        let fits = slot.pointee.len == 0 || output == nil || slot.pointee.external == FLS_STORAGE_EXTERNAL
        return (slot.pointee.len, fits)
    }

    /// Queues one task; returns the result's handle when the caller wants one or callbacks need it.
    /// - Parameter keepAlive: kept by the result until the task has run (a typed call's state).
    func applyAsync(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                    callbacks: Callbacks, wantsHandle: Bool, keepAlive: AnyObject? = nil) throws(Failure) -> UInt64 {
        if let keepAlive, !wantsHandle && callbacks.isEmpty {
            let box = ResultBox(kind: .apply, pool: self, items: 1, workUnits: 1, callback: nil, errorCallback: nil,
                                callbackUser: nil, callerHolds: false)
            box.keepAlive = keepAlive
            try submitApply(fn, user: user, arg: arg, length: length, box: box, output: nil, capacity: 0)
            return 0
        }
        guard wantsHandle || !callbacks.isEmpty else {
            try submitApply(fn, user: user, arg: arg, length: length, box: nil, output: nil, capacity: 0)
            return 0
        }
        guard wantsHandle || keepAlive != nil else {
            // Callbacks only: no result box at all. The node carries the outcome and the
            // callbacks to the callback thread, which hands the callback a scoped handle.
            let node = try TaskNodes.task(kind: UInt32(FLS_NODE_CALLBACK_APPLY), fn, user: user, arg: arg, length: length)
            node.pointee.on_result = callbacks.onResult
            node.pointee.on_error = callbacks.onError
            node.pointee.callback_user = callbacks.user
            do {
                try submit(node)
            } catch {
                TaskNodes.free(node)
                throw error
            }
            return 0
        }
        let box = try registeredBox(kind: .apply, items: 1, workUnits: 1, callbacks: callbacks, callerHolds: wantsHandle)
        box.keepAlive = keepAlive
        do {
            try submitApply(fn, user: user, arg: arg, length: length, box: box, output: nil, capacity: 0)
        } catch {
            Registry.results.retire(box.handle)
            throw error
        }
        return wantsHandle ? box.handle : 0
    }

    private func submitApply(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                             box: ResultBox?, output: UnsafeMutableRawPointer?, capacity: Int) throws(Failure) {
        if box == nil && output == nil {  // nobody reads the outcome: a small one rides in a queue cell
            try submitTask(kind: UInt32(FLS_NODE_APPLY), fn, user: user, owner: nil, arg: arg, length: length)
            return
        }
        let node = try TaskNodes.task(kind: UInt32(FLS_NODE_APPLY), fn, user: user, arg: arg, length: length)
        node.pointee.external = output
        node.pointee.external_cap = capacity
        if let box { node.pointee.owner = Unmanaged.passRetained(box).toOpaque() }
        do {
            try submit(node)
        } catch {
            if let owner = node.pointee.owner { Unmanaged<ResultBox>.fromOpaque(owner).release() }
            TaskNodes.free(node)
            throw error
        }
    }

    /// A result box registered in the handle table.
    private func registeredBox(kind: ResultBox.Kind, items: Int, workUnits: Int, callbacks: Callbacks,
                               callerHolds: Bool) throws(Failure) -> ResultBox {
        let box = ResultBox(kind: kind, pool: self, items: items, workUnits: workUnits, callback: callbacks.onResult,
                            errorCallback: callbacks.onError, callbackUser: callbacks.user, callerHolds: callerHolds)
        box.handle = try Registry.results.register(box)
        return box
    }

    /// Maps `fn` over `count` items (map or starmap). Returns the result's handle; when `wait`
    /// is set the result is ready on return.
    /// - Parameter ownedInput: a private copy of the input that the job frees.
    func map(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, input: MapInput, count: Int, chunkSize: Int,
             ownedInput: UnsafeMutableRawPointer?, callbacks: Callbacks, wait: Bool,
             keepAlive: AnyObject? = nil) throws(Failure) -> UInt64 {
        let chunk = chunkSize > 0 ? chunkSize : defaultChunkSize(count: count)
        let box: ResultBox
        do {
            box = try registeredBox(kind: .map, items: count, workUnits: count, callbacks: callbacks, callerHolds: true)
        } catch {
            free(ownedInput)
            throw error
        }
        let job = MapJob(fn: fn, user: user, input: input, count: count, chunkSize: chunk, box: box, ownedInput: ownedInput,
                         keepAlive: keepAlive)
        // On a process pool, more runners than workers: a worker process takes the next
        // runner's first task into its pipeline while the current one runs.
        let runnersPerWorker = processSettings == nil ? 1 : Int(ProcessSettings.pipelineDepth)
        try start(job, runners: min(workerCount * runnersPerWorker, job.chunkCount), box: box, wait: wait)
        return box.handle
    }

    /// Runs `kernel` over `count` elements in place. Returns the result's handle.
    func mapStrided(_ kernel: fl_kernel_fn, user: UnsafeMutableRawPointer?, input: UnsafeRawPointer?, inputStride: Int,
                    output: UnsafeMutableRawPointer?, outputStride: Int, count: Int, chunkSize: Int,
                    callbacks: Callbacks, wait: Bool) throws(Failure) -> UInt64 {
        guard processSettings == nil else {
            throw Failure(FL_ENOTSUP, "strided maps work on the caller's memory, which worker processes cannot write: "
                              + "use a thread pool, or map over blobs")
        }
        // A chunk costs one atomic increment here, so the default is finer than map's: about 64
        // chunks per worker, at least 4096 elements each, for an even finish.
        let chunk = chunkSize > 0 ? chunkSize : max(4096, (count + 64 * workerCount - 1) / (64 * workerCount))
        let chunks = (count + chunk - 1) / chunk
        let box = try registeredBox(kind: .strided, items: 1, workUnits: chunks, callbacks: callbacks, callerHolds: true)
        let job = StridedJob(kernel: kernel, user: user, input: input, inputStride: inputStride, output: output,
                             outputStride: outputStride, count: count, chunkSize: chunk, box: box)
        // A synchronous call from outside the pool works on the array itself, so it needs one
        // worker fewer to keep every CPU busy without oversubscribing (as TBB's arena does).
        let callerJoins = wait && !isOwnThread
        let runners = callerJoins ? max(1, workerCount - 1) : workerCount
        try start(job, runners: min(runners, chunks), box: box, wait: false)
        if wait {
            // Like parallel_for and dispatch_apply, the calling thread works on the array too
            // instead of sleeping; then it waits for chunks still running elsewhere.
            job.runChunks(cancelled: false)
            _ = box.wait(until: .forever)
        }
        return box.handle
    }

    /// Queues `runners` nodes for a job (none for empty input, which is ready at once) and
    /// optionally waits for its result.
    private func start(_ job: PoolJob, runners: Int, box: ResultBox, wait: Bool) throws(Failure) {
        if runners == 0 {
            guard !isWindingDown && !isCancelled else {
                Registry.results.retire(box.handle)
                throw Failure(FL_ESTATE, "pool is not running")
            }
            box.completeAndNotify(units: 0)
        }
        for runner in 0..<runners {
            guard let node = TaskNodes.make(kind: UInt32(FLS_NODE_JOB)) else {
                if runner > 0 { break }  // the queued runners claim every chunk
                Registry.results.retire(box.handle)
                throw Failure(FL_ENOMEM, "no memory for a task")
            }
            node.pointee.owner = Unmanaged.passRetained(job).toOpaque()
            do {
                try submit(node)
            } catch {
                Unmanaged<PoolJob>.fromOpaque(node.pointee.owner!).release()
                TaskNodes.free(node)
                if runner > 0 { break }
                Registry.results.retire(box.handle)
                throw error
            }
        }
        if wait { _ = box.wait(until: .forever) }
    }

    /// Starts an imap (ordered) or imap_unordered iterator and fills its read-ahead window.
    func imap(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, source: fl_source_fn, sourceUser: UnsafeMutableRawPointer?,
              chunkSize: Int, readAhead: Int, ordered: Bool) throws(Failure) -> UInt64 {
        let chunk = max(chunkSize, 1)
        let window = readAhead > 0 ? readAhead : 4 * workerCount * chunk
        let iterator = ImapIterator(pool: self, fn: fn, user: user, source: source, sourceUser: sourceUser,
                                    chunkSize: chunk, readAhead: window, ordered: ordered)
        try register(iterator)
        do {
            iterator.handle = try Registry.iterators.register(iterator)
        } catch {
            unregister(iterator)
            throw error
        }
        iterator.feed()
        return iterator.handle
    }
}

import CForklift

/// Finished remote tasks waiting for their last release, so that the thread that made a task
/// (a submitting thread) is usually the one that frees it.
///
/// A worker that ends a task would otherwise free it, and glibc returns a block freed on
/// another thread to the arena it came from under that arena's lock: the submitting thread's
/// mallocs and the workers' frees then contend for the lock at every task, and the freed
/// memory is not in the submitter's per-thread cache when it allocates the next one. Instead
/// a worker `bury`s the task in a batch of its own (no shared write), hands a full batch over
/// with one compare-and-swap, and a submitting thread `releaseAll`s what was handed over,
/// at its next submission.
///
/// A batch is one 64-byte block: the link to the next batch handed over, then up to
/// `batchSize` tasks (nil after the last). The releasing thread reads a batch's line and
/// fetches all its tasks at once: the tasks were last written by a worker, and one miss per
/// task in a row (as a chain linked through the tasks themselves costs) would take a cache
/// line round trip each, 100 to 500 ns on a shared machine.
///
/// Nothing waits here for long: besides each submission, `releaseAll` runs when a reference is
/// released (so an object whose task was buried is freed with its last reference), when the
/// counters are read, and at shutdown; a worker about to park hands its batch over, and if
/// the runtime stays idle for a millisecond it releases the lot itself.
///
/// A value type over raw memory (the closure the pool calls holds it without reference
/// counting); its owner calls `destroy()` once no worker runs.
struct TaskGraveyard {
    /// [0]: the first batch handed over; then one cache line per worker: its open batch and
    /// the number of tasks in it.
    private let words: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let workerCount: Int
    /// Whether a worker hands each task over as it buries it, not a full batch at a time: a
    /// runtime with a store capacity asks for it. A finished task keeps its output, whose
    /// bytes count against the capacity, so an object released while its worker is still busy
    /// would otherwise stay counted (and a put could find the store full) until that worker's
    /// batch filled. The cost: one compare-and-swap per task.
    private let handsOverEachTask: Bool

    /// Tasks per batch: the seven words of a block after its link. As many as glibc's
    /// per-thread cache keeps of one size by default (7), so a released batch goes to the
    /// submitting thread's cache whole and serves its next mallocs without taking the arena lock.
    private static let batchSize = 7

    init(workers: Int, handsOverEachTask: Bool = false) {
        workerCount = workers
        self.handsOverEachTask = handsOverEachTask
        let bytes = (workers + 1) * 64
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        words = raw.bindMemory(to: UnsafeMutableRawPointer?.self, capacity: bytes / 8)
    }

    /// Releases what is left (every worker has ended) and frees the memory.
    func destroy() {
        for worker in 0..<workerCount { handOver(worker: worker) }
        releaseAll()
        UnsafeMutableRawPointer(words).deallocate()
    }

    /// Takes over the last reference to `task`, which has ended, on worker `worker`.
    func bury(_ task: Unmanaged<RemoteTask>, worker: Int) {
        let open = words + 8 * (worker + 1)
        let batch: UnsafeMutablePointer<UnsafeMutableRawPointer?>
        if let current = open[0] {
            batch = current.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        } else {
            guard let block = fls_block_alloc() else {
                task.release()  // no memory for a batch: freed here instead
                return
            }
            batch = block.bindMemory(to: UnsafeMutableRawPointer?.self, capacity: Self.batchSize + 1)
            batch.initialize(repeating: nil, count: Self.batchSize + 1)
            open[0] = UnsafeMutableRawPointer(batch)
        }
        let count = Int(bitPattern: open[1]) + 1
        batch[count] = task.toOpaque()
        open[1] = UnsafeMutableRawPointer(bitPattern: count)
        if count == Self.batchSize || handsOverEachTask { handOver(worker: worker) }
    }

    /// Worker `worker` has no work (its pool's `idleHook`). About to park, it hands its batch
    /// over, for the next submission to release, and asks to be called back if anything waits
    /// to be released; called back a millisecond later with still no work, it releases what
    /// nobody has (the runtime is idle: no submitting thread to contend with for malloc).
    func workerIsIdle(_ worker: Int, _ idleness: WorkerIdleness) -> Bool {
        switch idleness {
        case .outOfWork:
            handOver(worker: worker)
            return fls_atomic_load_ptr(words) != nil
        case .stillIdle:
            releaseAll()
            return false
        }
    }

    /// Releases every task handed over so far (from any thread).
    @inline(__always)
    func releaseAll() {
        guard fls_atomic_load_ptr(words) != nil else { return }
        releaseBatches(from: fls_atomic_exchange_ptr(words, nil))
    }

    /// Releases the tasks of the batches from `first` on, and the batches.
    private func releaseBatches(from first: UnsafeMutableRawPointer?) {
        var next = first
        while let raw = next {
            let batch = raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
            next = batch[0]
            if let next { fls_prefetch_for_write(next) }
            // Every line that releasing the tasks writes is requested before the first is
            // released, so the misses overlap: each task's instance, then its block and output.
            var count = 0
            while count < Self.batchSize, let task = batch[count + 1] {
                fls_prefetch_for_write(task)
                fls_prefetch_for_write(task + 64)
                fls_prefetch_for_write(task + RemoteTask.instanceBytes - 1)
                count += 1
            }
            for index in 0..<count {
                Unmanaged<RemoteTask>.fromOpaque(batch[index + 1]!)._withUnsafeGuaranteedRef { $0.prefetchForRelease() }
            }
            for index in 0..<count {
                Unmanaged<RemoteTask>.fromOpaque(batch[index + 1]!).release()
            }
            fls_block_free(raw)
        }
    }

    /// Moves worker `worker`'s open batch onto the handed-over chain. Called on that worker (or
    /// once it has ended).
    private func handOver(worker: Int) {
        let open = words + 8 * (worker + 1)
        guard let batch = open[0] else { return }
        let link = batch.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        var head = fls_atomic_load_ptr(words)
        while true {
            link[0] = head
            if fls_atomic_cas_ptr(words, &head, batch) { break }
        }
        open[0] = nil
        open[1] = nil
    }
}

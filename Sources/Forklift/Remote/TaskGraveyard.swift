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
/// Nothing waits here for long: besides each submission, `releaseAll` runs when a reference is
/// released (so an object whose task was buried is freed with its last reference), when the
/// counters are read, and at shutdown; a worker about to park hands its batch over, and if
/// the runtime stays idle for a millisecond it releases the lot itself.
///
/// A value type over raw memory (the closure the pool calls holds it without reference
/// counting); its owner calls `destroy()` once no worker runs.
struct TaskGraveyard {
    /// [0]: the head of the handed-over chain; then one cache line per worker with its batch:
    /// head, tail, count.
    private let words: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let workerCount: Int

    /// Tasks a worker gathers before it hands them over: as many as glibc's per-thread cache
    /// keeps of one size by default (7), so a released batch goes to the submitting thread's
    /// cache whole and serves its next mallocs without taking the arena lock.
    private static let batchSize = 7

    init(workers: Int) {
        workerCount = workers
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
        let batch = words + 8 * (worker + 1)
        let raw = task.toOpaque()
        Self.setLink(of: raw, to: batch[0])
        if batch[1] == nil { batch[1] = raw }
        batch[0] = raw
        let count = Int(bitPattern: batch[2]) + 1
        batch[2] = UnsafeMutableRawPointer(bitPattern: count)
        if count >= Self.batchSize { handOver(worker: worker) }
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
        var next = fls_atomic_exchange_ptr(words, nil)
        while let raw = next {
            next = Self.link(of: raw)
            // The worker wrote the next task last: fetch it while this one is freed.
            if let next { fls_prefetch_for_write(next) }
            Unmanaged<RemoteTask>.fromOpaque(raw).release()
        }
    }

    /// Moves worker `worker`'s batch onto the handed-over chain. Called on that worker (or once
    /// it has ended).
    private func handOver(worker: Int) {
        let batch = words + 8 * (worker + 1)
        guard let first = batch[0], let last = batch[1] else { return }
        var head = fls_atomic_load_ptr(words)
        while true {
            Self.setLink(of: last, to: head)
            if fls_atomic_cas_ptr(words, &head, first) { break }
        }
        batch[0] = nil
        batch[1] = nil
        batch[2] = nil
    }

    private static func link(of task: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        Unmanaged<RemoteTask>.fromOpaque(task)._withUnsafeGuaranteedRef { $0.graveLink.pointee }
    }

    private static func setLink(of task: UnsafeMutableRawPointer, to next: UnsafeMutableRawPointer?) {
        Unmanaged<RemoteTask>.fromOpaque(task)._withUnsafeGuaranteedRef { $0.graveLink.pointee = next }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// One worker thread of a pool: runs the initializer, then takes nodes from the pool's queue,
/// spinning briefly and then parking when there are none, until the pool winds down.
final class PoolWorker: ThreadBody {
    /// Not retained: a pool joins its workers before it can be freed.
    unowned(unsafe) let pool: Pool
    /// The pool's parking lot and wake-up words, held directly to keep reference counting out
    /// of the loop.
    private let idle: EventCount
    private let spinning: UnsafeMutablePointer<UInt32>
    private let wakePending: UnsafeMutablePointer<UInt32>
    private let maxSpinners: UInt32
    let index: Int
    var threadID: UInt64 = 0
    /// The worker process this thread feeds (process-backed pools only).
    let process: WorkerProcess?
    /// Nodes this worker has finished (read by others with an atomic load). Own cache line.
    private let finished: UnsafeMutablePointer<UInt64>
    /// Work submitted by tasks running on this worker: taken LIFO here, stolen FIFO by others.
    let deque: UnsafeMutablePointer<fls_deque>
    /// Slots of the deque: nested submissions beyond this go to the shared queue.
    private static let dequeCapacity: Int64 = 1024

    /// Pauses of a spinning worker before it parks (about 60 µs at 30 ns a pause).
    private static let spins = 2000
    /// A spinning worker looks at the queues every this many pauses (mask + 1 = 16, about
    /// 0.5 µs), not at every pause: each look reads the cache lines that a submitting thread
    /// writes, so looking at every pause made the submitter wait for its own lines at every
    /// submission (W1 with one submitter: 9.1 M -> 12.9 M tasks/s, medians of 11).
    private static let lookMask = 15

    init(pool: Pool, index: Int) throws(Failure) {
        guard let deque = fls_deque_create(Self.dequeCapacity) else {
            throw Failure(FL_ENOMEM, "no memory for a worker's deque")
        }
        if let settings = pool.processSettings {
            do throws(Failure) {
                process = try WorkerProcess(settings: settings, initializer: pool.initializer, user: pool.initializerUser,
                                            initargs: pool.initargs, cancelled: pool.cancelledFlag)
            } catch {
                fls_deque_destroy(deque)
                throw error
            }
        } else {
            process = nil
        }
        self.deque = deque
        self.pool = pool
        self.index = index
        idle = pool.idle
        spinning = pool.spinning
        wakePending = pool.wakePending
        maxSpinners = UInt32(max(1, pool.workerCount / 2))
        finished = .allocate(capacity: 8)
        finished.initialize(repeating: 0, count: 8)
    }

    deinit {
        finished.deallocate()
        fls_deque_destroy(deque)
    }

    /// Nodes finished so far.
    var finishedNodes: UInt64 { fls_atomic_load_u64(finished) }

    @inline(__always)
    func countFinishedNode() {
        fls_atomic_store_u64(finished, fls_atomic_load_relaxed_u64(finished) + 1)
    }

    func run() {
        "\(pool.name)-\(index)".withCString { fls_set_thread_name($0) }
        fls_tls_set_worker(Unmanaged.passUnretained(self).toOpaque())
        if let process {
            fls_tls_set_worker_process(Unmanaged.passUnretained(process).toOpaque())
            // While a task runs in the process, queue the next ones behind it (pipelining).
            if pool.processSettings?.pipelines == true {
                process.runAnother = { [unowned(unsafe) self] in
                    TaskNodes.withScratch { scratch in
                        if let node = self.pool.findWork(for: self, into: scratch) { self.pool.execute(node, by: Unmanaged.passUnretained(self)) }
                    }
                }
            }
        }
        defer {
            process?.hold()
            process?.runAnother = nil
            process?.stop()
            fls_tls_set_worker_process(nil)
            fls_tls_set_worker(nil)
            pool.idle.notifyAll()  // others may be parked waiting for the pool to wind down
            pool.workerExited()
        }
        guard pool.runInitializer(process: process) else { return }
        work(pool)
    }

    /// The worker loop. `pool` arrives as a parameter so the loop holds it at +0: no reference
    /// counting per task.
    private func work(_ pool: Pool) {
        TaskNodes.withScratch { scratch in work(pool, scratch: scratch) }
    }

    private func work(_ pool: Pool, scratch: UnsafeMutablePointer<fls_node>) {
        while true {
            if let node = pool.findWork(for: self, into: scratch) {
                process?.hold()
                pool.execute(node, by: Unmanaged.passUnretained(self))
                continue
            }
            // Out of work: a caller of fl_pool_apply may borrow the worker process meanwhile.
            process?.releaseHold()
            if spinForWork(pool) { continue }
            let checkBack = pool.idleHook?(index, .outOfWork) ?? false
            if pool.isWindingDown { return }
            let key = idle.prepareWait()
            fls_atomic_store_seq_cst_u32(wakePending, 0)
            if pool.hasVisibleWork || pool.isWindingDown {
                idle.cancelWait()
                continue
            }
            let woken = idle.wait(key, until: checkBack ? Deadline(nanosecondsFromNow: 1_000_000) : .forever)
            fls_atomic_store_seq_cst_u32(wakePending, 0)
            if !woken {
                _ = pool.idleHook?(index, .stillIdle)
                continue
            }
            // Woken for work: if more is queued and nobody spins, recruit the next worker, so a
            // burst (the runners of a map) spreads over the pool instead of one woken worker.
            if pool.hasVisibleWork && fls_atomic_load_u32(spinning) == 0 { pool.requestWorker() }
        }
    }

    /// Spins a while on an empty queue, counted in `pool.spinning` so that submitters need not
    /// wake anybody. Returns true when work appeared. The last spinner to find work wakes a
    /// parked worker to take its place, so a burst of submissions recruits workers one by one.
    private func spinForWork(_ pool: Pool) -> Bool {
        // At most half the workers (at least one) spin: the others park, leaving CPU time to
        // the threads that submit and to the workers that run tasks.
        if fls_atomic_add_u32(spinning, 1) >= maxSpinners {
            _ = fls_atomic_sub_u32(spinning, 1)
            return false
        }
        var spin = SpinWait()
        while spin.count < Self.spins && (spin.count & Self.lookMask != 0 || !pool.hasVisibleWork) { spin.pause() }
        let wasLast = fls_atomic_sub_u32(spinning, 1) == 1
        guard spin.count < Self.spins else { return false }
        if wasLast { pool.requestWorker() }
        return true
    }

    /// The worker running on the calling thread, if any.
    static var current: PoolWorker? {
        guard let raw = fls_tls_worker() else { return nil }
        return Unmanaged<PoolWorker>.fromOpaque(raw).takeUnretainedValue()
    }
}

import CForklift

/// The one thread per pool that runs completion callbacks, serialized, in completion order.
///
/// Completing workers push a node holding the retained result onto a lock-free FIFO and wake
/// the thread only if it is parked; a busy callback thread costs the workers one atomic
/// exchange per callback.
final class CallbackThread: ThreadBody {
    private let queue = NodeFIFO()
    private let wakeup = EventCount()
    /// [0] stopping flag.
    private let flags: UnsafeMutablePointer<UInt32>
    private let lock = Lock()
    private let ended = Condition()
    private var finished = false
    private var threadID: UInt64 = 0
    private let name: String
    private static let spins = 2000

    init(name: String) {
        self.name = name
        flags = .allocate(capacity: 1)
        flags.initialize(to: 0)
    }

    deinit {
        queue.destroy()
        wakeup.destroy()
        flags.deallocate()
    }

    /// Starts the thread.
    func start() throws(Failure) {
        threadID = try OSThread.start(self)
    }

    /// Whether the calling thread is this callback thread.
    var isCurrentThread: Bool { threadID != 0 && fls_thread_self() == threadID }

    /// Queues a ready result whose callback is due.
    func enqueue(_ box: ResultBox) {
        guard let node = TaskNodes.make(kind: 0) else {
            // Out of memory for a 128-byte node: deliver on this thread rather than lose it.
            box.deliverCallback()
            return
        }
        node.pointee.owner = Unmanaged.passRetained(box).toOpaque()
        enqueue(node: node)
    }

    /// Queues a node whose `owner` is a retained, ready result (the node of its finished task).
    @inline(__always)
    func enqueue(node: UnsafeMutablePointer<fls_node>) {
        queue.push(node)
        wakeup.notifyOne()
    }

    // MARK: Callback-scoped handles

    /// The handle kind given to the callbacks of an apply submitted without a result handle:
    /// valid only on this thread while that callback runs.
    static let scopedKind: UInt64 = 0x53  // 'S'
    private var scopedSequence: UInt64 = 0
    /// The scoped handle being delivered now, and its outcome (callback thread only).
    private var currentScoped: UInt64 = 0
    private var currentCarried: UnsafeMutablePointer<fls_slot>?

    /// The outcome behind a callback-scoped handle, if `handle` is the one being delivered on
    /// the calling thread right now. Any other value is rejected without being dereferenced.
    static func scopedResult(_ handle: UInt64) -> ResultView? {
        guard handle >> 56 == scopedKind, let raw = fls_tls_callback_thread() else { return nil }
        let thread = Unmanaged<CallbackThread>.fromOpaque(raw).takeUnretainedValue()
        guard thread.currentScoped == handle, let slot = thread.currentCarried else { return nil }
        return ResultView(carried: slot)
    }

    /// Delivers the outcome a callback-only apply's node carries, then frees the node.
    private func deliverCarried(_ node: UnsafeMutablePointer<fls_node>) {
        let slot = fls_node_result(node)!
        let chosen = slot.pointee.status == FL_OK ? node.pointee.on_result : node.pointee.on_error
        if let chosen {
            scopedSequence &+= 1
            currentScoped = Self.scopedKind << 56 | (scopedSequence & 0xFF_FFFF_FFFF_FFFF)
            currentCarried = slot
            chosen(node.pointee.callback_user, cHandle(currentScoped))
            currentScoped = 0
            currentCarried = nil
        }
        ResultSlot.clear(slot)
        TaskNodes.free(node)
    }

    /// Asks the thread to end once every queued callback has run, and waits for it.
    /// Returns false if the deadline passed first (the thread goes on draining). A thread that
    /// never started (the system refused it) has nothing to wait for.
    func stop(until deadline: Deadline) -> Bool {
        guard threadID != 0 else { return true }
        fls_atomic_store_seq_cst_u32(flags, 1)
        wakeup.notifyAll()
        let done: Bool = lock.withLock {
            while !finished {
                if !ended.wait(lock, until: deadline) && !finished { return false }
            }
            return true
        }
        if done && threadID != 0 {
            OSThread.join(threadID)
            threadID = 0
        }
        return done
    }

    func run() {
        name.withCString { fls_set_thread_name($0) }
        fls_tls_set_callback_thread(Unmanaged.passUnretained(self).toOpaque())
        defer { fls_tls_set_callback_thread(nil) }
        while true {
            if let node = queue.pop() {
                if node.pointee.kind == FLS_NODE_CALLBACK_APPLY {
                    deliverCarried(node)
                } else {
                    let box = Unmanaged<ResultBox>.fromOpaque(node.pointee.owner!)
                    TaskNodes.free(node)
                    box.takeUnretainedValue().deliverCallback()
                    box.release()
                }
                continue
            }
            if !queue.isIdle { continue }  // a push is half done: its node is a moment away
            // Poll a little before parking: completions tend to come in streams, and a parked
            // callback thread costs every completing worker a futex wake.
            var spin = SpinWait()
            while spin.count < Self.spins && queue.isIdle { spin.pause() }
            if spin.count < Self.spins { continue }
            let key = wakeup.prepareWait()
            if !queue.isIdle {
                wakeup.cancelWait()
                continue
            }
            if fls_atomic_load_u32(flags) != 0 {
                wakeup.cancelWait()
                break
            }
            wakeup.wait(key, until: .forever)
        }
        lock.withLock {
            finished = true
            ended.broadcast()
        }
    }
}

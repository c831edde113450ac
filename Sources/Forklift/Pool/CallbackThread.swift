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
        queue.push(node)
        wakeup.notifyOne()
    }

    /// Asks the thread to end once every queued callback has run, and waits for it.
    /// Returns false if the deadline passed first (the thread goes on draining).
    func stop(until deadline: Deadline) -> Bool {
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
        while true {
            if let node = queue.pop() {
                let box = Unmanaged<ResultBox>.fromOpaque(node.pointee.owner!)
                TaskNodes.free(node)
                box.takeUnretainedValue().deliverCallback()
                box.release()
                continue
            }
            if !queue.isIdle { continue }  // a push is half done: its node is a moment away
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

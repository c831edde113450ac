import CForklift

/// The one thread per pool that runs completion callbacks, serialized, in completion order.
final class CallbackThread: ThreadBody {
    private let lock = Lock()
    private let wakeup = Condition()
    private let ended = Condition()
    private var pending: [Unmanaged<ResultBox>] = []
    private var head = 0
    private var stopping = false
    private var threadID: UInt64 = 0
    private var finished = false
    private let name: String

    init(name: String) {
        self.name = name
    }

    /// Starts the thread.
    func start() throws(Failure) {
        threadID = try OSThread.start(self)
    }

    /// Whether the calling thread is this callback thread.
    var isCurrentThread: Bool { threadID != 0 && fls_thread_self() == threadID }

    /// Queues a ready result whose callback is due.
    func enqueue(_ box: ResultBox) {
        let retained = Unmanaged.passRetained(box)
        lock.withLock {
            pending.append(retained)
            wakeup.signal()
        }
    }

    /// Asks the thread to end once every queued callback has run, and waits for it.
    /// Returns false if the deadline passed first (the thread goes on draining).
    func stop(until deadline: Deadline) -> Bool {
        let done: Bool = lock.withLock {
            stopping = true
            wakeup.broadcast()
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
        lock.lock()
        while true {
            if head < pending.count {
                let box = pending[head]
                head += 1
                if head > 1024 && head * 2 > pending.count {
                    pending.removeFirst(head)
                    head = 0
                }
                lock.unlock()
                box.takeUnretainedValue().deliverCallback()
                box.release()
                lock.lock()
            } else if stopping {
                break
            } else {
                _ = wakeup.wait(lock, until: .forever)
            }
        }
        finished = true
        ended.broadcast()
        lock.unlock()
    }
}

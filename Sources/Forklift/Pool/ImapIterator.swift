#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// imap and imap_unordered: pulls items lazily from a source callback, runs them in chunks,
/// and hands results out through `next(until:)` — in input order, or in completion order.
///
/// Read-ahead is bounded: at most `readAhead` items are pulled and not yet handed out, so a
/// huge (or endless) input never sits in memory. The source is called only on threads that call
/// `fl_pool_imap`, `fl_iter_next` or `fl_pool_close` (which drains the rest of the input, as
/// multiprocessing does), and never concurrently.
final class ImapIterator: PoolJob {
    let pool: Pool
    let fn: fl_task_fn
    let user: UnsafeMutableRawPointer?
    let source: fl_source_fn
    let sourceUser: UnsafeMutableRawPointer?
    let chunkSize: Int
    let readAhead: Int
    let ordered: Bool
    var handle: UInt64 = 0

    /// Serializes source calls and submissions.
    private let feedLock = Lock()
    /// Guards everything below it.
    private let lock = Lock()
    private let arrived = Condition()
    private var pulled: UInt64 = 0
    private var handedOut: UInt64 = 0
    private var sourceEnded = false
    private var sourceFailure: Int32 = 0
    private var sourceFailureReported = false
    /// Completed results by item index (ordered), or in completion order (unordered).
    private var byIndex: [UInt64: fls_slot] = [:]
    private var inCompletionOrder: [fls_slot] = []
    private var completionHead = 0
    /// The item handed out last; its bytes stay valid until the next call.
    private var current = ResultSlot.pending
    private var currentIndex: UInt64 = 0

    init(pool: Pool, fn: fl_task_fn, user: UnsafeMutableRawPointer?, source: fl_source_fn,
         sourceUser: UnsafeMutableRawPointer?, chunkSize: Int, readAhead: Int, ordered: Bool) {
        self.pool = pool
        self.fn = fn
        self.user = user
        self.source = source
        self.sourceUser = sourceUser
        self.chunkSize = chunkSize
        self.readAhead = max(readAhead, chunkSize)
        self.ordered = ordered
    }

    deinit {
        ResultSlot.clear(&current)
        for var slot in byIndex.values { ResultSlot.clear(&slot) }
        for i in completionHead..<inCompletionOrder.count { ResultSlot.clear(&inCompletionOrder[i]) }
    }

    // MARK: Feeding

    /// Pulls and submits items while the read-ahead window has room.
    func feed() {
        feedLock.withLock { feedLocked(window: readAhead, unregisterAtEnd: true) }
    }

    /// Pulls and submits the whole rest of the input. Called by `Pool.close()`, which holds
    /// the pool's life-cycle lock and forgets its iterators itself.
    func drainSource() {
        feedLock.withLock { feedLocked(window: Int.max, unregisterAtEnd: false) }
    }

    /// Stops pulling: the pool was terminated. Items already running finish; queued ones are cancelled.
    func stopSource() {
        feedLock.withLock {
            lock.withLock {
                sourceEnded = true
                arrived.broadcast()
            }
        }
    }

    private func feedLocked(window: Int, unregisterAtEnd: Bool) {
        while true {
            let (ended, room): (Bool, Int) = lock.withLock {
                (sourceEnded, window == Int.max ? Int.max : window - Int(pulled - handedOut))
            }
            if ended || room <= 0 { return }
            let wanted = min(chunkSize, room)
            var items: [(UnsafeMutableRawPointer?, Int)] = []
            var failure: Int32 = 0
            var end = false
            while items.count < wanted {
                var data: UnsafeRawPointer?
                var length = 0
                let produced = source(sourceUser, &data, &length)
                if produced < 0 { failure = produced; end = true; break }
                if produced == 0 { end = true; break }
                if length > 0 && data == nil { failure = FL_EINVAL; end = true; break }
                let copy = length > 0 ? malloc(length) : nil
                if length > 0 {
                    guard let copy else { failure = FL_ENOMEM; end = true; break }
                    copy.copyMemory(from: data!, byteCount: length)
                }
                items.append((copy, length))
            }
            if !items.isEmpty { submitChunk(items) }
            if end {
                lock.withLock {
                    sourceEnded = true
                    sourceFailure = failure
                    arrived.broadcast()
                }
                if unregisterAtEnd { pool.unregister(self) }
                return
            }
        }
    }

    /// Packs items into one heap block — `count` (offset, length) pairs then the bytes — and
    /// queues a node for it.
    private func submitChunk(_ items: [(UnsafeMutableRawPointer?, Int)]) {
        let header = items.count * 2 * MemoryLayout<Int>.size
        let total = header + items.reduce(0) { $0 + $1.1 }
        let first: UInt64 = lock.withLock {
            defer { pulled += UInt64(items.count) }
            return pulled
        }
        guard let block = malloc(max(total, 1)), let node = TaskNodes.make(kind: UInt32(FLS_NODE_JOB)) else {
            for item in items { free(item.0) }
            failItems(from: first, count: items.count, code: FL_ENOMEM, message: "no memory for an imap chunk")
            return
        }
        let table = block.assumingMemoryBound(to: Int.self)
        var offset = header
        for (i, item) in items.enumerated() {
            table[2 * i] = offset
            table[2 * i + 1] = item.1
            if let bytes = item.0 {
                (block + offset).copyMemory(from: bytes, byteCount: item.1)
                free(bytes)
            }
            offset += item.1
        }
        TaskNodes.adoptArgument(node, block, count: items.count)
        node.pointee.index = first
        node.pointee.owner = Unmanaged.passRetained(self as PoolJob).toOpaque()
        do {
            try pool.submit(node)
        } catch {
            Unmanaged<PoolJob>.fromOpaque(node.pointee.owner!).release()
            TaskNodes.free(node)
            failItems(from: first, count: items.count, code: FL_ECANCELED, message: "pool is no longer running")
        }
    }

    private func failItems(from first: UInt64, count: Int, code: Int32, message: String) {
        for i in 0..<count {
            var slot = ResultSlot.pending
            ResultSlot.fail(&slot, status: code == FL_ECANCELED ? FL_ECANCELED : FL_ETASK, code: code, message: message)
            store(slot, index: first + UInt64(i))
        }
    }

    // MARK: Running (worker side)

    override func run(node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        let block = UnsafeRawPointer(node.pointee.arg!)
        let table = block.assumingMemoryBound(to: Int.self)
        for i in 0..<node.pointee.arg_len {
            let index = node.pointee.index + UInt64(i)
            var slot = ResultSlot.pending
            if cancelled || pool.isCancelled {
                ResultSlot.fail(&slot, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled before it ran")
            } else {
                let length = table[2 * i + 1]
                TaskRunner.run(fn, user: user, arg: length > 0 ? block + table[2 * i] : nil, length: length,
                               slot: &slot, index: index, cancelled: pool.cancelledFlag)
            }
            store(slot, index: index)
        }
    }

    private func store(_ slot: fls_slot, index: UInt64) {
        lock.withLock {
            if ordered { byIndex[index] = slot } else { inCompletionOrder.append(slot) }
            arrived.broadcast()
        }
    }

    // MARK: Consuming

    /// The next result: `FL_OK` with its bytes, the item's failure, `FL_EDONE` at the end,
    /// `FL_ESOURCE` once if the source failed, or `FL_ETIMEDOUT`.
    func next(until deadline: Deadline) -> (Int32, UnsafeRawPointer?, Int) {
        feed()
        let outcome: (Int32, UnsafeRawPointer?, Int)? = lock.withLock {
            ResultSlot.clear(&current)
            while true {
                if let slot = takeCompleted() {
                    current = slot
                    handedOut += 1
                    return nil
                }
                if sourceEnded && handedOut == pulled {
                    if sourceFailure != 0 && !sourceFailureReported {
                        sourceFailureReported = true
                        return (Status.fail(FL_ESOURCE, "imap source returned \(sourceFailure) after \(pulled) items"), nil, 0)
                    }
                    return (Status.fail(FL_EDONE, "iterator exhausted after \(pulled) items"), nil, 0)
                }
                if !waitForArrival(until: deadline) && !hasCompleted {
                    return (Status.fail(FL_ETIMEDOUT, "no result before the deadline"), nil, 0)
                }
            }
        }
        if let outcome { return outcome }
        feed()
        return lock.withLock {
            let status = ResultSlot.status(&current, item: Int(currentIndex))
            return (status, ResultSlot.data(&current), status == FL_OK ? current.len : 0)
        }
    }

    /// Runs `body` with the slot of the item handed out last.
    func withCurrentSlot(_ body: (UnsafeMutablePointer<fls_slot>) -> Void) {
        lock.withLock { body(&current) }
    }

    private var hasCompleted: Bool {
        ordered ? byIndex[handedOut] != nil : completionHead < inCompletionOrder.count
    }

    private func takeCompleted() -> fls_slot? {
        if ordered {
            guard let slot = byIndex.removeValue(forKey: handedOut) else { return nil }
            currentIndex = handedOut
            return slot
        }
        guard completionHead < inCompletionOrder.count else { return nil }
        let slot = inCompletionOrder[completionHead]
        currentIndex = handedOut
        completionHead += 1
        if completionHead > 256 && completionHead * 2 > inCompletionOrder.count {
            inCompletionOrder.removeFirst(completionHead)
            completionHead = 0
        }
        return slot
    }

    /// Waits (lock held) for a result to arrive. A worker of the pool runs queued nodes instead
    /// of blocking, so iterating inside a task never deadlocks.
    private func waitForArrival(until deadline: Deadline) -> Bool {
        guard let worker = PoolWorker.current, worker.pool === pool else {
            return arrived.wait(lock, until: deadline)
        }
        lock.unlock()
        defer { lock.lock() }
        let ranOne = TaskNodes.withScratch { scratch in
            guard let node = pool.findWork(for: worker, into: scratch) else { return false }
            pool.execute(node, by: Unmanaged.passUnretained(worker))
            return true
        }
        if ranOne { return true }
        if deadline.hasPassed { return false }
        lock.lock()
        _ = arrived.wait(lock, until: deadline.earlier(than: Deadline(nanosecondsFromNow: 1_000_000)))
        lock.unlock()
        return true
    }

    /// Called when the caller destroys the iterator: no more input is pulled.
    func abandon() {
        feedLock.withLock {
            lock.withLock { sourceEnded = true }
        }
        pool.unregister(self)
    }
}

extension ImapIterator {
    /// Writes the code and message of the item handed out last (0 and "" if it succeeded).
    func describeLastFailure(_ code: UnsafeMutablePointer<CInt>?, _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) {
        withCurrentSlot { slot in
            let failed = slot.pointee.status != FL_OK && slot.pointee.status != FLS_SLOT_PENDING
            code?.pointee = failed ? slot.pointee.code : 0
            message?.pointee = failed ? slot.pointee.message.map { UnsafePointer($0) } ?? ImapIterator.empty : ImapIterator.empty
        }
    }

    private static let emptyText: StaticString = ""
    fileprivate static var empty: UnsafePointer<CChar> {
        UnsafeRawPointer(emptyText.utf8Start).assumingMemoryBound(to: CChar.self)
    }
}

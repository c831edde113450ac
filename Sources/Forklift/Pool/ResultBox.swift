#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The outcome of one submission — an apply, a map, a starmap or a strided map — behind an
/// `fl_result` handle, like multiprocessing's AsyncResult.
///
/// It holds one slot per item (one for apply and strided maps), counts the units of work still
/// outstanding, and becomes ready when the last one completes; then it queues itself on the
/// pool's callback thread if callbacks were given. The handle stays valid while the caller
/// holds it or a callback is pending or running.
final class ResultBox {
    /// What kind of submission produced this result.
    enum Kind { case apply, map, strided }

    let kind: Kind
    let pool: Pool
    /// Item slots: `count` of them.
    let slots: UnsafeMutablePointer<fls_slot>
    let count: Int
    let callback: fl_result_cb?
    let errorCallback: fl_result_cb?
    let callbackUser: UnsafeMutableRawPointer?
    /// The handle given to the caller and to callbacks (0 until registered).
    var handle: UInt64 = 0
    /// Index of the first failed item once ready, or -1.
    private(set) var failedItem = -1
    /// Whatever the submission's tasks need alive until they have run (a typed call's signature).
    var keepAlive: AnyObject?

    /// One allocation: 32 bytes of counters — [0] ready event, [1] holders (caller + pending
    /// callback), [2] caller released, [3] in callback, [4..5] remaining work units (UInt64) —
    /// then the slots.
    private let words: UnsafeMutablePointer<UInt32>
    private let ready: OneShotEvent
    /// Serializes the rare recording of strided kernel failures (shared by all results).
    private static let failureLock = Lock()
    private static let header = 32

    private var holders: UnsafeMutablePointer<UInt32> { words + 1 }
    private var released: UnsafeMutablePointer<UInt32> { words + 2 }
    private var inCallback: UnsafeMutablePointer<UInt32> { words + 3 }
    private var remaining: UnsafeMutablePointer<UInt64> { UnsafeMutableRawPointer(words + 4).assumingMemoryBound(to: UInt64.self) }

    /// - Parameters:
    ///   - items: slots to allocate (at least 1).
    ///   - workUnits: completions (`complete(units:)`) that make the result ready.
    init(kind: Kind, pool: Pool, items: Int, workUnits: Int, callback: fl_result_cb?, errorCallback: fl_result_cb?,
         callbackUser: UnsafeMutableRawPointer?, callerHolds: Bool) {
        self.kind = kind
        self.pool = pool
        self.count = items
        self.callback = callback
        self.errorCallback = errorCallback
        self.callbackUser = callbackUser
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: Self.header + max(items, 1) * MemoryLayout<fls_slot>.stride, alignment: 16)
        words = raw.bindMemory(to: UInt32.self, capacity: Self.header / 4)
        words.initialize(repeating: 0, count: Self.header / 4)
        slots = (raw + Self.header).bindMemory(to: fls_slot.self, capacity: max(items, 1))
        slots.initialize(repeating: ResultSlot.pending, count: max(items, 1))
        ready = OneShotEvent(word: words)
        let hasCallbacks = callback != nil || errorCallback != nil
        holders.pointee = (callerHolds ? 1 : 0) + (hasCallbacks ? 1 : 0)
        remaining.pointee = UInt64(workUnits)
    }

    deinit {
        for i in 0..<max(count, 1) { ResultSlot.clear(slots + i) }
        UnsafeMutableRawPointer(words).deallocate()
    }

    var hasCallbacks: Bool { callback != nil || errorCallback != nil }
    var isReady: Bool { ready.isSet }

    /// Records that `units` units of work finished; the last one makes the result ready and
    /// returns true. The caller then owes the callback thread the result if `hasCallbacks`.
    @inline(__always)
    @discardableResult
    func complete(units: Int) -> Bool {
        guard fls_atomic_sub_u64(remaining, UInt64(units)) == UInt64(units) else { return false }
        finish()
        return true
    }

    /// `complete(units:)`, then queues the callbacks if that made the result ready.
    @inline(__always)
    func completeAndNotify(units: Int) {
        if complete(units: units) && hasCallbacks { pool.callbacks.enqueue(self) }
    }

    private func finish() {
        if kind == .strided {
            // One slot for the whole array: still pending means no chunk failed.
            if slots.pointee.status == FLS_SLOT_PENDING { slots.pointee.status = FL_OK } else { failedItem = 0 }
        } else {
            for i in 0..<count where slots[i].status != FL_OK {
                failedItem = i
                break
            }
        }
        // Ready before any callback is queued, so a callback always sees a ready result.
        ready.signal()
    }

    /// Records the failure of a strided kernel over chunk `chunk`; the lowest chunk wins.
    func recordKernelFailure(chunk: Int, code: Int32, range: Range<Int>) {
        Self.failureLock.withLock {
            let slot = slots
            if slot.pointee.status == FL_ETASK, Int(slot.pointee.reserved) <= chunk { return }
            ResultSlot.fail(slot, status: FL_ETASK, code: code,
                            message: "kernel returned \(code) for elements \(range.lowerBound)..<\(range.upperBound)")
            slot.pointee.reserved = UInt32(truncatingIfNeeded: chunk)
        }
    }

    /// Records that a strided chunk was cancelled (unless a failure is already recorded).
    func recordCancellation() {
        Self.failureLock.withLock {
            if slots.pointee.status == FLS_SLOT_PENDING {
                ResultSlot.fail(slots, status: FL_ECANCELED, code: FL_ECANCELED, message: "cancelled before it ran")
            }
        }
    }

    /// Waits until ready or the deadline; a worker of the same pool helps run tasks meanwhile.
    func wait(until deadline: Deadline) -> Bool {
        if ready.isSet { return true }
        return pool.helpWhileWaiting(until: deadline, isDone: { self.ready.isSet }) { slice in
            self.ready.wait(until: slice)
        }
    }

    /// The overall status of a ready result (the first failed item's, for maps).
    func overallStatus() -> Int32 {
        guard failedItem >= 0 else { return FL_OK }
        return ResultSlot.status(slots + failedItem, item: kind == .map ? failedItem : nil)
    }

    // MARK: Holders and callbacks

    /// Whether the calling thread may use the handle: the caller until it released it, and the
    /// callback thread while it runs this result's callback.
    var isAccessible: Bool {
        if fls_atomic_load_u32(released) == 0 { return true }
        return fls_atomic_load_u32(inCallback) != 0 && pool.callbacks.isCurrentThread
    }

    /// The caller gives up its reference. Returns false if it had already.
    func releaseByCaller() -> Bool {
        guard fls_atomic_exchange_u32(released, 1) == 0 else { return false }
        dropHolder()
        return true
    }

    /// Runs the matching callback on the callback thread, then drops the callback's hold.
    func deliverCallback() {
        let chosen = failedItem < 0 ? callback : errorCallback
        if let chosen {
            fls_atomic_store_u32(inCallback, 1)
            chosen(callbackUser, cHandle(handle))
            fls_atomic_store_u32(inCallback, 0)
        }
        dropHolder()
    }

    private func dropHolder() {
        if fls_atomic_sub_u32(holders, 1) == 1 { Registry.results.retire(handle) }
    }
}

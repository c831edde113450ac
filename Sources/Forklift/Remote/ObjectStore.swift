#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The byte accounting of a runtime's objects (`store_capacity`), and the process-wide
/// resolution counter that `fl_wait` sleeps on.
final class ObjectStore {
    /// Keeps the reference count, which every task or object made changes, off the fields' lines.
    private let padding = CacheLinePadding()
    /// Bytes the store may hold; 0: no limit.
    let capacity: Int
    private let used: UnsafeMutablePointer<UInt64>

    /// Objects alive now.
    private let live: UnsafeMutablePointer<UInt64>

    /// Whether objects of `FLS_SHARE_MINIMUM` bytes or more live in shared memory (the arena,
    /// `forklift_arena.h`), which worker processes map instead of copying (a runtime with
    /// process workers).
    let sharesLargeObjects: Bool

    /// Whether the arena's pages kept for reuse must stay within this store's capacity while
    /// it lives (`fls_arena_add_capacity`).
    private var boundsKeptPages: Bool { sharesLargeObjects && capacity > 0 }

    /// The directory for objects that do not fit the capacity (fl_runtime_set_spill_directory),
    /// or nil: they fail with "object store full". Guarded by `spillLock`.
    private var spillDirectory: String?
    private let spillLock = Lock()

    /// Objects made by fl_create and not sealed yet, held weakly, so that shutdown can fail
    /// them and the tasks waiting for one end (`failUnsealed`). Guarded by `unsealedLock`.
    private var unsealedObjects: [UnsealedObject] = []
    /// The count at which `trackUnsealed` next drops the entries of objects already freed.
    private var unsealedPruneCount = 64
    private let unsealedLock = Lock()

    /// A weak reference to an unsealed object (nil once it has been freed).
    private struct UnsealedObject {
        weak var object: RemoteObject?
    }

    /// The runtime's finished tasks waiting for their last release: every object reaches it
    /// through its store, so releasing a reference releases them first (see `TaskGraveyard`).
    /// Owned by the store, which outlives the runtime's workers and every object.
    let graveyard: TaskGraveyard

    /// What the store's objects contain (fl_ref_contain, fl_task_contain).
    let contained = ContainedRefs()

    init(capacity: Int, sharesLargeObjects: Bool = false, graveyard: TaskGraveyard) {
        self.capacity = capacity
        self.graveyard = graveyard
        self.sharesLargeObjects = sharesLargeObjects
        // A cache line each: objects are made and freed by submitting threads, bytes counted
        // by the threads resolving results too.
        let lines = UnsafeMutableRawPointer.allocate(byteCount: 2 * 64, alignment: 64)
        lines.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * 64)
        used = lines.bindMemory(to: UInt64.self, capacity: 1)
        live = (lines + 64).bindMemory(to: UInt64.self, capacity: 1)
        // The shared memory that freed objects leave for reuse stays within the capacity too.
        if boundsKeptPages { fls_arena_add_capacity(capacity) }
    }

    deinit {
        if boundsKeptPages { fls_arena_remove_capacity(capacity) }
        UnsafeMutableRawPointer(used).deallocate()  // `live` with it
        graveyard.destroy()
    }

    /// Remembers an object whose fl_create buffer waits for fl_seal (see `failUnsealed`).
    func trackUnsealed(_ object: RemoteObject) {
        unsealedLock.withLock {
            if unsealedObjects.count >= unsealedPruneCount {
                unsealedObjects.removeAll { $0.object == nil }
                unsealedPruneCount = max(64, 2 * unsealedObjects.count)
            }
            unsealedObjects.append(UnsealedObject(object: object))
        }
    }

    /// At shutdown: every object still unsealed resolves as FL_ECANCELED, so that tasks taking
    /// one as an argument fail with that cause instead of waiting for ever (a sealed one has
    /// resolved already, and failing it changes nothing). A later fl_seal then changes nothing.
    func failUnsealed() {
        let objects: [RemoteObject] = unsealedLock.withLock {
            defer { unsealedObjects = [] }
            return unsealedObjects.compactMap { $0.object }
        }
        for object in objects {
            object.fail(FL_ECANCELED, code: FL_ECANCELED, message: "the runtime shut down before the object was sealed")
        }
    }

    /// Bytes held now.
    var bytesHeld: UInt64 { fls_atomic_load_u64(used) }
    /// Objects alive now.
    var objectCount: UInt64 { fls_atomic_load_u64(live) }

    func objectCreated() { _ = fls_atomic_add_u64(live, 1) }
    func objectFreed() { _ = fls_atomic_sub_u64(live, 1) }

    /// Counts `bytes` in, unless that would pass the capacity.
    func reserve(bytes: Int) -> Bool {
        let total = fls_atomic_add_u64(used, UInt64(bytes)) + UInt64(bytes)
        if capacity > 0 && total > UInt64(capacity) {
            _ = fls_atomic_sub_u64(used, UInt64(bytes))
            return false
        }
        return true
    }

    /// A pending slot for a new object's value: marked to put large values in shared memory
    /// when the store shares them.
    var newValueSlot: fls_slot {
        var slot = ResultSlot.pending
        if sharesLargeObjects { ResultSlot.shareLarge(&slot) }
        return slot
    }

    /// Counts `bytes` out.
    func release(bytes: Int) { _ = fls_atomic_sub_u64(used, UInt64(bytes)) }

    // MARK: Spilling

    /// Sets (nil: clears) the directory where objects that do not fit go.
    func setSpillDirectory(_ path: String?) throws(Failure) {
        if let path {
            let error = fls_spill_directory_check(path)
            guard error == 0 else {
                throw Failure(FL_EINVAL, "spill directory \(path): \(String(cString: strerror(error)))")
            }
        }
        spillLock.withLock { spillDirectory = path }
    }

    /// The failure of an object that does not fit, when it cannot be spilled (`reason`: why not).
    func fullFailure(reason: String? = nil) -> Failure {
        Failure(FL_ENOMEM, "object store full (capacity \(capacity) bytes)" + (reason.map { "; \($0)" } ?? ""))
    }

    /// Makes `slot` (pending, empty) a file of `length` (> 0) bytes in the spill directory,
    /// mapped for writing, and returns the mapping. Throws the store-full failure when there is
    /// no spill directory or the file cannot be made (disk full, ...).
    func spillBuffer(_ slot: UnsafeMutablePointer<fls_slot>, length: Int) throws(Failure) -> UnsafeMutableRawPointer {
        guard let directory = spillLock.withLock({ spillDirectory }) else { throw fullFailure() }
        var file: Int32 = -1
        guard let mapping = fls_spill_alloc(directory, length, &file) else {
            throw fullFailure(reason: "spilling \(length) bytes to \(directory) failed: "
                                  + String(cString: strerror(errno)))
        }
        ResultSlot.adopt(slot, mapping: mapping, length: length, file: file)
        return mapping
    }

    /// Moves the value in `slot` (ready, not counted in the store) into a spill file mapped in
    /// its place. On failure the slot keeps its value and the store-full failure is thrown.
    func spill(_ slot: UnsafeMutablePointer<fls_slot>) throws(Failure) {
        let length = slot.pointee.len
        var spilled = ResultSlot.pending
        let mapping = try spillBuffer(&spilled, length: length)
        if let data = ResultSlot.data(slot) { mapping.copyMemory(from: data, byteCount: length) }
        ResultSlot.clear(slot)  // frees the value's memory, the point of spilling
        spilled.status = FL_OK
        slot.pointee = spilled
    }

    // MARK: Resolution announcements

    /// Bumped on every resolution while somebody waits in `fl_wait`; a futex word.
    private static let resolutions: UnsafeMutablePointer<UInt32> = {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 32)  // word and waiters, own line
        word.initialize(repeating: 0, count: 32)
        return word
    }()
    private static var waiters: UnsafeMutablePointer<UInt32> { resolutions + 16 }

    static func announceResolution() {
        guard fls_atomic_load_u32(waiters) != 0 else { return }
        _ = fls_atomic_add_u32(resolutions, 1)
        fls_futex_wake(resolutions, Int32.max)
    }

    /// Waits until `isDone()` or the deadline, waking on every resolution. Returns isDone().
    static func waitForResolutions(until deadline: Deadline, isDone: () -> Bool) -> Bool {
        while true {
            _ = fls_atomic_add_u32(waiters, 1)
            let seen = fls_atomic_load_u32(resolutions)
            if isDone() {
                _ = fls_atomic_sub_u32(waiters, 1)
                return true
            }
            let remaining = deadline.remainingNanoseconds
            if remaining == 0 {
                _ = fls_atomic_sub_u32(waiters, 1)
                return isDone()
            }
            _ = fls_futex_wait(resolutions, seen, remaining)
            _ = fls_atomic_sub_u32(waiters, 1)
        }
    }
}

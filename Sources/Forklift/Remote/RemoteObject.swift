import CForklift

/// An object of a remote runtime (what an `fl_ref` names): pending until its task finishes
/// or its value is put, then ready with bytes or failed with a status, code and message —
/// the outcome lives in a result slot, as a pool task's does.
///
/// Tasks that take the object as an argument, and callbacks of fl_ref_on_ready, register as
/// dependents while it is pending and are told when it resolves. Resolution happens once;
/// later attempts are ignored (a task finishing after its runtime shut down the object as
/// cancelled, for instance).
final class RemoteObject {
    /// The outcome: pending, then the value or the failure. It opens the object's 64-byte
    /// block, and four words follow it there (`words`): a remote object is this instance (five
    /// references, 64 bytes with malloc's header) and that block, one cache line.
    let slot: UnsafeMutablePointer<fls_slot>
    private var dependents: [ObjectDependent] = []
    /// The store whose capacity the value's bytes count against.
    let store: ObjectStore
    /// The task whose result this is, read only until the object resolves (fl_cancel, and
    /// fl_get running it inline). Not counted: a task resolves all its outputs before it can
    /// end (it runs, is cancelled, or fails with the runtime's shutdown), and whoever holds
    /// it until then keeps it alive, so an unresolved object's producer is alive. A counted
    /// reference would have to be dropped on resolution, by the worker, on this instance's
    /// line: the submitting thread would then fetch that line back to read the object's value
    /// and to free it (a weak one would give every task a side table). Read under `lock`.
    private unowned(unsafe) var producerTask: RemoteTask?
    /// The buffer fl_create handed out, until fl_seal (its bytes already counted in the store).
    private var unsealed: UnsafeMutablePointer<fls_slot>?

    /// Where the words follow the slot in the block (forklift_shim.h asserts that they fit).
    private static let slotStride = (MemoryLayout<fls_slot>.stride + 15) & ~15

    /// The ready word, the lock word, the resolved and spilled flags, the produced-by-a-task flag.
    private var words: UnsafeMutablePointer<UInt32> {
        (UnsafeMutableRawPointer(slot) + Self.slotStride).assumingMemoryBound(to: UInt32.self)
    }
    /// Set once resolved; `wait` sleeps on it.
    private var ready: OneShotEvent { OneShotEvent(initialized: words) }
    /// Guards `dependents`, `resolved`, `isSpilled`, `producer` and `unsealed`.
    private var lock: WordLock { WordLock(initialized: words + 1) }
    /// Whether the object has resolved (guarded by `lock`).
    private var resolved: Bool {
        get { words[2] & 1 != 0 }
        set { words[2] = newValue ? words[2] | 1 : words[2] & ~1 }
    }
    /// Whether the value (or the unsealed buffer) lives in a spill file, not counted in the
    /// store's bytes (guarded by `lock`; read unlocked only by the last owner).
    private var isSpilled: Bool {
        get { words[2] & 2 != 0 }
        set { words[2] = newValue ? words[2] | 2 : words[2] & ~2 }
    }
    /// Whether a task produces this object (false for a put); set before the object is shared.
    var isTaskResult: Bool { words[3] != 0 }
    /// Whether the object contains others (`contain`), listed in the store's `contained`
    /// (guarded by `lock`; read unlocked only by the last owner).
    private var containsRefs: Bool {
        get { words[2] & 4 != 0 }
        set { words[2] = newValue ? words[2] | 4 : words[2] & ~4 }
    }

    init(store: ObjectStore) {
        self.store = store
        // The slot and the words in one block from the block slabs (made here, often freed on
        // another thread: no malloc arena lock either way).
        guard let block = fls_block_alloc() else { fatalError("out of memory for a remote object") }
        slot = block.bindMemory(to: fls_slot.self, capacity: 1)
        slot.initialize(to: ResultSlot.pending)
        let words = (block + Self.slotStride).bindMemory(to: UInt32.self, capacity: 4)
        _ = OneShotEvent(word: words)
        _ = WordLock(word: words + 1)
        (words + 2).initialize(repeating: 0, count: 2)
        store.objectCreated()
    }

    /// Makes `task` this object's producer; before the object is shared with anyone.
    func setProducer(_ task: RemoteTask) {
        producerTask = task
        words[3] = 1
    }

    /// Forgets the producer, whose submission failed (it ends without resolving the object,
    /// which nobody else holds).
    func dropProducer() {
        lock.withLock { producerTask = nil }
    }

    /// The task producing this object (retained), if the object has not resolved yet.
    var producer: RemoteTask? {
        lock.withLock { () -> RemoteTask? in
            guard !resolved, let task = producerTask else { return nil }
            return task
        }
    }

    deinit {
        if let unsealed {
            if !isSpilled { store.release(bytes: unsealed.pointee.len) }
            ResultSlot.clear(unsealed)
            unsealed.deallocate()
        }
        if slot.pointee.status == FL_OK && !isSpilled { store.release(bytes: slot.pointee.len) }
        // Only callbacks can be left (a task keeps its arguments alive): an unsealed buffer
        // whose last reference went.
        for dependent in dependents { dependent.objectResolved(status: FL_ECANCELED) }
        if containsRefs { store.contained.drop(self) }
        store.objectFreed()
        ResultSlot.clear(slot)
        fls_block_free(slot)  // the words with it
    }

    var isReady: Bool { ready.isSet }

    /// Whether the object has resolved (set before `isReady`, whose waiters are woken after).
    var hasResolved: Bool { lock.withLock { resolved } }

    /// The bytes of a ready value (valid while the object lives).
    var bytes: (data: UnsafeRawPointer?, length: Int) {
        (ResultSlot.data(slot), slot.pointee.len)
    }

    /// A ready value as a worker process receives it: its bytes, and where they live when
    /// they are in shared memory.
    var isolatedArgument: IsolatedCall.Argument {
        IsolatedCall.Argument(data: ResultSlot.data(slot), length: slot.pointee.len, shared: ResultSlot.sharedPlace(slot))
    }

    /// The failure of a failed object, or nil.
    var failure: Failure? { isReady ? ResultSlot.failure(slot) : nil }

    /// Makes this new object a buffer of `length` bytes for the caller to fill (fl_create): it
    /// stays pending, and tasks taking it wait, until `seal`. Returns where to write.
    /// A buffer that does not fit the store's capacity is a spill file, when the store has a
    /// spill directory.
    func createBuffer(length: Int) throws(Failure) -> UnsafeMutableRawPointer {
        let counted = store.reserve(bytes: length)
        let buffer = UnsafeMutablePointer<fls_slot>.allocate(capacity: 1)
        buffer.initialize(to: store.newValueSlot)
        do throws(Failure) {
            let target = counted ? try ResultSlot.reserve(buffer, length: length, external: nil, externalCapacity: 0)
                                 : try store.spillBuffer(buffer, length: length)
            lock.withLock {
                unsealed = buffer
                isSpilled = !counted
            }
            store.trackUnsealed(self)
            return target
        } catch {
            if counted { store.release(bytes: length) }
            ResultSlot.clear(buffer)
            buffer.deallocate()
            throw error
        }
    }

    /// Makes this object keep `inner` alive until it is freed (fl_ref_contain, fl_task_contain)
    /// and returns its index among the objects it contains. Only before it resolves: an
    /// unsealed buffer of fl_create (`asBuffer`), or a task's result while the task runs.
    func contain(_ inner: RemoteObject, asBuffer: Bool) throws(Failure) -> Int {
        guard inner !== self else { throw Failure(FL_EINVAL, "an object cannot contain itself") }
        guard inner.store === store else { throw Failure(FL_EINVAL, "the ref is of another runtime") }
        // Under the lock that resolution takes, so the contents are complete once it has
        // resolved (the table's lock comes after this one, never before).
        let added: Int? = lock.withLock {
            guard !resolved, !asBuffer || unsealed != nil else { return nil }
            containsRefs = true
            return store.contained.add(inner, to: self)
        }
        guard let added else {
            throw Failure(FL_ESTATE, asBuffer ? "the object is not an unsealed buffer of fl_create"
                                              : "the task's result has resolved already (the task was cancelled)")
        }
        return added
    }

    /// How many objects this one contains.
    var containedCount: Int {
        lock.withLock { containsRefs } ? store.contained.count(of: self) : 0
    }

    /// The object at `index` among those this one contains, in the order `contain` added them.
    func containedObject(at index: Int) -> RemoteObject? {
        lock.withLock { containsRefs } ? store.contained.element(of: self, at: index) : nil
    }

    /// Lets go of what the object contains (a task's result before its task runs again).
    func dropContents() {
        let contents: [RemoteObject]? = lock.withLock {
            guard containsRefs else { return nil }
            containsRefs = false
            return store.contained.remove(self)
        }
        withExtendedLifetime(contents) {}
    }

    /// Takes what the object contains out of the store's table, for `ContainedRefs.drop`,
    /// which releases it: the caller holds the object's last reference, so its deinit then
    /// finds nothing to drop. Nil if it contains nothing.
    func takeContentsBeforeFreeing() -> [RemoteObject]? {
        guard containsRefs else { return nil }
        containsRefs = false
        return store.contained.remove(self)
    }

    /// Seals the buffer of `createBuffer`: the object becomes ready with the bytes written.
    /// Throws FL_ESTATE for an object that is not an unsealed buffer, and for one that has
    /// resolved meanwhile (cancelled at the runtime's shutdown): its buffer is freed then.
    func seal() throws(Failure) {
        let buffer: UnsafeMutablePointer<fls_slot>? = lock.withLock {
            defer { unsealed = nil }
            return unsealed
        }
        guard let buffer else { throw Failure(FL_ESTATE, "the object is not an unsealed buffer of fl_create") }
        buffer.pointee.status = FL_OK
        let sealed = resolve(taking: buffer, reserved: true)
        buffer.deallocate()
        guard sealed else {
            let reason = failure?.message ?? "resolved already"
            throw Failure(FL_ESTATE, "the object resolved before it was sealed: \(reason)")
        }
    }

    /// Resolves with `outcome` (a filled slot, which this takes over) unless already resolved,
    /// and tells the dependents. `reserved`: its bytes are accounted for already (counted in
    /// the store, or in a spill file: fl_create's buffer). A value that does not fit the
    /// store's capacity moves to a spill file, or else the object fails with "object store
    /// full". Returns whether this call resolved it.
    @discardableResult
    func resolve(taking outcome: UnsafeMutablePointer<fls_slot>, reserved: Bool = false) -> Bool {
        publish(taking: outcome, account(outcome, reserved: reserved))
    }

    /// How an outcome's bytes are accounted for (see `account`).
    struct Accounting {
        fileprivate var counted = false
        fileprivate var spilled = false
        fileprivate var reserved = false
    }

    /// The first half of `resolve`: counts a value's bytes in the store, or moves them to a
    /// spill file, or turns the outcome into the "object store full" failure. A task calls it
    /// before it counts itself finished, so a value that did not fit counts as a failure.
    /// `publish` must follow.
    func account(_ outcome: UnsafeMutablePointer<fls_slot>, reserved: Bool = false) -> Accounting {
        // Counted (or spilled, which may write a file) before the lock is taken.
        var accounting = Accounting(reserved: reserved)
        // An object already resolved (cancelled) keeps its outcome: no room is taken for this one.
        if outcome.pointee.status == FL_OK && !reserved && !isReady {
            if store.reserve(bytes: outcome.pointee.len) {
                accounting.counted = true
            } else {
                do throws(Failure) {
                    try store.spill(outcome)
                    accounting.spilled = true
                } catch {
                    ResultSlot.clear(outcome)
                    ResultSlot.fail(outcome, status: FL_ENOMEM, code: FL_ENOMEM, message: error.message)
                }
            }
        }
        return accounting
    }

    /// The second half of `resolve`: resolves with the accounted outcome unless already
    /// resolved, and tells the dependents. Returns whether this call resolved it.
    @discardableResult
    func publish(taking outcome: UnsafeMutablePointer<fls_slot>, _ accounting: Accounting) -> Bool {
        var counted = accounting.counted
        let spilled = accounting.spilled, reserved = accounting.reserved
        let waiting: [ObjectDependent]? = lock.withLock {
            guard !resolved else {
                if reserved { counted = !isSpilled }  // fl_create's buffer, counted unless spilled
                return nil
            }
            resolved = true
            if spilled { isSpilled = true }
            slot.pointee = outcome.pointee
            outcome.pointee = ResultSlot.pending
            let taken = dependents
            // Written only when it changes: the task's worker resolves most objects, and a
            // line it writes is one the submitting thread must fetch back to free the object.
            if !taken.isEmpty { dependents = [] }
            return taken
        }
        guard let waiting else {
            if counted, outcome.pointee.status == FL_OK { store.release(bytes: outcome.pointee.len) }
            ResultSlot.clear(outcome)
            return false
        }
        ready.signal()
        ObjectStore.announceResolution()
        for dependent in waiting { dependent.objectResolved(status: ResultSlot.status(slot)) }
        return true
    }

    /// Resolves as failed, unless already resolved.
    @discardableResult
    func fail(_ status: Int32, code: Int32, message: String) -> Bool {
        var outcome = ResultSlot.pending
        ResultSlot.fail(&outcome, status: status, code: code, message: message)
        return resolve(taking: &outcome)
    }

    /// Registers `dependent` to be told when this resolves. False if it already has.
    func addDependent(_ dependent: ObjectDependent) -> Bool {
        lock.withLock {
            guard !resolved else { return false }
            dependents.append(dependent)
            return true
        }
    }

    /// Calls `fn(user, status)` once this has resolved: when it does, or now if it has
    /// (fl_ref_on_ready).
    func onResolution(_ fn: fl_ready_fn, user: UnsafeMutableRawPointer?) {
        if addDependent(.callback(fn, user)) { return }
        // Resolved: the ready flag may not be set yet (publish sets it after the lock).
        _ = ready.wait(until: .forever)
        fn(user, ResultSlot.status(slot))
    }

    /// Waits until resolved or the deadline passes; returns whether resolved.
    func wait(until deadline: Deadline) -> Bool {
        ready.wait(until: deadline)
    }

    /// The bytes of the value once it is ready (waiting as `waitHelping`, until `deadline`);
    /// throws FL_ETIMEDOUT, or the failure with its status (which becomes the last error).
    func view(until deadline: Deadline) throws(Failure) -> (data: UnsafeRawPointer?, length: Int) {
        guard waitHelping(until: deadline) else { throw Failure(FL_ETIMEDOUT, "object not ready at the deadline") }
        if let failure { throw Failure(ResultSlot.status(slot), failure.message) }
        return bytes
    }

    /// Tells the actor whose call produces this object, if it is one still to run, that a
    /// thread waits for it: a worker gathering the actor's calls takes them now.
    func hurryProducer() {
        producer?.actor?.hurry()
    }

    /// `wait`, but on a pool worker (a remote task waiting for tasks it submitted) it runs
    /// other queued tasks meanwhile, so the runtime cannot starve itself.
    func waitHelping(until deadline: Deadline) -> Bool {
        if isReady { return true }
        // With no deadline, run the producing task here if no worker has taken it yet.
        if let producer {
            if deadline.isForever && producer.runInlineIfQueued() && isReady { return true }
            producer.actor?.hurry()
        }
        return Self.waitHelping(until: deadline, isDone: { isReady }) { slice in wait(until: slice) }
    }

    /// Waits with `sleep` until `isDone()` or the deadline; on a pool worker (a remote task
    /// waiting for tasks it submitted) it runs other queued tasks meanwhile, so the runtime
    /// cannot starve itself. Returns isDone().
    static func waitHelping(until deadline: Deadline, isDone: () -> Bool, sleep: (Deadline) -> Bool) -> Bool {
        // A poll (a deadline already past) only looks: it runs nothing, lends nothing.
        if deadline.hasPassed { return isDone() }
        // A task holding CPUs lends them while it waits, so the tasks it waits for can start
        // (on a worker, or on a thread that runs it inline in its own fl_get).
        let running = fls_tls_remote_task().map { Unmanaged<RemoteTask>.fromOpaque($0).takeUnretainedValue() }
        let lender = running?.holdsCPUs == true ? running : nil
        if let lender { lender.runtime.cpus.lend(lender) }
        defer { if let lender { lender.runtime.cpus.takeBack(lender) } }
        guard let worker = PoolWorker.current else { return sleep(deadline) }
        return worker.pool.helpWhileWaiting(until: deadline, isDone: isDone, block: sleep)
    }
}

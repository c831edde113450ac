#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// One remote task: its function, its arguments (copied blobs and objects), and the object
/// its outcome goes to.
///
/// Dataflow: `pending` counts the argument objects not yet resolved, plus one held by the
/// submission itself. Each resolving argument takes one off; whoever takes the last one
/// schedules the task — so it waits for its arguments without holding a worker. An argument
/// that failed fails the task with that cause, without running it.
final class RemoteTask: PoolJob {
    /// An argument: bytes copied at submission (at `offset` in `blobBytes`), or an object.
    enum Argument {
        case blob(offset: Int, length: Int)
        case object(RemoteObject)
    }

    let fn: fl_remote_fn
    let user: UnsafeMutableRawPointer?
    /// A typed task's signature and C function (`fn` is then `typedRemoteTrampoline`, `user`
    /// this call); kept alive by the task.
    let typed: TypedCall?
    private(set) var arguments: [Argument]
    /// The copied blob arguments, back to back (malloc'd: see `RemoteArguments`).
    private let blobBytes: UnsafeMutableRawPointer?
    let output: RemoteObject
    /// Outputs 1... of a task with several returns (fl_remote_multi); empty for one.
    let extraOutputs: [RemoteObject]
    let options: RemoteOptions
    // The flags follow the options' last bytes, and the worker-process pointer is reached
    // through `pending`: the instance stays at 120 bytes, a 128-byte malloc chunk, which glibc
    // frees into its fast bins (a larger one is merged with its free neighbours, and a
    // stream of tasks then keeps malloc consolidating).
    /// Whether this is the actor's constructor rather than a method call.
    let constructsActor: Bool
    /// An actor call whose arguments have resolved, or that was cancelled: it may take its
    /// turn (guarded by the actor's lock).
    var argumentsAreReady = false
    /// An actor call in its actor's queue, registered with its arguments, that is not ready
    /// yet (guarded by the actor's lock): only such a call is marked ready, once.
    var waitsInQueue = false
    /// Whether the task holds `options.cpus` of the runtime's CPUs (see `CPUAccount`).
    var holdsCPUs = false
    let runtime: RemoteRuntime
    /// The actor this is a call (or the constructor) of; nil for a plain task.
    let actor: RemoteActor?
    /// The actor, not retained (the task keeps it): for the worker running its calls.
    var actorIfAny: Unmanaged<RemoteActor>? { actor.map { Unmanaged.passUnretained($0) } }
    private let pending: UnsafeMutablePointer<UInt32>
    /// The worker process running the task now (an isolated task), for fl_cancel and
    /// fl_cancel_force to wake its proxy; for an isolated actor's call, `Self.runningInActor`
    /// while it runs (the actor's process is reached through the actor, which keeps it alive).
    private var runningIn: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        UnsafeMutableRawPointer(pending + 4).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    init(fn: fl_remote_fn, user: UnsafeMutableRawPointer?, arguments: [Argument], blobBytes: UnsafeMutableRawPointer?,
         output: RemoteObject, extraOutputs: [RemoteObject] = [], options: RemoteOptions, runtime: RemoteRuntime,
         actor: RemoteActor? = nil, constructsActor: Bool = false, typed: TypedCall? = nil,
         releaseUser: ReleaseUser? = nil) {
        self.typed = typed
        self.extraOutputs = extraOutputs
        self.actor = actor
        self.constructsActor = constructsActor
        self.fn = fn
        self.user = user
        self.arguments = arguments
        self.blobBytes = blobBytes
        self.output = output
        self.options = options
        self.runtime = runtime
        // One block: the count, the cancel flag, the force-cancel flag, the claim word, then
        // `runningIn`, the abandoned flag, the links of nested tasks (`ChildTasks`), and the
        // options' `release_user`.
        guard let words = fls_block_alloc() else { fatalError("out of memory for a remote task") }
        pending = words.bindMemory(to: UInt32.self, capacity: 4)
        pending.initialize(to: 1)
        (pending + 1).initialize(repeating: 0, count: 3)
        (words + 16).bindMemory(to: UnsafeMutableRawPointer?.self, capacity: 1).initialize(to: nil)  // `runningIn`
        (words + 24).bindMemory(to: UInt32.self, capacity: 2).initialize(repeating: 0, count: 2)  // `abandonedFlag`, `cancelsChildrenFlag`
        // `childrenWord`, `parentWord`, then `indexInParent`.
        (words + 32).bindMemory(to: UnsafeMutableRawPointer?.self, capacity: 2).initialize(repeating: nil, count: 2)
        (words + 48).bindMemory(to: Int.self, capacity: 1).initialize(to: 0)
        (words + 56).bindMemory(to: UnsafeMutableRawPointer?.self, capacity: 1)
            .initialize(to: releaseUser.map { unsafeBitCast($0, to: UnsafeMutableRawPointer.self) })
        super.init()
        output.setProducer(self)
        for extra in extraOutputs { extra.setProducer(self) }
    }

    /// Runs an isolated task from its node in the runtime's process pool: on the pool's thread,
    /// which sends the function to its worker process.
    override func run(node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        run()
    }

    /// The bytes of an instance (what swift_allocObject asks for; see the note on the flags).
    static let instanceBytes = 120

    /// Starts fetching for writing what freeing the task writes besides the instance
    /// (`TaskGraveyard`): its block, and its output's reference count (which the worker that
    /// resolved the output wrote last).
    func prefetchForRelease() {
        fls_prefetch_for_write(pending)
        fls_prefetch_for_write(Unmanaged.passUnretained(output).toOpaque())
    }

    /// Set by fl_cancel; a running task reads it through fl_task_cancelled.
    private var cancelFlag: UnsafeMutablePointer<UInt32> { pending + 1 }

    var isCancelled: Bool { fls_atomic_load_u32(cancelFlag) != 0 }

    // MARK: Who runs a queued task

    /// 0 until the task goes into the pool's queue, then `queued` while a pool node carries
    /// it, then `claimed` by whichever thread takes it first: the worker that pops the node,
    /// or a thread waiting in fl_get for this task's output (`runInlineIfQueued`).
    private var claimWord: UnsafeMutablePointer<UInt32> { pending + 3 }
    private static let queued: UInt32 = 1
    private static let claimed: UInt32 = 2

    /// The task is about to go into the pool's queue; from now on a waiting thread may claim it.
    func markQueued() {
        fls_atomic_store_u32(claimWord, Self.queued)
    }

    /// Undoes `markQueued` for a call that stays in its actor's queue after all (nobody can
    /// have claimed it: see `RemoteActor.handHeadToLingerer`).
    func unmarkQueued() {
        fls_atomic_store_u32(claimWord, 0)
    }

    /// Undoes `markQueued` for a task the pool refused: false if a waiting thread claimed it
    /// first (that thread then runs it, and the refusal is moot).
    func withdrawFromQueue() -> Bool {
        var expected = Self.queued
        return fls_atomic_cas_u32(claimWord, &expected, 0)
    }

    /// Claims the task for the worker that popped its node: false if a waiting thread took
    /// it first (the worker then drops the node).
    func claimForWorker() -> Bool {
        var expected = Self.queued
        return fls_atomic_cas_u32(claimWord, &expected, Self.claimed)
    }

    /// Runs the task on the calling thread, which waits for its output with no deadline, if
    /// it sits in the pool's queue and may run on any thread (not isolated); returns whether
    /// it did. This saves the hand-offs to a worker and back, as a TBB or .NET wait runs a
    /// task that has not started. An actor call is left to its worker when others wait behind
    /// it; if one became ready meanwhile, it goes to the pool rather than holding this thread.
    func runInlineIfQueued() -> Bool {
        guard !options.isolate, fls_atomic_load_u32(claimWord) == Self.queued else { return false }
        if let actor, actor.isIsolated || actor.hasWaitingCalls { return false }
        // Counted before the claim, so a shutdown that saw no inline run also sees the claim
        // fail or the task find the runtime shut down.
        runtime.inlineRunStarted()
        defer { runtime.inlineRunEnded() }
        var expected = Self.queued
        guard fls_atomic_cas_u32(claimWord, &expected, Self.claimed) else { return false }
        run()
        if let actor, let next = actor.callEnded() { actor.start(next) }
        return true
    }

    /// Set when the submission failed (`abandon`): the task then ends with its outputs pending.
    private var abandonedFlag: UnsafeMutablePointer<UInt32> { pending + 6 }

    /// The task's submission failed: it ends without running, and its outputs, which nobody
    /// else holds, forget it.
    func abandon() {
        abandonedFlag.pointee = 1
        output.dropProducer()
        for extra in extraOutputs { extra.dropProducer() }
    }

    /// Cancels the task (fl_cancel): its output resolves as cancelled now unless it already
    /// has; a task not yet running never runs, a running one sees fl_task_cancelled (in its
    /// worker process too, for an isolated task or actor call: its proxy is woken to pass the
    /// cancel on). With `force` (fl_cancel_force), an isolated task running now has its worker
    /// process killed instead. With `recursive` (fl_cancel's default, as in Ray), the tasks it
    /// submitted while running that have not ended are cancelled the same way, and so is every
    /// task it submits from now on (see `ChildTasks`).
    func cancel(force: Bool, recursive: Bool = true) {
        if force { fls_atomic_store_seq_cst_u32(cancelFlag + 1, 1) }
        if recursive { fls_atomic_store_seq_cst_u32(cancelsChildrenFlag, 1) }
        fls_atomic_store_seq_cst_u32(cancelFlag, 1)
        output.fail(FL_ECANCELED, code: FL_ECANCELED, message: "the task was cancelled")
        for extra in extraOutputs { extra.fail(FL_ECANCELED, code: FL_ECANCELED, message: "the task was cancelled") }
        // An actor call waiting for an argument is skipped in its turn rather than holding
        // the calls behind it until the argument resolves.
        actor?.callCancelled(self)
        // Flags first, then the process: the proxy publishes the process before it looks at
        // the flags, so one of the two sees the other.
        fls_fence_seq_cst()
        // Then the tasks it submitted (the list, once made, sees the cancel too: see `adopt`).
        if recursive, let children = fls_atomic_load_seq_cst_ptr(childrenWord) {
            Unmanaged<ChildTasks>.fromOpaque(children).takeUnretainedValue().cancelAll(force: force)
        }
        guard let process = fls_atomic_load_seq_cst_ptr(runningIn) else { return }
        if process == Self.runningInActor {
            actor?.wakeProcess()
        } else {
            Unmanaged<WorkerProcess>.fromOpaque(process).takeUnretainedValue().checkTaskWords()
        }
    }

    // MARK: Nested tasks

    /// Set by a recursive cancel (before `cancelFlag`): the children are cancelled too.
    private var cancelsChildrenFlag: UnsafeMutablePointer<UInt32> { pending + 7 }

    /// The `ChildTasks` of the tasks this one submitted while running (retained; nil until its
    /// first). Written once, by the task's own thread; read by fl_cancel.
    private var childrenWord: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        UnsafeMutableRawPointer(pending + 8).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }
    /// The `ChildTasks` this task is listed in (retained), while it is: a nested task.
    private var parentWord: UnsafeMutablePointer<UnsafeMutableRawPointer?> { childrenWord + 1 }
    /// Its index in that list (read and written under the list's lock).
    var indexInParent: Int {
        get { UnsafeMutableRawPointer(pending + 12).load(as: Int.self) }
        set { UnsafeMutableRawPointer(pending + 12).storeBytes(of: newValue, as: Int.self) }
    }

    /// Makes `child`, a task of this runtime submitted on the thread running this task, one of
    /// its children, before the child starts: cancelling this task cancels it too.
    func adopt(_ child: RemoteTask) {
        let list: ChildTasks
        if let made = childrenWord.pointee {
            list = Unmanaged<ChildTasks>.fromOpaque(made).takeUnretainedValue()
        } else {
            list = ChildTasks()
            // Published before the first child goes in: a cancel from now on finds the list
            // (then the child, or the list's cancelled mark when adding); one before saw no
            // list, but set the flag that the next line reads.
            _ = fls_atomic_exchange_ptr(childrenWord, Unmanaged.passRetained(list).toOpaque())
        }
        if let forced = list.add(child) { child.cancel(force: forced) }
        else if fls_atomic_load_seq_cst_u32(cancelsChildrenFlag) != 0 {
            list.cancelAll(force: fls_atomic_load_u32(cancelFlag + 1) != 0)
        }
    }

    /// The list calls this as it adds the task (under its lock).
    func joinedParent(_ list: ChildTasks, at index: Int) {
        indexInParent = index
        parentWord.pointee = Unmanaged.passRetained(list).toOpaque()
    }

    /// A nested task that ends (before its outputs resolve) leaves its parent's list.
    @inline(__always)
    private func leaveParent() {
        guard parentWord.pointee != nil else { return }
        leaveParentList()
    }

    private func leaveParentList() {
        guard let raw = fls_atomic_exchange_ptr(parentWord, nil) else { return }
        let list = Unmanaged<ChildTasks>.fromOpaque(raw).takeRetainedValue()
        list.remove(self)
    }

    /// The function returned: the tasks it submitted are no longer cancelled with this one.
    private func closeChildren() {
        guard let children = childrenWord.pointee else { return }
        Unmanaged<ChildTasks>.fromOpaque(children).takeUnretainedValue().close()
    }

    // MARK: The user pointer's release

    /// The C type of `fl_remote_options.release_user`.
    typealias ReleaseUser = @convention(c) (UnsafeMutableRawPointer?) -> Void

    /// The options' `release_user` until it has been called (nil for none).
    private var releaseUserWord: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        UnsafeMutableRawPointer(pending + 14).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    /// Calls `release_user` with `user` the first time the runtime is done with the task: after
    /// its last run, as it ends without running, or (should a way to end miss it) as it is freed.
    @inline(__always)
    private func releaseUserOnce() {
        guard releaseUserWord.pointee != nil, let raw = fls_atomic_exchange_ptr(releaseUserWord, nil) else { return }
        unsafeBitCast(raw, to: ReleaseUser.self)(user)
    }

    /// What `runningIn` holds while an isolated actor's call runs: a mark, not a process.
    private static let runningInActor = UnsafeMutableRawPointer(bitPattern: 1)!

    deinit {
        // Its outputs do not keep it alive (`RemoteObject.producer`): a task must resolve them
        // before it ends, unless its submission failed.
        assert(abandonedFlag.pointee != 0 || (output.hasResolved && extraOutputs.allSatisfy { $0.hasResolved }),
               "a remote task ended with an output still pending")
        // A child still linked here has a closed parent list (an open one would hold it).
        if let parent = parentWord.pointee { Unmanaged<ChildTasks>.fromOpaque(parent).release() }
        if let children = childrenWord.pointee { Unmanaged<ChildTasks>.fromOpaque(children).release() }
        if abandonedFlag.pointee == 0 { releaseUserOnce() }
        fls_block_free(pending)  // `runningIn` and the links with it
        free(blobBytes)
    }

    /// Whether any argument is an object (which the task may have to wait for).
    var takesObjects: Bool {
        arguments.contains { if case .object = $0 { return true } else { return false } }
    }

    /// How many results the task has (num_returns).
    var outputCount: Int { 1 + extraOutputs.count }

    /// Result `index` (0: `output`).
    func output(at index: Int) -> RemoteObject { index == 0 ? output : extraOutputs[index - 1] }

    /// Registers with every pending argument, then drops the submission's own count: the task
    /// is scheduled now if nothing is pending, else by the last argument to resolve.
    func start() {
        registerWithArguments()
        dependencyResolved()
    }

    /// Registers with every pending argument, keeping the submission's own count: until
    /// `dependencyResolved` drops it, no resolution makes the task ready.
    func registerWithArguments() {
        for case .object(let object) in arguments {
            // Counted before registering: the object may resolve (and take its count off)
            // the moment it has the task. The submission's own count keeps this above zero.
            _ = fls_atomic_add_u32(pending, 1)
            if !object.addDependent(.task(self)) { _ = fls_atomic_sub_u32(pending, 1) }
        }
    }

    /// One argument resolved (or the submission finished registering).
    func dependencyResolved() {
        guard fls_atomic_sub_u32(pending, 1) == 1 else { return }
        // An actor runs its calls in order: the actor decides when (it checks arguments then).
        if let actor {
            actor.argumentsReady(self)
            return
        }
        if failArgumentCause() { return }
        runtime.schedule(self)
    }

    /// If an argument failed, fails the task with that cause (same status and code, its message
    /// behind this one) and returns true.
    func failArgumentCause() -> Bool {
        for (index, argument) in arguments.enumerated() {
            guard case .object(let object) = argument, object.isReady,
                  let cause = ResultSlot.recordedFailure(object.slot) else { continue }
            // fl_get adds the code once for the whole chain.
            finish(status: cause.status, code: cause.code, message: "argument \(index) failed: \(cause.message)")
            return true
        }
        return false
    }

    /// Runs the function on the calling worker thread and resolves the output, then gives
    /// back the CPUs it held.
    func run() {
        runBody()
        if holdsCPUs { runtime.cpus.release(self) }
    }

    private func runBody() {
        if runtime.isShutDown {
            finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "runtime shut down before the task ran")
            return
        }
        if isCancelled {
            finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "the task was cancelled")
            return
        }
        if actor != nil && failArgumentCause() { return }
        var user = self.user
        if let actor, !constructsActor {
            if let failure = actor.constructorFailure {
                finish(status: actor.callStatusAfterConstructorFailure, code: failure.code,
                       message: "the actor's constructor failed: \(failure.message)")
                return
            }
            user = actor.state
        }
        runtime.taskRunning(1)
        // The running task, for fl_get (a counted task lends its CPUs while it waits: see
        // RemoteObject.waitHelping) and for shutdown (refused from a task of its runtime).
        let thread = fls_tls_state()!
        let outerTask = thread.pointee.remote_task
        thread.pointee.remote_task = Unmanaged.passUnretained(self).toOpaque()
        defer { thread.pointee.remote_task = outerTask }
        var outcome = runtime.store.newValueSlot
        let tracing = runtime.timeline.isRecording
        let started = tracing ? fls_monotonic_ns() : 0
        if options.isolate || actor?.isIsolated == true {
            runIsolated(into: &outcome)
            releaseUserOnce()
        } else {
            runOnThread(user: user, into: &outcome)
        }
        closeChildren()
        if tracing {
            runtime.timeline.record(Timeline.Event(function: calledFunction(fn, typed: typed),
                                                   user: typed == nil ? UnsafeRawPointer(self.user) : nil,
                                                   thread: fls_thread_id(),
                                                   startNanoseconds: started, endNanoseconds: fls_monotonic_ns(),
                                                   status: outcome.status,
                                                   isActorCall: actor != nil && !constructsActor,
                                                   label: constructsActor ? "actor constructor" : nil))
        }
        // Counted and let go of before the output resolves, so whoever sees the output
        // ready also sees the counters and the argument objects' references updated; a value
        // that does not fit the store has become its failure by then. The arguments go
        // first: one whose last reference this task held gives its bytes back before the
        // value asks for room.
        dropArguments()
        let accounting = output.account(&outcome)
        runtime.taskRunning(-1)
        runtime.finished(failed: outcome.status != FL_OK || isCancelled)
        if constructsActor, let actor { actor.constructed(failure: ResultSlot.failure(&outcome)) }
        leaveParent()
        output.publish(taking: &outcome, accounting)
    }

    /// Runs the function on this thread (`user`: the task's, or the actor's state), again
    /// while `shouldRunAgain` says so, and resolves the extra outputs.
    private func runOnThread(user: UnsafeMutableRawPointer?, into outcome: UnsafeMutablePointer<fls_slot>) {
        var attempts = 0
        // The argument views live on the stack for the call: no allocation per task.
        withUnsafeTemporaryAllocation(of: fl_blob.self, capacity: max(1, arguments.count)) { blobs in
            for (index, argument) in arguments.enumerated() {
                switch argument {
                case .blob(let offset, let length):
                    blobs[index] = fl_blob(data: blobBytes.map { UnsafeRawPointer($0 + offset) }, len: length)
                case .object(let object):
                    let bytes = object.bytes
                    blobs[index] = fl_blob(data: bytes.data, len: bytes.length)
                }
            }
            let args = UnsafeBufferPointer(start: blobs.baseAddress, count: arguments.count)
            var call = Call(fn: fn, user: user, args: args.baseAddress, count: args.count)
            let extras = ExtraOutputs(count: extraOutputs.count)
            while true {
                withUnsafeMutablePointer(to: &call) { call in
                    // Set for every task (nil for one return), so a task run while another waits
                    // on this thread never sees the other's outputs.
                    let thread = fls_tls_state()!
                    let outer = thread.pointee.remote_outputs
                    thread.pointee.remote_outputs = extras.header.map { UnsafeMutableRawPointer($0) }
                    TaskRunner.run(Self.trampoline, user: UnsafeMutableRawPointer(call), arg: nil, length: 0,
                                   slot: outcome, index: 0, cancelled: cancelFlag)
                    thread.pointee.remote_outputs = outer
                }
                attempts += 1
                guard shouldRunAgain(outcome, attempts: attempts) else { break }
                extras.clear()
            }
            releaseUserOnce()
            if extras.count > 0 { resolveExtraOutputs(extras, outcome: outcome) }
        }
    }

    /// Whether a task that ended with `outcome` after `attempts` runs runs again: a failure,
    /// with retries left, when it asked for retries on error or its worker process died. If
    /// so, empties `outcome` for the next run.
    private func shouldRunAgain(_ outcome: UnsafeMutablePointer<fls_slot>, attempts: Int) -> Bool {
        let status = outcome.pointee.status
        guard status != FL_OK, options.retryOnError || status == FL_EWORKER, attempts <= options.maxRetries,
              !runtime.isShutDown, !isCancelled else { return false }
        ResultSlot.clear(outcome)
        outcome.pointee = runtime.store.newValueSlot
        // The next run starts with empty results: what this one contained goes.
        for index in 0..<outputCount { output(at: index).dropContents() }
        return true
    }

    /// Runs the task in a worker process: an isolated task in the process its pool thread
    /// feeds (killed if fl_cancel_force says so), an isolated actor's constructor or call in
    /// the actor's own process.
    private func runIsolated(into outcome: UnsafeMutablePointer<fls_slot>) {
        let target = constructsActor ? unsafeBitCast(actor!.constructor, to: UnsafeRawPointer.self)
                                     : calledFunction(fn, typed: typed)
        let packed = IsolatedCall(fn: target, user: constructsActor ? actor!.user : typed == nil ? user : nil,
                                  isMethod: actor != nil && !constructsActor, signature: typed?.signature,
                                  arguments: arguments.map { argument in
            switch argument {
            case .blob(let offset, let length):
                return IsolatedCall.Argument(data: blobBytes.map { UnsafeRawPointer($0 + offset) }, length: length, shared: nil)
            case .object(let object):
                return object.isolatedArgument
            }
        })
        defer { packed.deallocate() }
        if let actor {
            if constructsActor {
                // The process keeps the packed call to run the constructor again at a restart;
                // the places in it stay valid only while the argument objects live.
                let objects = arguments.compactMap { argument -> RemoteObject? in
                    if case .object(let object) = argument { return object } else { return nil }
                }
                actor.startProcess(packed, keeping: objects, outcome: outcome)
            } else {
                _ = fls_atomic_exchange_ptr(UnsafeMutablePointer(runningIn), Self.runningInActor)
                actor.runInProcess(packed, cancel: cancelFlag, outcome: outcome)
                _ = fls_atomic_exchange_ptr(UnsafeMutablePointer(runningIn), nil)
            }
            return
        }
        guard let raw = fls_tls_worker_process() else {
            ResultSlot.fail(outcome, status: FL_ESTATE, code: FL_ESTATE, message: "an isolated task ran outside a worker process")
            return
        }
        let process = Unmanaged<WorkerProcess>.fromOpaque(raw).takeUnretainedValue()
        var attempts = 0
        while true {
            _ = fls_atomic_exchange_ptr(UnsafeMutablePointer(runningIn), raw)
            process.run(fls_remote_child_task, user: nil, arg: UnsafeRawPointer(packed.bytes), length: packed.length,
                        slot: outcome, external: nil, externalCapacity: 0, index: 0, cancel: cancelFlag,
                        abort: cancelFlag + 1)
            _ = fls_atomic_exchange_ptr(UnsafeMutablePointer(runningIn), nil)
            attempts += 1
            guard shouldRunAgain(outcome, attempts: attempts) else { break }
        }
    }

    /// Lets go of the arguments, writing the task only if it has any (see
    /// `RemoteObject.resolve`: the submitting thread frees the task).
    private func dropArguments() {
        if !arguments.isEmpty { arguments = [] }
    }

    /// Resolves the output as failed without running.
    func finish(status: Int32, code: Int32, message: String) {
        runtime.finished(failed: true)
        dropArguments()
        releaseUserOnce()
        if constructsActor, let actor { actor.constructed(failure: Failure(status, message)) }
        leaveParent()
        for extra in extraOutputs { extra.fail(status, code: code, message: message) }
        output.fail(status, code: code, message: message)
    }

    /// Outputs 1... get the values returned for them (empty when none was), or the task's
    /// failure; before output 0, so whoever sees output 0 resolved sees them all resolved.
    private func resolveExtraOutputs(_ extras: ExtraOutputs, outcome: UnsafeMutablePointer<fls_slot>) {
        let failure = ResultSlot.recordedFailure(outcome)
        for (index, extra) in extraOutputs.enumerated() {
            let slot = extras.slots! + index
            if let failure {
                extra.fail(failure.status, code: failure.code, message: failure.message)
                ResultSlot.clear(slot)
            } else {
                if slot.pointee.status == FLS_SLOT_PENDING { slot.pointee.status = FL_OK }
                extra.resolve(taking: slot)
            }
        }
        extras.release()
    }

    /// What the blob-convention trampoline needs to call a remote function.
    private struct Call {
        let fn: fl_remote_fn
        let user: UnsafeMutableRawPointer?
        let args: UnsafePointer<fl_blob>?
        let count: Int
    }

    private static let trampoline: fl_task_fn = { raw, _, _, ctx in
        let call = raw!.assumingMemoryBound(to: Call.self)
        return call.pointee.fn(call.pointee.user, call.pointee.args, call.pointee.count, ctx)
    }
}

/// The options of one remote task (from `fl_remote_options`).
struct RemoteOptions {
    var maxRetries = 0
    /// CPUs held while running; 0: not counted.
    var cpus = 0
    var retryOnError = false
    /// Runs in one of the runtime's worker processes.
    var isolate = false
}

/// The result slots of outputs 1... while their task runs, found by fl_task_return_at
/// through a thread-local pointer to `header`. Nothing is allocated for a task with one return.
struct ExtraOutputs {
    let count: Int
    let slots: UnsafeMutablePointer<fls_slot>?
    /// What the thread-local points to: the count, then the slots' address.
    let header: UnsafeMutablePointer<Int>?

    init(count: Int) {
        self.count = count
        guard count > 0 else {
            slots = nil
            header = nil
            return
        }
        let slots = UnsafeMutablePointer<fls_slot>.allocate(capacity: count)
        slots.initialize(repeating: ResultSlot.pending, count: count)
        let header = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        header[0] = count
        header[1] = Int(bitPattern: slots)
        self.slots = slots
        self.header = header
    }

    /// Empties every slot (before a retry).
    func clear() {
        guard let slots else { return }
        for index in 0..<count { ResultSlot.clear(slots + index) }
    }

    /// Frees the slots (their values taken or cleared).
    func release() {
        slots?.deallocate()
        header?.deallocate()
    }

    /// The slot of output `index` (1...) of the task running on this thread.
    static func slot(_ index: Int) throws(Failure) -> UnsafeMutablePointer<fls_slot> {
        guard let raw = fls_tls_remote_outputs() else {
            throw Failure(FL_ERANGE, "return index \(UInt(bitPattern: index)) out of range: the task has one return")
        }
        let header = raw.assumingMemoryBound(to: Int.self)
        // size_t arrives as Int: an index of 2^63 or more is negative here.
        guard index >= 1, index <= header[0] else {
            throw Failure(FL_ERANGE, "return index \(UInt(bitPattern: index)) out of range: the task has \(header[0] + 1) returns")
        }
        return UnsafeMutablePointer<fls_slot>(bitPattern: header[1])! + (index - 1)
    }
}

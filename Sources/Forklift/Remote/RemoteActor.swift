import CForklift
import Glibc

/// An actor (`fl_actor`): state built by a constructor, and calls that run against it one at a
/// time in submission order (or up to `maxConcurrency` at once), each a remote task whose
/// `user` is the state.
///
/// Calls (the constructor first) wait in `queue` in submission order. A call whose arguments
/// have resolved, or that was cancelled (it resolves as such in its turn, without waiting for
/// them), is marked ready; `pump` starts calls from the head while the head is ready and
/// fewer than `maxConcurrency` run, so a call never overtakes an earlier one. A call that
/// ends lets `pump` start the next. `kill` cancels the calls that have not started and frees
/// the state once the running ones have ended; the runtime keeps every actor until its state is freed, and
/// kills those still alive when it shuts down.
///
/// A worker whose call ends with none ready behind it lingers for a moment, keeping the
/// actor's running slot (`workerCallEnded`, for actors running one call at a time): a call
/// submitted meanwhile is handed to it through `handOff`, not through the pool's queue, and
/// neither side takes the lock from the other. A caller that pipelines calls on an actor then
/// pays only for queueing each one. While calls pile up faster than they run (the worker's
/// last batch held two or more and emptied the queue), the worker gathers them between
/// batches instead of lingering: it leaves the queue to the caller for about 30 µs, or until
/// a thread waits for one of the calls (`hurry`, from fl_get and fl_wait), so the two threads
/// meet once per batch rather than once per call.
///
/// An isolated actor (`isolation` set) lives in a worker process of its own: its constructor
/// runs there as the process's initializer (so a restarted process builds the state again),
/// and each call is a request to that process, made by whichever runtime thread runs the call
/// (one at a time). Killing it, or shutting the runtime down, ends the process.
final class RemoteActor {
    /// Keeps the reference count, which every call made changes, off the fields' lines.
    private let padding = CacheLinePadding()

    // What the threads running calls read: set at creation, or once by the constructor.
    let runtime: RemoteRuntime
    private let maxConcurrency: Int
    let constructor: fl_actor_init_fn
    private let freeState: fl_actor_free_fn?
    let user: UnsafeMutableRawPointer?
    /// How an isolated actor's process runs (restarts, retries); nil for an actor on threads.
    private let isolation: ProcessSettings?
    /// The state the constructor made (valid once it has run).
    private(set) var state: UnsafeMutableRawPointer?
    /// Set when the constructor failed.
    private(set) var constructorFailure: Failure?
    /// Set (before `constructorFailure`) when an isolated actor's process died in the
    /// constructor at every start allowed, or a kill or shutdown ended its restarts.
    private var diedInConstructor = false
    /// Where a lingering worker waits for the next call.
    private let handOff = ActorHandOff()

    /// Keeps what the submitting threads write at every call off the lines read above.
    private let separator = CacheLinePadding()

    // Guarded by `lock`: written by the threads submitting calls, and when calls end.
    /// Guards the queue, the counts and the flags: a word lock, which spins briefly before it
    /// sleeps (the submitting thread and the thread running the calls hold it for a few
    /// instructions per call, so a futex sleep there would cost more than the wait). The
    /// word has a cache line of its own.
    private let lock = WordLock(word: UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
                                    .bindMemory(to: UInt32.self, capacity: 1))
    /// The calls in submission order from `head` on, each retained by the queue; taking one
    /// moves that reference out with it (to whoever runs it), so the thread taking calls
    /// neither writes their reference counts nor empties their slots (the slots before `head`
    /// are stale, and dropped once they are most of the queue).
    private var queue: [Unmanaged<RemoteTask>] = []
    private var head = 0
    /// Calls in the queue whose arguments have not resolved. While there are none, every
    /// queued call is ready, and the thread taking a batch does not read the calls themselves
    /// (lines their submitter has just written) while it holds the lock.
    private var unreadyCalls = 0
    private var running = 0
    private var killed = false
    private var stateFreed = false
    /// Set by the runtime's shutdown, which frees the state itself (`endAtShutdown`).
    private var shutdownFrees = false
    /// Whether the constructor has ended: no call starts before.
    private var constructorDone = false
    /// An isolated actor's process, once its constructor has run there.
    private var process: WorkerProcess?
    /// The constructor's object arguments, kept while the process lives: a restarted process
    /// runs the constructor again from the same packed call, which names where their bytes
    /// are (a released object's memory could hold another object by then).
    private var constructorObjects: [RemoteObject] = []

    /// Calls taken from the queue together, run one by one by the worker holding the running
    /// slot (`workerCallEnded`), from `batchNext` on. Only the slot's holder touches them:
    /// the slot passes between threads through `lock` or `handOff`, which order the accesses.
    private var batch: [Unmanaged<RemoteTask>] = []
    private var batchNext = 0
    /// Whether the slot's holder gathers calls before it takes the next batch: its last batch
    /// held two or more calls (they pile up faster than they run) and emptied the queue (a
    /// fuller queue is taken at once).
    private var gathersNext = false
    /// At most this many calls per batch.
    private static let batchCapacity = 64
    /// How long a worker gathers calls between two batches, in spin-wait pauses (about 30 µs:
    /// a caller pipelining calls queues dozens in that time).
    private static let gatherSpins = 1000
    /// How long a worker lingers on an idle actor, in spin-wait pauses (a few microseconds:
    /// longer than a caller takes between two calls, far shorter than a pool worker's spin).
    private static let lingerSpins = 1000

    init(runtime: RemoteRuntime, maxConcurrency: Int, construct: fl_actor_init_fn, freeState: fl_actor_free_fn?,
         user: UnsafeMutableRawPointer?, isolation: ProcessSettings? = nil) {
        self.runtime = runtime
        self.maxConcurrency = maxConcurrency
        self.constructor = construct
        self.freeState = freeState
        self.user = user
        self.isolation = isolation
    }

    deinit {
        UnsafeMutableRawPointer(lock.word).deallocate()
        handOff.deallocate()
    }

    /// The status of a call of an actor whose constructor failed: FL_EWORKER (FL_ECANCELED)
    /// if its process died in the constructor at every start allowed (a kill or shutdown
    /// ended the restarts), as after deaths in a method; else FL_ESTATE, an actor without
    /// state (the constructor returned a code, or an argument of it failed). Read by a call
    /// that runs after the constructor ended.
    var callStatusAfterConstructorFailure: Int32 {
        guard diedInConstructor, let failure = constructorFailure else { return FL_ESTATE }
        return failure.code
    }

    /// Whether the actor lives in a worker process of its own.
    var isIsolated: Bool { isolation != nil }

    /// Never set: an isolated actor's process is ended by `stopProcess`, not interrupted.
    private static let neverCancelled: UnsafeMutablePointer<UInt32> = {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        word.initialize(to: 0)
        return word
    }()

    /// Runs an isolated actor's constructor (`call`, whose object arguments are `objects`):
    /// starts its process, whose initializer it is, and records the outcome.
    func startProcess(_ call: IsolatedCall, keeping objects: [RemoteObject], outcome: UnsafeMutablePointer<fls_slot>) {
        do throws(Failure) {
            let started = try WorkerProcess(settings: isolation!, initializer: fls_remote_child_construct, user: nil,
                                            initargs: call.array, cancelled: Self.neverCancelled)
            // A kill or a shutdown ends the pauses between restarts after deaths in the constructor.
            started.restartStoppers = [handOff.killedWord, runtime.closedWord]
            if let failure = started.start() {
                switch failure.code {
                case FL_EINIT:
                    ResultSlot.fail(outcome, status: FL_ETASK, code: started.initializerCode,
                                    message: "the constructor returned \(started.initializerCode)")
                case FL_EWORKER, FL_ECANCELED:
                    // The process died in the constructor at every start allowed (the calls
                    // then fail with FL_EWORKER, as after deaths in a method), or a kill or
                    // shutdown ended the restarts.
                    diedInConstructor = true
                    ResultSlot.fail(outcome, status: failure.code, code: failure.code, message: failure.message)
                default:
                    ResultSlot.fail(outcome, status: FL_ETASK, code: failure.code, message: failure.message)
                }
                return
            }
            lock.withLock {
                process = started
                constructorObjects = objects
            }
            outcome.pointee.status = FL_OK
        } catch {
            ResultSlot.fail(outcome, status: error.code, code: error.code, message: error.message)
        }
    }

    /// Runs an isolated actor's method call (`call`) in its process and records the outcome.
    /// A process that died is started again first (constructor included), within its restarts.
    /// `cancel` is the call's cancel flag: the proxy passes it on to the child before each
    /// wait, and `wakeProcess` makes it look again, so the call's fl_task_cancelled says so.
    func runInProcess(_ call: IsolatedCall, cancel: UnsafePointer<UInt32>, outcome: UnsafeMutablePointer<fls_slot>) {
        guard let process else {
            ResultSlot.fail(outcome, status: FL_ESTATE, code: FL_ESTATE, message: "the actor's process has ended")
            return
        }
        process.run(fls_remote_child_task, user: nil, arg: UnsafeRawPointer(call.bytes), length: call.length,
                    slot: outcome, external: nil, externalCapacity: 0, index: 0, cancel: cancel)
    }

    /// Wakes the proxy of an isolated actor's process to look at the running call's cancel
    /// flag (set first by fl_cancel); nothing once the process has ended.
    func wakeProcess() {
        lock.withLock { process }?.checkTaskWords()
    }

    /// Ends an isolated actor's process (no call runs): at kill, or at the runtime's shutdown.
    func stopProcess() {
        let (ending, objects): (WorkerProcess?, [RemoteObject]) = lock.withLock {
            defer {
                process = nil
                constructorObjects = []
            }
            return (process, constructorObjects)
        }
        // Released once the process, which may still read them, has ended.
        withExtendedLifetime(objects) { ending?.stop() }
    }

    /// Queues a call (or the constructor) behind the earlier ones, then lets its arguments
    /// resolve. A call without object arguments is ready at once: it is queued, flagged and,
    /// if it may start now, taken in one critical section. Throws, with nothing queued, if the
    /// actor was killed or the runtime shut down; once queued, a call always ends (a shutdown
    /// meanwhile cancels it when its turn comes).
    func submit(_ call: RemoteTask) throws(Failure) {
        try runtime.admit()
        let (waits, startable) = try lock.withLock { () throws(Failure) -> (Bool, RemoteTask?) in
            guard !killed else {
                runtime.withdraw()
                // As for a handle fl_actor_kill has freed: the kill came first (or the
                // shutdown that killed the actor).
                throw runtime.isShutDown ? Failure(FL_ESTATE, "runtime is shut down")
                                         : Failure(FL_EHANDLE, "the actor was killed")
            }
            queue.append(.passRetained(call))
            // A call cancelled already (through its ref) takes its turn without its arguments.
            if call.takesObjects && !call.isCancelled {
                // Registered under the lock, so that a cancel or a kill (which take it) finds
                // the call not queued yet or done registering, never in the loop over its
                // arguments. The submission's own count, dropped below, keeps their
                // resolutions from coming here meanwhile (object locks come after this one).
                call.registerWithArguments()
                call.waitsInQueue = true
                unreadyCalls += 1
                handOff.setQueued(queue.count - head)
                return (true, nil)
            }
            call.argumentsAreReady = true
            if let startable = takeHead() { return (false, startable) }
            handHeadToLingerer()
            return (false, nil)
        }
        // Known to the runtime from its constructor on, so that a shutdown kills it.
        if call.constructsActor { runtime.keep(self) }
        if waits {
            call.dependencyResolved()  // the last argument to resolve makes it ready
        } else if let startable {
            start(startable)
        }
    }

    /// The constructor ran: keep its failure, if any.
    func constructed(failure: Failure?) {
        lock.withLock {
            constructorFailure = failure
            constructorDone = true
        }
    }

    /// The constructor's task function: `user` is the actor (kept alive by the task).
    static let constructorTask: fl_remote_fn = { user, args, count, _ in
        let actor = Unmanaged<RemoteActor>.fromOpaque(user!).takeUnretainedValue()
        var made: UnsafeMutableRawPointer?
        let code = actor.constructor(actor.user, args, count, &made)
        // Calls start only after the constructor has ended, so they see the state.
        actor.lock.withLock { actor.state = made }
        return code
    }

    /// A queued call's arguments have resolved.
    func argumentsReady(_ call: RemoteTask) {
        markReady(call)
    }

    /// A call was cancelled (its cancel flag is set): if it still waits for its arguments, it
    /// takes its turn now, in which it resolves as cancelled without running, so that the
    /// calls behind it need not wait for arguments it will never use.
    func callCancelled(_ call: RemoteTask) {
        markReady(call)
    }

    /// Marks a queued call ready to take its turn, once (its arguments resolved, or it was
    /// cancelled), and starts what may start now.
    private func markReady(_ call: RemoteTask) {
        let changed: Bool = lock.withLock {
            // Only a call waiting in the queue: not one marked already, nor one whose
            // submission has not queued it yet (it sees the cancel flag then), nor one of a
            // killed actor, which dropped its queue.
            guard !killed, call.waitsInQueue else { return false }
            call.waitsInQueue = false
            call.argumentsAreReady = true
            unreadyCalls -= 1
            return true
        }
        if changed { pump() }
    }

    /// A call has ended on a worker: returns the next call for that worker to run right away,
    /// if the head is ready (so a busy actor does not pay a queue hop per call), and starts on
    /// other workers whatever else may start now (after the constructor, up to `maxConcurrency`).
    func callEnded() -> RemoteTask? {
        let (next, free): (RemoteTask?, Bool) = lock.withLock {
            running -= 1
            if let call = takeHead() { return (call, false) }
            return (nil, takeStateIfLastOut())
        }
        if free { freeNow() }
        // With room for more than one call at once, others may start behind the one taken.
        // (When none was taken, none could start: a call that becomes ready later, or is
        // submitted later, is started by whoever makes it so.)
        if next != nil && maxConcurrency > 1 { pump() }
        return next
    }

    /// A call has ended on the pool worker that ran it: returns the next call for that worker
    /// (retained, and claimed if it came through `handOff`), as `callEnded` does.
    ///
    /// An actor running one call at a time keeps its slot with this worker while it has calls:
    /// the worker takes every ready call at the head at once (`takeBatch`, one critical section
    /// for up to `batchCapacity` calls) and runs them back to back; then it lingers for up to
    /// `lingerSpins` pauses, unless other work shows up in the pool, and a call submitted
    /// meanwhile comes to it through `handOff`. Only then does it give the slot back. After a
    /// batch of two or more that emptied the queue it gathers the next batch instead
    /// (`ActorHandOff.gather`); after a batch that left calls queued it takes the next at once.
    func workerCallEnded(pool: Pool) -> Unmanaged<RemoteTask>? {
        guard maxConcurrency == 1 && !isIsolated else { return callEnded().map { .passRetained($0) } }
        while true {
            if let next = nextOfBatch() { return next }
            if gathersNext && !handOff.isKilled {
                handOff.gather(spins: Self.gatherSpins) { pool.hasVisibleWork }
            } else if !handOff.isKilled && handOff.startLingering() {
                if !handOff.callsQueuedAfterLingering {
                    handOff.wait(spins: Self.lingerSpins) { pool.hasVisibleWork }
                }
                if let raw = handOff.stopLingering() {
                    let call = Unmanaged<RemoteTask>.fromOpaque(raw)
                    if call._withUnsafeGuaranteedRef({ $0.claimForWorker() }) {
                        gathersNext = false  // the slot is still this worker's
                        guard handOff.isKilled else { return call }
                        // Handed over just before a kill: it has not started, so it resolves as
                        // cancelled (as `kill` resolves the queued ones), and the slot goes back below.
                        call._withUnsafeGuaranteedRef {
                            $0.finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "the actor was killed before the call ran")
                        }
                        call.release()
                    } else {
                        // A thread waiting for the call's output claimed it: the slot went with
                        // the call, and that thread gives it back when the call ends.
                        call.release()
                        return nil
                    }
                }
            }
            // Nothing was handed over: take the calls queued meanwhile, or give the slot back.
            let (took, free): (Bool, Bool) = lock.withLock {
                running -= 1
                if takeBatch() {
                    let emptied = head == queue.count
                    gathersNext = emptied && batch.count >= 2
                    if emptied { handOff.clearHurry() }
                    return (true, false)
                }
                return (false, takeStateIfLastOut())
            }
            if free { freeNow() }
            // Without a batch the slot is gone (`batch` belongs to whoever holds it now). With
            // one, run it; if a kill came meanwhile and cancelled all of it, the slot goes back.
            guard took else { return nil }
        }
    }

    /// Moves the ready calls at the head (up to `batchCapacity`) into `batch`, counting one
    /// running slot for them all; returns whether there were any. Call with `lock` held.
    private func takeBatch() -> Bool {
        guard headMayStart else { return false }
        running += 1
        repeat {
            batch.append(removeHead())
        } while batch.count < Self.batchCapacity && head < queue.count && isReady(head)
        handOff.setQueued(queue.count - head)
        return true
    }

    /// The next call of the batch (retained), if any; the calls of a killed actor resolve as
    /// cancelled instead, as `kill` resolves those still queued.
    private func nextOfBatch() -> Unmanaged<RemoteTask>? {
        while batchNext < batch.count {
            let call = batch[batchNext]
            batchNext += 1
            if batchNext == batch.count {
                batch.removeAll(keepingCapacity: true)
                batchNext = 0
            }
            guard handOff.isKilled else { return call }
            call._withUnsafeGuaranteedRef {
                $0.finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "the actor was killed before the call ran")
            }
            call.release()
        }
        return nil
    }

    /// A thread waits for one of the calls: a worker gathering calls takes them now.
    func hurry() { handOff.hurry() }

    /// Hands the head call, if it is ready, to a worker lingering with the running slot; else
    /// publishes the queued count, and tries once more if a worker started to linger
    /// meanwhile (see `ActorHandOff`). Call with `lock` held, when `takeHead` found no free slot.
    private func handHeadToLingerer() {
        if handHeadOver() { return }
        handOff.setQueued(queue.count - head)
        if handOff.hasLingererAfterPublishing { _ = handHeadOver() }
    }

    /// Hands the head call over if it is ready and a worker lingers; returns whether it did.
    private func handHeadOver() -> Bool {
        guard head < queue.count, isReady(head), handOff.hasLingerer else { return false }
        let call = queue[head]
        // Claimable from now on, like a queued call: the worker claims it, or a thread waiting
        // for its output does. No such thread looks before the call leaves the queue (see
        // `hasWaitingCalls`), so the mark is undone below if the call stays.
        call._withUnsafeGuaranteedRef { $0.markQueued() }
        guard handOff.handOver(call.toOpaque()) else {
            call._withUnsafeGuaranteedRef { $0.unmarkQueued() }
            return false
        }
        _ = removeHead()  // the queue's reference went with the call
        handOff.setQueued(queue.count - head)
        return true
    }

    /// Pops the head call if it may start now, counting it as running. Call with `lock` held.
    private func takeHead() -> RemoteTask? {
        guard headMayStart else { return nil }
        running += 1
        let call = removeHead().takeRetainedValue()
        handOff.setQueued(queue.count - head)
        return call
    }

    /// Whether the head call is ready and may start now. Call with `lock` held.
    private var headMayStart: Bool {
        // Until the constructor (the first call) has ended, it runs alone.
        !killed && running < (constructorDone ? maxConcurrency : 1) && head < queue.count && isReady(head)
    }

    /// Whether the call at `index` of the queue has its arguments. Call with `lock` held.
    private func isReady(_ index: Int) -> Bool {
        unreadyCalls == 0 || queue[index]._withUnsafeGuaranteedRef { $0.argumentsAreReady }
    }

    /// Takes the head call out of the queue, with the queue's reference to it (the slots
    /// before the head are dropped once they are most of the queue). The caller publishes the
    /// new queued count. Call with `lock` held.
    private func removeHead() -> Unmanaged<RemoteTask> {
        let call = queue[head]
        head += 1
        if head > 64 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return call
    }

    /// Starts calls from the head of the queue while allowed.
    private func pump() {
        while true {
            let next: RemoteTask? = lock.withLock {
                if let next = takeHead() { return next }
                handHeadToLingerer()
                return nil
            }
            guard let next else { return }
            start(next, pumpsAfterRefusal: false)
        }
    }

    /// Whether calls wait behind the running ones. A thread waiting for a call's output then
    /// leaves the call to its worker, which runs the waiting ones back to back.
    var hasWaitingCalls: Bool { lock.withLock { head < queue.count } }

    /// Hands a call taken from the head (or returned by `callEnded` to a thread that will not
    /// run it) to the runtime; if it is refused, the call resolves as cancelled (shut down) or
    /// failed and no longer counts as running.
    ///
    /// The calls behind a refused one then get their turn (`pump`), unless the caller is
    /// `pump` itself (`pumpsAfterRefusal` false), which goes on by itself.
    func start(_ call: RemoteTask, pumpsAfterRefusal: Bool = true) {
        guard let failure = runtime.enqueue(call) else { return }
        let status = failure.code == FL_ESTATE ? FL_ECANCELED : failure.code
        let message = failure.code == FL_ESTATE ? "runtime shut down before the call ran" : failure.message
        // The constructor's failure is recorded before its slot goes back, so no call starts
        // meanwhile as if it had made a state (nobody holds a ref to its output, so no
        // callback runs there). Any other call gives the slot back before it resolves, so no
        // callback of its output runs while this thread holds it (a shutdown waits for the
        // slots: see `endAtShutdown`).
        if call.constructsActor { call.finish(status: status, code: failure.code, message: message) }
        let free: Bool = lock.withLock {
            running -= 1
            return takeStateIfLastOut()
        }
        if !call.constructsActor { call.finish(status: status, code: failure.code, message: message) }
        if free {
            freeNow()
        } else if pumpsAfterRefusal {
            pump()
        }
    }

    /// Ends the actor: calls not started resolve as cancelled; the state is freed once the
    /// running calls have ended.
    func kill() {
        let (cancelled, free): ([RemoteTask], Bool) = lock.withLock {
            guard !killed else { return ([], false) }
            killed = true
            handOff.kill()
            let waiting = queue[head...].map { $0.takeRetainedValue() }
            queue = []
            head = 0
            unreadyCalls = 0
            handOff.setQueued(0)
            return (waiting, takeStateIfLastOut())
        }
        for call in cancelled {
            call.finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "the actor was killed before the call ran")
        }
        if free { freeNow() }
    }

    /// The runtime's shutdown kills the actor (if it is alive) and frees its state on the
    /// calling thread: it waits for the running slots to come back first. The pools have
    /// drained by then, so a slot is held only for a moment, by a thread whose start of a
    /// call is being refused (`start`), which runs no callback while it holds it.
    func endAtShutdown() {
        lock.withLock { shutdownFrees = true }
        kill()
        while true {
            let free: Bool? = lock.withLock { () -> Bool? in
                assert(running >= 0, "an actor's running count went below zero")
                return running <= 0 ? takeStateForFreeing() : nil
            }
            guard let free else {
                usleep(50)
                continue
            }
            // False if an fl_actor_kill before the shutdown freed the state already.
            if free { freeNow() }
            return
        }
    }

    /// Whether the last running call of a killed actor has ended and its state is to be freed
    /// now, by this thread (once; not once the shutdown frees it). Call with `lock` held.
    private func takeStateIfLastOut() -> Bool {
        killed && running == 0 && !shutdownFrees && takeStateForFreeing()
    }

    /// Whether the state is to be freed now (once). Call with `lock` held.
    private func takeStateForFreeing() -> Bool {
        guard !stateFreed else { return false }
        stateFreed = true
        return true
    }

    /// Frees the state (NULL too, if the constructor made it so) of an actor whose
    /// constructor ran and succeeded, or ends an isolated actor's process; the runtime lets
    /// go of the actor.
    private func freeNow() {
        if isIsolated {
            stopProcess()
        } else if let freeState, lock.withLock({ constructorDone && constructorFailure == nil }) {
            freeState(user, state)
        }
        runtime.forget(self)
    }
}



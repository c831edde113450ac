import CForklift

/// An actor (`fl_actor`): state built by a constructor, and calls that run against it one at a
/// time in submission order (or up to `maxConcurrency` at once), each a remote task whose
/// `user` is the state.
///
/// Calls (the constructor first) wait in `queue` in submission order. A call whose arguments
/// have resolved is marked ready; `pump` starts calls from the head while the head is ready and
/// fewer than `maxConcurrency` run, so a call never overtakes an earlier one. A call that
/// ends lets `pump` start the next. `kill` cancels the calls that have not started and frees
/// the state once the running ones have ended.
///
/// An isolated actor (`isolation` set) lives in a worker process of its own: its constructor
/// runs there as the process's initializer (so a restarted process builds the state again),
/// and each call is a request to that process, made by whichever runtime thread runs the call
/// (one at a time). Killing it, or shutting the runtime down, ends the process.
final class RemoteActor {
    let runtime: RemoteRuntime
    private let maxConcurrency: Int
    let constructor: fl_actor_init_fn
    private let freeState: fl_actor_free_fn?
    let user: UnsafeMutableRawPointer?
    /// How an isolated actor's process runs (restarts, retries); nil for an actor on threads.
    private let isolation: ProcessSettings?
    /// An isolated actor's process, once its constructor has run there.
    private var process: WorkerProcess?
    /// Guards the queue, the counts and the flags: a word lock, which spins briefly before it
    /// sleeps (the submitting thread and the thread running the calls hold it for a few
    /// instructions per call, so a futex sleep there would cost more than the wait).
    private let lock = WordLock(word: .allocate(capacity: 1))
    /// The calls in submission order from `head` on; a taken call's slot is emptied, so the
    /// queue never holds a call's last reference (whoever ran it lets go of it).
    private var queue: [RemoteTask?] = []
    private var head = 0
    private var running = 0
    private var killed = false
    private var stateFreed = false
    /// The state the constructor made (valid once it has run).
    private(set) var state: UnsafeMutableRawPointer?
    /// Set when the constructor failed.
    private(set) var constructorFailure: Failure?
    /// Whether the constructor has ended: no call starts before.
    private var constructorDone = false

    init(runtime: RemoteRuntime, maxConcurrency: Int, construct: fl_actor_init_fn, freeState: fl_actor_free_fn?,
         user: UnsafeMutableRawPointer?, isolation: ProcessSettings? = nil) {
        self.runtime = runtime
        self.maxConcurrency = maxConcurrency
        self.constructor = construct
        self.freeState = freeState
        self.user = user
        self.isolation = isolation
    }

    deinit { lock.word.deallocate() }

    /// Whether the actor lives in a worker process of its own.
    var isIsolated: Bool { isolation != nil }

    /// Never set: an isolated actor's process is ended by `stopProcess`, not interrupted.
    private static let neverCancelled: UnsafeMutablePointer<UInt32> = {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        word.initialize(to: 0)
        return word
    }()

    /// Runs an isolated actor's constructor (`call`): starts its process, whose initializer
    /// it is, and records the outcome.
    func startProcess(_ call: IsolatedCall, outcome: UnsafeMutablePointer<fls_slot>) {
        do throws(Failure) {
            let started = try WorkerProcess(settings: isolation!, initializer: fls_remote_child_construct, user: nil,
                                            initargs: call.array, cancelled: Self.neverCancelled)
            if let failure = started.start() {
                let message = failure.code == FL_EINIT ? "the constructor returned \(started.initializerCode)" : failure.message
                ResultSlot.fail(outcome, status: FL_ETASK, code: failure.code == FL_EINIT ? started.initializerCode : failure.code,
                                message: message)
                return
            }
            lock.withLock { process = started }
            runtime.keep(self)
            outcome.pointee.status = FL_OK
        } catch {
            ResultSlot.fail(outcome, status: error.code, code: error.code, message: error.message)
        }
    }

    /// Runs an isolated actor's method call (`call`) in its process and records the outcome.
    /// A process that died is started again first (constructor included), within its restarts.
    func runInProcess(_ call: IsolatedCall, outcome: UnsafeMutablePointer<fls_slot>) {
        guard let process else {
            ResultSlot.fail(outcome, status: FL_ESTATE, code: FL_ESTATE, message: "the actor's process has ended")
            return
        }
        process.run(fls_remote_child_task, user: nil, arg: UnsafeRawPointer(call.bytes), length: call.length,
                    slot: outcome, external: nil, externalCapacity: 0, index: 0)
    }

    /// Ends an isolated actor's process (no call runs): at kill, or at the runtime's shutdown.
    func stopProcess() {
        let ending: WorkerProcess? = lock.withLock {
            defer { process = nil }
            return process
        }
        ending?.stop()
    }

    /// Queues a call (or the constructor) behind the earlier ones, then lets its arguments
    /// resolve. A call without object arguments is ready at once: it is queued, flagged and,
    /// if it may start now, taken in one critical section. Throws if the actor was killed or
    /// the runtime shut down.
    func submit(_ call: RemoteTask) throws(Failure) {
        let readyNow = !call.takesObjects
        if readyNow { try runtime.admit() }
        let startable: RemoteTask? = try lock.withLock { () throws(Failure) -> RemoteTask? in
            guard !killed else { throw Failure(FL_ESTATE, "the actor was killed") }
            queue.append(call)
            guard readyNow else { return nil }
            call.argumentsAreReady = true
            return takeHead()
        }
        if !readyNow {
            try runtime.submit(call)  // registers with its arguments; the last to resolve makes it ready
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
        let known: Bool = lock.withLock {
            guard !killed else { return false }
            call.argumentsAreReady = true
            return true
        }
        if known { pump() }
    }

    /// A call has ended on a worker: returns the next call for that worker to run right away,
    /// if the head is ready (so a busy actor does not pay a queue hop per call), and starts on
    /// other workers whatever else may start now (after the constructor, up to `maxConcurrency`).
    func callEnded() -> RemoteTask? {
        let (next, free): (RemoteTask?, Bool) = lock.withLock {
            running -= 1
            if let call = takeHead() { return (call, false) }
            return (nil, killed && running == 0 && takeStateForFreeing())
        }
        if free { freeNow() }
        // With room for more than one call at once, others may start behind the one taken.
        // (When none was taken, none could start: a call that becomes ready later, or is
        // submitted later, is started by whoever makes it so.)
        if next != nil && maxConcurrency > 1 { pump() }
        return next
    }

    /// Pops the head call if it may start now, counting it as running. Call with `lock` held.
    private func takeHead() -> RemoteTask? {
        // Until the constructor (the first call) has ended, it runs alone.
        guard !killed, running < (constructorDone ? maxConcurrency : 1), head < queue.count,
              queue[head]!.argumentsAreReady else { return nil }
        let call = queue[head].take()!
        head += 1
        if head > 64 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        running += 1
        return call
    }

    /// Starts calls from the head of the queue while allowed.
    private func pump() {
        while true {
            let next: RemoteTask? = lock.withLock { takeHead() }
            guard let next else { return }
            start(next)
        }
    }

    /// Whether calls wait behind the running ones. A thread waiting for a call's output then
    /// leaves the call to its worker, which runs the waiting ones back to back.
    var hasWaitingCalls: Bool { lock.withLock { head < queue.count } }

    /// Hands a call taken from the head (or returned by `callEnded` to a thread that will not
    /// run it) to the runtime; if it is refused, the call resolves as cancelled (shut down) or
    /// failed and no longer counts as running.
    func start(_ call: RemoteTask) {
        guard let failure = runtime.enqueue(call) else { return }
        call.finish(status: failure.code == FL_ESTATE ? FL_ECANCELED : failure.code, code: failure.code,
                    message: failure.code == FL_ESTATE ? "runtime shut down before the call ran" : failure.message)
        let free: Bool = lock.withLock {
            running -= 1
            return killed && running == 0 && takeStateForFreeing()
        }
        if free { freeNow() }
    }

    /// Ends the actor: calls not started resolve as cancelled; the state is freed once the
    /// running calls have ended.
    func kill() {
        let (cancelled, free): ([RemoteTask], Bool) = lock.withLock {
            guard !killed else { return ([], false) }
            killed = true
            let waiting = queue[head...].compactMap { $0 }
            queue = []
            head = 0
            return (waiting, running == 0 && takeStateForFreeing())
        }
        for call in cancelled {
            call.finish(status: FL_ECANCELED, code: FL_ECANCELED, message: "the actor was killed before the call ran")
        }
        if free { freeNow() }
    }

    /// Whether the state is to be freed now (once). Call with `lock` held.
    private func takeStateForFreeing() -> Bool {
        guard !stateFreed else { return false }
        stateFreed = true
        return true
    }

    private func freeNow() {
        if isIsolated {
            stopProcess()
            runtime.forget(self)
            return
        }
        if let freeState, let state, constructorFailure == nil { freeState(user, state) }
    }
}

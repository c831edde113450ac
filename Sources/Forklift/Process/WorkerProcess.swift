#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// One worker process of a process-backed pool, fed by one worker thread of the pool (its
/// proxy): the thread takes nodes exactly as in a thread pool, and every task it would run
/// runs here instead, through a mailbox in shared memory (see `forklift_worker.h`).
///
/// **Pipelining.** `run` sends its request and, while the pool has more work and a slot is
/// free, runs the next node right there (nested): that node's `run` sends its request behind
/// the first, and so on, up to `ProcessSettings.pipelineDepth` requests. The child runs them in
/// order without sleeping in between; the innermost frame waits for its response, by which
/// time the outer ones' responses are there too, and each frame completes its own task.
///
/// **Deaths.** Whichever frame sees the child die reaps it and settles every request in
/// flight: answered ones keep their answers; the one the child died in fails (or, with
/// retries left, runs again); untaken ones go to a fresh child, which resumes after the last
/// settled request. Failures are left in `slotFailures` for the frame that owns the slot.
///
/// **Lending.** While its thread is idle, a process may be borrowed by a thread that calls
/// `fl_pool_apply` and waits anyway: that thread runs the task itself (`run(direct: true)`),
/// which saves two thread wake-ups per round trip. The `lease` word says who may use the
/// process: its thread (held), nobody (idle), or a borrower (lent). A borrower never forks
/// (a child's death signal is tied to the thread that forked it): when the task needs a fresh
/// worker, `run` says so and the caller queues the task instead.
///
/// Only the thread holding the lease calls `start`, `run` and `stop`; `interrupt` may be called
/// from any thread. The process is forked lazily by its own thread: at pool creation, and again
/// before the next task once a crash, a timeout or `maxTasksPerChild` has ended the previous one.
final class WorkerProcess {
    /// A request's outcome decided by death handling rather than by the child.
    private struct SlotFailure {
        let status: Int32
        let code: Int32
        let message: String
    }

    /// A caller's words about its running request, looked at when the proxy wakes up.
    private struct TaskWords {
        /// Non-zero: the task was cancelled (fl_cancel); the child's fl_task_cancelled says so.
        var cancel: UnsafePointer<UInt32>?
        /// Non-zero: kill the process and fail the request (fl_cancel_force).
        var abort: UnsafePointer<UInt32>?
    }

    private let worker: UnsafeMutablePointer<fls_worker>
    private let settings: ProcessSettings
    /// The pool's termination flag.
    private let cancelled: UnsafePointer<UInt32>
    private var initializer: fls_worker_init
    private let initargs: UnsafeMutableRawBufferPointer
    private var tasksSinceStart = 0
    /// Requests sent and not yet completed: the frames of `run` on the proxy's stack.
    private var inFlight: UInt32 = 0
    /// Slots not holding a request in flight, one bit each. Frames complete out of order (a
    /// nested frame may send again before an outer one is done), so slots are taken from here
    /// rather than by request number.
    private var freeSlots: UInt32 = UInt32.max >> (32 - ProcessSettings.pipelineDepth)
    /// Per slot: the failure death handling decided for its request, and the deaths it saw.
    private var slotFailures: [SlotFailure?]
    private var slotDeaths: [[String]]
    /// Per slot: the result memfd the child sent for its answer, once taken from the result
    /// socket on the way to another slot's (-1 before).
    private var heldResults: [Int32]
    /// The memfd of the last argument too large for a mailbox slot, kept for the next one (at
    /// most `ArgumentFile.keptLimit` bytes; see `ArgumentFile`). Closed with the proxy.
    private var keptArgument: ArgumentFile?
    /// The child's recent run time per task (an average; nanoseconds), or -1 before the first.
    private var averageRunNanos: Double = -1
    /// Work, in expected run time, that may wait in the pipeline behind the running task: a
    /// worker never hoards more than about this while another could be idle.
    private static let pipelineBudgetNanos: Double = 1_000_000
    /// Fresh workers in a row that died before taking any request.
    private var idleDeaths = 0
    /// Runs one more of the pool's queued nodes on this thread, if there is one (set by the
    /// feeding thread; nil: no pipelining).
    var runAnother: (() -> Void)?
    /// Who may use the process: `Self.held` (its thread), `Self.idle`, `Self.lent`.
    private let lease: UnsafeMutablePointer<UInt32>
    private static let idle: UInt32 = 0
    private static let held: UInt32 = 1
    private static let lent: UInt32 = 2
    /// The task running now came from a borrower: no pipelining, no forking.
    private var direct = false
    /// Set (with a wake-up) when the proxy must look at the pool's termination flag or at the
    /// running requests' cancel and abort words; the proxy clears it. Its own cache line.
    private let attention: UnsafeMutablePointer<UInt32>
    /// Per slot: the caller's words for the request in it, if it gave them (see `TaskWords`).
    private var slotWords: [TaskWords]
    /// Processes started so far (see `ProcessSettings.maxStarts`).
    private var starts = 0
    /// Words that, once one is non-zero, end the pauses between restarts after a death in the
    /// initializer, and the restarts with them (an isolated actor's killed flag, its
    /// runtime's closed flag). Set before the first `start`.
    var restartStoppers: [UnsafePointer<UInt32>] = []

    private static let handOverAttempts = 3
    /// Polls of the response word before the proxy sleeps.
    private static let spins: Int32 = 4000

    init(settings: ProcessSettings, initializer: fl_init_fn?, user: UnsafeMutableRawPointer?, initargs: [UInt8],
         cancelled: UnsafePointer<UInt32>) throws(Failure) {
        self.settings = settings
        self.cancelled = cancelled
        worker = .allocate(capacity: 1)
        let error = fls_worker_open(worker, ProcessSettings.pipelineDepth, ProcessSettings.slotCapacity)
        guard error == 0 else {
            worker.deallocate()
            throw Failure(FL_ESYSTEM, "could not create a worker mailbox (errno \(error))")
        }
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, initargs.count), alignment: 16)
        initargs.withUnsafeBytes { copy.copyMemory(from: $0) }
        self.initargs = copy
        lease = .allocate(capacity: 32)  // its own cache line, then `attention` on the next
        lease.initialize(repeating: 0, count: 32)
        lease.pointee = Self.held
        attention = lease + 16
        slotFailures = Array(repeating: nil, count: Int(ProcessSettings.pipelineDepth))
        slotDeaths = Array(repeating: [], count: Int(ProcessSettings.pipelineDepth))
        heldResults = Array(repeating: -1, count: Int(ProcessSettings.pipelineDepth))
        slotWords = Array(repeating: TaskWords(), count: Int(ProcessSettings.pipelineDepth))
        // A worker never outlives its pool: it is killed if its feeding thread (and so the
        // pool's process) ends.
        self.initializer = fls_worker_init(fn: initializer, user: user, args: UnsafeRawPointer(copy.baseAddress),
                                           args_len: initargs.count, death_signal: SIGKILL)
    }

    deinit {
        if worker.pointee.pid > 0 { _ = fls_worker_stop(worker, 1_000_000_000) }
        fls_worker_close(worker)
        worker.deallocate()
        initargs.deallocate()
        lease.deallocate()
        keptArgument?.close()
    }

    /// The feeding thread takes the process for its work, waiting while a borrower has it.
    func hold() {
        var tries = 0
        while true {
            var expected = Self.idle
            if fls_atomic_load_u32(lease) == Self.held || fls_atomic_cas_u32(lease, &expected, Self.held) { return }
            // A borrower's task may run long: spin briefly, then check every 50 microseconds.
            tries += 1
            if tries < 1000 { fls_cpu_relax() } else { usleep(50) }
        }
    }

    /// The feeding thread has no work: callers may borrow the process.
    func releaseHold() {
        if fls_atomic_load_u32(lease) == Self.held { fls_atomic_store_u32(lease, Self.idle) }
    }

    /// Borrows the idle, running process for one task on the calling thread. True on success;
    /// then `run(direct: true)` and `giveBack` follow.
    func tryBorrow() -> Bool {
        var expected = Self.idle
        guard fls_atomic_load_u32(lease) == Self.idle, fls_atomic_cas_u32(lease, &expected, Self.lent) else { return false }
        guard worker.pointee.pid > 0 else {
            fls_atomic_store_u32(lease, Self.idle)
            return false
        }
        return true
    }

    /// Ends a borrow.
    func giveBack() { fls_atomic_store_u32(lease, Self.idle) }

    private var mailbox: UnsafeMutablePointer<fls_mailbox> { worker.pointee.mailbox }
    private var requestSeq: UInt32 { fls_atomic_load_u32(&mailbox.pointee.request_seq) }
    private var responseSeq: UInt32 { fls_atomic_load_u32(&mailbox.pointee.response_seq) }
    private var startedSeq: UInt32 { fls_atomic_load_u32(&mailbox.pointee.started_seq) }

    /// The slot holding request `seq` (one still unanswered, or answered and not yet read).
    private func slotIndex(_ seq: UInt32) -> Int { Int(fls_worker_slot_of(worker, seq)) }
    /// Whether request `seq` is at or before `mark`, in wrapping sequence order.
    private static func reached(_ mark: UInt32, _ seq: UInt32) -> Bool { Int32(bitPattern: mark &- seq) >= 0 }

    /// What the initializer of the last process returned.
    var initializerCode: Int32 { mailbox.pointee.init_code }

    /// Forks a process that resumes after the requests settled so far, and waits for its
    /// initializer. Returns the failure, if any. A process that dies in its initializer is
    /// started again while `settings.maxStarts` allows (a restarted isolated actor's
    /// constructor may die again, and each start counts).
    func start() -> Failure? { start(resumingAfter: requestSeq) }

    /// `start()`, resuming after the request `resume`.
    private func start(resumingAfter resume: UInt32) -> Failure? {
        var (failure, died) = startOnce(resumingAfter: resume)
        // Only with a bound: a pool's processes (unbounded) report a dying initializer instead.
        // Each further start waits twice as long as the last, from 1 ms up to 1 s (as Ray
        // backs off restarting an actor), so a constructor that always dies does not keep a
        // CPU forking.
        var backoff: UInt32 = 1000
        while let last = failure, died && settings.maxStarts > 0 && mayStartAgain {
            guard pause(microseconds: backoff) else {
                return Failure(FL_ECANCELED, "\(last.message); not started again: stopped while waiting to restart it")
            }
            backoff = min(backoff * 2, 1_000_000)
            (failure, died) = startOnce(resumingAfter: resume)
        }
        return failure
    }

    /// Sleeps `microseconds` in slices of at most 5 ms; returns false, early, once a word of
    /// `restartStoppers` is set.
    private func pause(microseconds: UInt32) -> Bool {
        var left = microseconds
        while true {
            if restartStoppers.contains(where: { fls_atomic_load_u32($0) != 0 }) { return false }
            guard left > 0 else { return true }
            let slice = min(left, 5000)
            usleep(slice)
            left -= slice
        }
    }

    /// Whether `settings.maxStarts` allows one more start.
    private var mayStartAgain: Bool { settings.maxStarts == 0 || starts < settings.maxStarts }

    /// One start: its failure, if any, and whether its process died in the initializer.
    private func startOnce(resumingAfter resume: UInt32) -> (Failure?, diedInInitializer: Bool) {
        fls_worker_prepare(worker, resume)
        if !mayStartAgain {
            return (Failure(FL_EWORKER, "the worker process died and was started \(starts) times already "
                + "(\(settings.maxStarts - 1) restarts allowed)"), false)
        }
        starts += 1
        let error = fls_worker_spawn(worker, &initializer)
        guard error == 0 else { return (Failure(FL_ESYSTEM, "could not fork a worker process (errno \(error))"), false) }
        tasksSinceStart = 0
        let initState = UnsafeMutableRawPointer(mailbox).advanced(by: MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.init_state)!)
            .assumingMemoryBound(to: UInt32.self)
        let outcome = fls_worker_wait(worker, initState, UInt32(FLS_INIT_PENDING), -1, 0, nil)
        if outcome == FLS_WAIT_DIED && mailbox.pointee.init_state == FLS_INIT_PENDING {
            let pid = worker.pointee.pid
            let end = fls_worker_reap(worker)
            return (Failure(FL_EWORKER, "worker process \(pid) \(Self.describe(end)) while running the initializer"), true)
        }
        if mailbox.pointee.init_state == FLS_INIT_FAILED {
            let code = mailbox.pointee.init_code
            _ = fls_worker_reap(worker)
            return (Failure(FL_EINIT, "worker initializer returned \(code)"), false)
        }
        return (nil, false)
    }

    /// Ends the process: asks it to exit, kills it if it has not after a second, reaps it.
    /// Only with no request in flight.
    func stop() {
        if worker.pointee.pid > 0 { _ = fls_worker_stop(worker, 1_000_000_000) }
    }

    /// Tells a running task that the pool is terminated and wakes the proxy, which then kills
    /// the process. Any thread.
    func interrupt() {
        fls_atomic_store_u32(&mailbox.pointee.cancelled, 1)
        fls_atomic_store_u32(attention, 1)
        fls_worker_interrupt(worker)
    }

    /// Wakes the proxy to look at the cancel and abort words of its requests (set by the
    /// caller first): a cancel word it passes on to the child; an abort word makes it kill the
    /// process and fail the request. Any thread; a wake-up for a request that has ended
    /// already is ignored.
    func checkTaskWords() {
        fls_atomic_store_u32(attention, 1)
        fls_worker_interrupt(worker)
    }

    /// Runs one task in the worker process and records its outcome in `slot`, as
    /// `TaskRunner.run` does for a thread. With `direct` (a borrower), returns false without
    /// an outcome when the task needs a fresh worker process, which only the process's own
    /// thread may fork: the caller queues the task instead. Otherwise returns true.
    @discardableResult
    func run(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
             slot: UnsafeMutablePointer<fls_slot>, external: UnsafeMutableRawPointer?, externalCapacity: Int,
             index: UInt64, direct: Bool = false, cancel: UnsafePointer<UInt32>? = nil,
             abort: UnsafePointer<UInt32>? = nil) -> Bool {
        let typed: TypedCall? = isTypedTrampoline(fn) ? Unmanaged<TypedCall>.fromOpaque(user!).takeUnretainedValue() : nil
        if fls_atomic_load_u32(cancelled) != 0 {
            ResultSlot.fail(slot, status: FL_ECANCELED, code: FL_ECANCELED, message: "pool terminated before the task ran")
            return true
        }
        if worker.pointee.pid <= 0 {
            if direct { return false }
            if let failure = start() {
                ResultSlot.fail(slot, status: failure.code, code: failure.code,
                                message: "no worker process to run the task: \(failure.message)")
                return true
            }
        }
        self.direct = direct
        defer { self.direct = false }
        let seq = requestSeq &+ 1
        let mine = freeSlots.trailingZeroBitCount
        let sideFile: ArgumentFile?
        do throws(Failure) {
            sideFile = try writeRequest(UInt32(mine), fn, user: user, arg: arg, length: length, index: index,
                                        typed: typed)
        } catch {
            ResultSlot.fail(slot, status: error.code, code: error.code, message: error.message)
            return true
        }
        freeSlots &= ~(1 << UInt32(mine))
        slotWords[mine] = TaskWords(cancel: cancel, abort: abort)
        fls_worker_request(worker, UInt32(mine)).pointee.cancel_requested = 0  // published by the send
        fls_worker_assign(worker, seq, UInt32(mine))
        slotFailures[mine] = nil
        slotDeaths[mine] = direct ? [] : HandedBackDeaths.take(for: slot)
        fls_worker_send(worker)
        inFlight += 1
        // Queue the next task behind this one while the child runs it.
        if !direct, inFlight < pipelineLimit,
           settings.maxTasksPerChild == 0 || tasksSinceStart + Int(inFlight) < settings.maxTasksPerChild,
           let runAnother {
            runAnother()
        }
        awaitSettled(seq, slot: mine)
        var ran = true
        if let failure = slotFailures[mine] {
            if failure.status == Self.needsFreshWorker {
                ran = false
                if !slotDeaths[mine].isEmpty { HandedBackDeaths.keep(slotDeaths[mine], for: slot) }
            } else {
                ResultSlot.fail(slot, status: failure.status, code: failure.code, message: failure.message)
            }
            slotFailures[mine] = nil
        } else {
            readResponse(seq, UInt32(mine), slot: slot, external: external, externalCapacity: externalCapacity,
                         index: index, typed: typed)
            tasksSinceStart += 1
        }
        if let sideFile { keep(sideFile) }
        slotWords[mine] = TaskWords()
        freeSlots |= 1 << UInt32(mine)
        inFlight -= 1
        if inFlight == 0 && settings.maxTasksPerChild > 0 && tasksSinceStart >= settings.maxTasksPerChild { stop() }
        return ran
    }

    /// Keeps the memfd of an argument the child is done with for the next large argument, if
    /// none is kept and it is small enough; else closes it.
    private func keep(_ file: ArgumentFile) {
        if keptArgument == nil && file.size <= ArgumentFile.keptLimit {
            file.markKept()
            keptArgument = file
        } else {
            file.close()
        }
    }

    /// The slot status of a request a borrower must hand back: it needs a fresh worker.
    private static let needsFreshWorker: Int32 = 1

    /// Waits until request `seq` is answered or its outcome was decided by death handling.
    private func awaitSettled(_ seq: UInt32, slot mine: Int) {
        while slotFailures[mine] == nil {
            if Self.reached(responseSeq, seq) { return }
            if let abort = slotWords[mine].abort, fls_atomic_load_u32(abort) != 0 {
                settleAbort(seq, slot: mine)
                continue
            }
            if let cancel = slotWords[mine].cancel, fls_atomic_load_u32(cancel) != 0 {
                fls_atomic_store_u32(&fls_worker_request(worker, UInt32(mine)).pointee.cancel_requested, 1)
            }
            // Spin only for a lone request (a round trip); behind others, the answer is farther
            // off, and spinning would take the CPU the child needs.
            let spins = seq == fls_atomic_load_u32(&mailbox.pointee.response_seq) &+ 1 ? Self.spins : 0
            let outcome = fls_worker_await(worker, seq, timeoutDeadline(), spins, attention)
            switch outcome {
            case FLS_WAIT_READY:
                continue
            case FLS_WAIT_DIED:
                settleDeath(timedOut: false)
            case FLS_WAIT_TIMEOUT:
                if runningTooLong() { settleDeath(timedOut: true) }
            default:
                fls_atomic_store_u32(attention, 0)
                // Woken for the abort word (looked at above) or for the pool's termination.
                if fls_atomic_load_u32(cancelled) != 0 { settleTermination() }
            }
        }
    }

    /// Requests allowed in flight: as many as the recent run time per task fits in the
    /// pipeline budget (1 until a task has been measured; so slow tasks are not pipelined).
    private var pipelineLimit: UInt32 {
        guard averageRunNanos >= 0 else { return 1 }
        let fits = Self.pipelineBudgetNanos / max(averageRunNanos, 1)
        return fits >= Double(ProcessSettings.pipelineDepth) ? ProcessSettings.pipelineDepth : max(1, UInt32(fits))
    }

    /// Our own descriptor for the result memfd of request `seq`, taken from the result socket
    /// (results answered before it that are still unread are kept for their frames), or -1.
    private func takeResultFile(_ seq: UInt32, slot: Int) -> Int32 {
        if heldResults[slot] >= 0 {
            defer { heldResults[slot] = -1 }
            return heldResults[slot]
        }
        var answered: UInt32 = 0
        while true {
            let fd = fls_worker_take_result_fd(worker, &answered)
            if fd < 0 { return -1 }
            if answered == seq { return fd }
            let other = slotIndex(answered)
            if heldResults[other] >= 0 { close(heldResults[other]) }
            heldResults[other] = fd
        }
    }

    /// When the request running now passes the task timeout (monotonic ns), or -1.
    private func timeoutDeadline() -> Int64 {
        guard settings.taskTimeout > 0 else { return -1 }
        let limit = Int64(settings.taskTimeout * 1e9)
        let started = startedSeq
        let since = fls_atomic_load_u64(UnsafeMutableRawPointer(mailbox)
            .advanced(by: MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.started_ns)!)
            .assumingMemoryBound(to: UInt64.self))
        // Nothing running (between requests): look again a timeout from now.
        return started != responseSeq ? Int64(bitPattern: since) + limit : fls_monotonic_ns() + limit
    }

    private func runningTooLong() -> Bool {
        startedSeq != responseSeq && timeoutDeadline() <= fls_monotonic_ns()
    }

    /// The child died (or is killed for a timeout): reap it, decide every request in flight,
    /// and start a fresh child for the ones it never took.
    private func settleDeath(timedOut: Bool) {
        let pid = worker.pointee.pid
        if timedOut { fls_worker_signal(worker, SIGKILL) }
        let end = fls_worker_reap(worker)
        let answered = responseSeq, started = startedSeq, sent = requestSeq
        var resume = answered
        if started != answered {
            // It died in request `started`.
            let slot = slotIndex(started)
            idleDeaths = 0
            if timedOut {
                // A worker failure (killed), not FL_ETIMEDOUT, which means a wait ran out.
                slotFailures[slot] = SlotFailure(
                    status: FL_EWORKER, code: -SIGKILL,
                    message: "task ran longer than the task timeout (\(settings.taskTimeout) s); "
                        + "worker process \(pid) was killed and is replaced")
                resume = started
            } else {
                slotDeaths[slot].append("worker process \(pid) \(Self.describe(end))")
                let deaths = slotDeaths[slot]
                if deaths.count > settings.retries {
                    let retried = deaths.count > 1 ? " (run \(deaths.count) times: \(deaths.joined(separator: "; ")))" : ""
                    slotFailures[slot] = SlotFailure(
                        status: FL_EWORKER, code: end,
                        message: "worker process \(pid) \(Self.describe(end)) while running the task\(retried)")
                    resume = started
                }
            }
        } else if answered != sent {
            // It died idle, before taking the next request: that one never ran, so it goes to
            // a fresh worker without counting as a failure — a few times.
            idleDeaths += 1
            if idleDeaths >= Self.handOverAttempts {
                slotFailures[slotIndex(answered &+ 1)] = SlotFailure(
                    status: FL_EWORKER, code: end,
                    message: "\(idleDeaths) fresh worker processes died before taking the task "
                        + "(the last, \(pid), \(Self.describe(end)))")
                resume = answered &+ 1
                idleDeaths = 0
            }
        }
        guard resume != sent else {
            fls_worker_prepare(worker, sent)
            return
        }
        if fls_atomic_load_u32(cancelled) != 0 {
            // Terminated: no fresh child, not even for a retry; the rest is cancelled.
            failRequests(after: resume, through: sent, SlotFailure(
                status: FL_ECANCELED, code: FL_ECANCELED,
                message: "pool terminated; worker process \(pid) \(Self.describe(end)) and is not replaced"))
            return
        }
        if direct {
            // A borrower does not fork: its one request goes back to be queued.
            slotFailures[slotIndex(sent)] = SlotFailure(status: Self.needsFreshWorker, code: 0, message: "")
            fls_worker_prepare(worker, sent)
            return
        }
        if let failure = start(resumingAfter: resume) {
            failRequests(after: resume, through: sent, SlotFailure(
                status: failure.code, code: failure.code, message: "no worker process to run the task: \(failure.message)"))
        }
    }

    /// Fails the requests after `first` through `last` with `failure`, and readies the worker
    /// record for the request after `last`.
    private func failRequests(after first: UInt32, through last: UInt32, _ failure: SlotFailure) {
        var seq = first &+ 1
        while Self.reached(last, seq) {
            slotFailures[slotIndex(seq)] = failure
            seq &+= 1
        }
        fls_worker_prepare(worker, last)
    }

    /// The pool was terminated: kill the child and cancel every request it has not answered.
    private func settleTermination() {
        let pid = worker.pointee.pid
        fls_worker_signal(worker, SIGKILL)
        _ = fls_worker_reap(worker)
        failRequests(after: responseSeq, through: requestSeq, SlotFailure(
            status: FL_ECANCELED, code: FL_ECANCELED,
            message: "pool terminated while the task ran; worker process \(pid) was killed"))
    }

    /// The request's abort word was set: kill the process and fail the request as cancelled,
    /// unless it was answered first. Without pipelining it is the only request in flight; the
    /// next task starts a fresh process.
    private func settleAbort(_ seq: UInt32, slot mine: Int) {
        let pid = worker.pointee.pid
        fls_worker_signal(worker, SIGKILL)
        _ = fls_worker_reap(worker)
        let sent = requestSeq
        if !Self.reached(responseSeq, seq) {
            slotFailures[mine] = SlotFailure(status: FL_ECANCELED, code: FL_ECANCELED,
                                             message: "the task was cancelled by force; worker process \(pid) was killed")
        }
        fls_worker_prepare(worker, sent)
    }

    /// Writes a request into `slot`. Returns the memfd holding an argument too large for the
    /// slot (the caller keeps or closes it once the task is done; `keptArgument` if that
    /// served), or nil.
    private func writeRequest(_ slot: UInt32, _ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?,
                              length: Int, index: UInt64, typed: TypedCall?) throws(Failure) -> ArgumentFile? {
        guard let typed else {
            return try Mailbox.writeTask(worker, slot: slot, kind: FLS_REQ_TASK, fn: fn, user: user, index: index,
                                         arg: arg, length: length, reusing: &keptArgument)
        }
        // The signature text, then the tuple at the next 16-byte boundary.
        let text = typed.signature.text
        let textLength = text.utf8.count + 1
        let tupleOffset = (textLength + 15) & ~15
        let request = fls_worker_request(worker, slot)!
        request.pointee.kind = UInt32(FLS_REQ_TYPED)
        request.pointee.index = index
        request.pointee.typed_fn = typed.fn
        request.pointee.signature_len = UInt32(textLength)
        request.pointee.name_len = 0
        let staged = text.withCString { cText in
            Result { () throws(Failure) -> ArgumentFile? in
                try Mailbox.stageArgument(worker, slot: slot, head: UnsafeRawBufferPointer(start: cText, count: textLength),
                                          dataOffset: tupleOffset, data: arg, length: length, reusing: &keptArgument)
            }
        }
        return try staged.get()
    }

    /// Moves the response in mailbox slot `index` into the result slot (or a typed call's
    /// result array).
    private func readResponse(_ seq: UInt32, _ mailboxSlot: UInt32, slot: UnsafeMutablePointer<fls_slot>, external: UnsafeMutableRawPointer?,
                              externalCapacity: Int, index: UInt64, typed: TypedCall?) {
        let response = fls_worker_request(worker, mailboxSlot)!
        let run = Double(response.pointee.run_ns)
        averageRunNanos = averageRunNanos < 0 ? run : 0.8 * averageRunNanos + 0.2 * run
        guard response.pointee.status == FL_OK else {
            ResultSlot.fail(slot, status: FL_ETASK, code: response.pointee.code, message: Mailbox.message(response))
            return
        }
        let length = Int(response.pointee.result_len)
        var source: UnsafeRawPointer? = UnsafeRawPointer(fls_worker_result_area(worker, mailboxSlot))
        var mapped: UnsafeMutableRawPointer?
        var held = response.pointee.result_fd >= 0 ? takeResultFile(seq, slot: Int(mailboxSlot)) : -1
        defer { if held >= 0 { close(held) } }
        // A large result for a slot that keeps such results in shared memory (a remote
        // object) keeps the child's memfd: no copy.
        if held >= 0, typed == nil, external == nil, slot.pointee.external == FLS_STORAGE_SHARE_LARGE,
           length >= Int(FLS_SHARE_MINIMUM), let mapping = fls_map_fd(held, length) {
            ResultSlot.adopt(slot, mapping: mapping, length: length, file: held)
            slot.pointee.status = FL_OK
            held = -1
            return
        }
        if response.pointee.result_fd >= 0 && length > 0 {
            let answeredBy = response.pointee.result_pid
            // The result is in the answering child's memfd: through our own descriptor if we
            // took one, else through the child's, which is gone if that child died.
            if held >= 0 {
                mapped = fls_map_fd(held, length)
            } else if answeredBy == worker.pointee.pid {
                mapped = fls_map_peer_fd(answeredBy, response.pointee.result_fd, length)
            }
            guard let mapped else {
                let alive = held >= 0 || answeredBy == worker.pointee.pid
                let why = alive ? "could not map" : "lost (its worker process died before it was read)"
                ResultSlot.fail(slot, status: alive ? FL_ESYSTEM : FL_EWORKER,
                                code: FL_EWORKER, message: "the task's \(length)-byte result was \(why)")
                return
            }
            source = UnsafeRawPointer(mapped)
        }
        defer { if let mapped { munmap(mapped, length) } }
        if let typed, let results = typed.results {
            let size = typed.signature.resultSize
            if size > 0 && length == size { (results + Int(index) * size).copyMemory(from: source!, byteCount: size) }
            slot.pointee.status = FL_OK
            return
        }
        do throws(Failure) {
            let target = try ResultSlot.reserve(slot, length: length, external: external, externalCapacity: externalCapacity)
            if length > 0 { target.copyMemory(from: source!, byteCount: length) }
            slot.pointee.status = FL_OK
        } catch {
            ResultSlot.fail(slot, status: error.code, code: error.code, message: error.message)
        }
    }

    /// "exited with status 3", "was killed by signal 11 (SIGSEGV)".
    static func describe(_ end: Int32) -> String {
        if end >= 0 { return "exited with status \(end)" }
        if end == FL_EXIT_UNKNOWN {
            return "ended, its exit status lost (collected elsewhere in this program: SIGCHLD ignored, or a wait for any child)"
        }
        return "was killed by signal \(-end) (\(String(cString: fls_signal_name(-end))))"
    }
}

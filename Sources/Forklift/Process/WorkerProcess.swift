#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// How a process-backed pool runs its worker processes (from `fl_pool_options`).
struct ProcessSettings {
    /// Seconds a task may run before its worker is killed; 0: no limit.
    var taskTimeout: Double = 0
    /// Tasks a worker runs before it is replaced; 0: no limit.
    var maxTasksPerChild: Int = 0
    /// Runs of a task after its worker died.
    var retries: Int = 0
    /// Bytes of argument (and of result) carried in the shared mailbox; larger ones travel in
    /// a memfd of their own.
    static let mailboxCapacity = 1 << 20

    /// The process settings of pool options, or nil for a thread pool.
    init?(options: fl_pool_options) throws(Failure) {
        switch options.backend {
        case FL_BACKEND_THREAD:
            guard options.task_timeout <= 0 && options.max_tasks_per_child == 0 && options.task_retries == 0 else {
                throw Failure(FL_EINVAL, "task_timeout, max_tasks_per_child and task_retries need FL_BACKEND_PROCESS")
            }
            return nil
        case FL_BACKEND_PROCESS:
            guard options.task_timeout.isFinite || options.task_timeout < 0 else {
                throw Failure(FL_EINVAL, "task_timeout must be a number of seconds")
            }
            guard options.task_retries >= 0 else { throw Failure(FL_EINVAL, "task_retries must not be negative") }
            taskTimeout = max(0, options.task_timeout)
            maxTasksPerChild = options.max_tasks_per_child
            retries = Int(options.task_retries)
        default:
            throw Failure(FL_EINVAL, "backend is \(options.backend): use FL_BACKEND_THREAD or FL_BACKEND_PROCESS")
        }
    }
}

/// One worker process of a process-backed pool, fed by one worker thread of the pool (its
/// proxy): the thread takes nodes exactly as in a thread pool, and every task it would run
/// runs here instead, through a mailbox in shared memory (see `forklift_worker.h`).
///
/// Only the proxy thread calls `start`, `run` and `stop`; `interrupt` may be called from any
/// thread. The process is forked lazily: at pool creation, and again before the next task once
/// a crash, a timeout or `maxTasksPerChild` has ended the previous one.
final class WorkerProcess {
    private let worker: UnsafeMutablePointer<fls_worker>
    private let settings: ProcessSettings
    /// The pool's termination flag.
    private let cancelled: UnsafePointer<UInt32>
    private var initializer: fls_worker_init
    private let initargs: UnsafeMutableRawBufferPointer
    private var tasksSinceStart = 0

    private static let responseOffset = MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.response_seq)!
    private static let initStateOffset = MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.init_state)!
    private static let cancelledOffset = MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.cancelled)!
    private static let startedOffset = MemoryLayout<fls_mailbox>.offset(of: \fls_mailbox.started_seq)!
    /// Fresh workers tried for a task whose worker died before taking it.
    private static let handOverAttempts = 3
    /// Polls of the response word before the proxy sleeps.
    private static let spins: Int32 = 4000

    init(settings: ProcessSettings, initializer: fl_init_fn?, user: UnsafeMutableRawPointer?, initargs: [UInt8],
         cancelled: UnsafePointer<UInt32>) throws(Failure) {
        self.settings = settings
        self.cancelled = cancelled
        worker = .allocate(capacity: 1)
        let error = fls_worker_open(worker, ProcessSettings.mailboxCapacity)
        guard error == 0 else {
            worker.deallocate()
            throw Failure(FL_ESYSTEM, "could not create a worker mailbox (errno \(error))")
        }
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, initargs.count), alignment: 16)
        initargs.withUnsafeBytes { copy.copyMemory(from: $0) }
        self.initargs = copy
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
    }

    private var mailbox: UnsafeMutablePointer<fls_mailbox> { worker.pointee.mailbox }

    private func word(at offset: Int) -> UnsafeMutablePointer<UInt32> {
        (UnsafeMutableRawPointer(mailbox) + offset).assumingMemoryBound(to: UInt32.self)
    }

    /// Forks the process and waits for its initializer. Returns the failure, if any.
    func start() -> Failure? {
        let error = fls_worker_spawn(worker, &initializer)
        guard error == 0 else { return Failure(FL_ESYSTEM, "could not fork a worker process (errno \(error))") }
        tasksSinceStart = 0
        let outcome = fls_worker_wait(worker, word(at: Self.initStateOffset), UInt32(FLS_INIT_PENDING), -1, 0, nil)
        if outcome == FLS_WAIT_DIED && mailbox.pointee.init_state == FLS_INIT_PENDING {
            let pid = worker.pointee.pid
            let end = fls_worker_reap(worker)
            return Failure(FL_EWORKER, "worker process \(pid) \(Self.describe(end)) while running the initializer")
        }
        if mailbox.pointee.init_state == FLS_INIT_FAILED {
            let code = mailbox.pointee.init_code
            _ = fls_worker_reap(worker)
            return Failure(FL_EINIT, "worker initializer returned \(code)")
        }
        return nil
    }

    /// Ends the process: asks it to exit, kills it if it has not after a second, reaps it.
    func stop() {
        if worker.pointee.pid > 0 { _ = fls_worker_stop(worker, 1_000_000_000) }
    }

    /// Tells a running task that the pool is terminated and wakes the proxy, which then kills
    /// the process. Any thread.
    func interrupt() {
        fls_atomic_store_u32(word(at: Self.cancelledOffset), 1)
        fls_worker_interrupt(worker)
    }

    /// Runs one task in the worker process and records its outcome in `slot`, as
    /// `TaskRunner.run` does for a thread.
    func run(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
             slot: UnsafeMutablePointer<fls_slot>, external: UnsafeMutableRawPointer?, externalCapacity: Int,
             index: UInt64) {
        let typed: TypedCall? = isTypedTrampoline(fn) ? Unmanaged<TypedCall>.fromOpaque(user!).takeUnretainedValue() : nil
        var deaths: [String] = []
        var deathsBeforeStart = 0
        while true {
            if fls_atomic_load_u32(cancelled) != 0 {
                ResultSlot.fail(slot, status: FL_ECANCELED, code: FL_ECANCELED, message: "pool terminated before the task ran")
                return
            }
            if worker.pointee.pid <= 0, let failure = start() {
                ResultSlot.fail(slot, status: failure.code, code: failure.code,
                                message: "no worker process to run the task: \(failure.message)")
                return
            }
            let pid = worker.pointee.pid
            let sideFile: Int32
            do throws(Failure) {
                sideFile = try writeRequest(fn, user: user, arg: arg, length: length, index: index, typed: typed)
            } catch {
                ResultSlot.fail(slot, status: error.code, code: error.code, message: error.message)
                return
            }
            let seen = fls_atomic_load_u32(word(at: Self.responseOffset))
            fls_worker_send(worker)
            let request = fls_atomic_load_u32(&mailbox.pointee.request_seq)
            let deadline = settings.taskTimeout > 0 ? fls_monotonic_ns() + Int64(settings.taskTimeout * 1e9) : -1
            let outcome = fls_worker_wait(worker, word(at: Self.responseOffset), seen, deadline, Self.spins, cancelled)
            if sideFile >= 0 { close(sideFile) }
            switch outcome {
            case FLS_WAIT_READY:
                readResponse(slot: slot, external: external, externalCapacity: externalCapacity, index: index,
                             typed: typed)
                tasksSinceStart += 1
                if settings.maxTasksPerChild > 0 && tasksSinceStart >= settings.maxTasksPerChild { stop() }
                return
            case FLS_WAIT_DIED:
                let end = fls_worker_reap(worker)
                if fls_atomic_load_u32(word(at: Self.startedOffset)) != request {
                    // The worker died idle, before it took this task: the task never ran, so
                    // it goes to a fresh worker without counting as a failure.
                    deathsBeforeStart += 1
                    if deathsBeforeStart < Self.handOverAttempts { continue }
                    ResultSlot.fail(slot, status: FL_EWORKER, code: end,
                                    message: "\(deathsBeforeStart) fresh worker processes died before taking the task "
                                        + "(the last, \(pid), \(Self.describe(end)))")
                    return
                }
                deaths.append("worker process \(pid) \(Self.describe(end))")
                if deaths.count <= settings.retries { continue }
                let retried = deaths.count > 1 ? " (run \(deaths.count) times: \(deaths.joined(separator: "; ")))" : ""
                ResultSlot.fail(slot, status: FL_EWORKER, code: end,
                                message: "worker process \(pid) \(Self.describe(end)) while running the task\(retried)")
                return
            case FLS_WAIT_TIMEOUT:
                fls_worker_signal(worker, SIGKILL)
                _ = fls_worker_reap(worker)
                ResultSlot.fail(slot, status: FL_ETIMEDOUT, code: FL_ETIMEDOUT,
                                message: "task ran longer than the task timeout (\(settings.taskTimeout) s); "
                                    + "worker process \(pid) was killed and is replaced")
                return
            default:
                fls_worker_signal(worker, SIGKILL)
                _ = fls_worker_reap(worker)
                ResultSlot.fail(slot, status: FL_ECANCELED, code: FL_ECANCELED,
                                message: "pool terminated while the task ran; worker process \(pid) was killed")
                return
            }
        }
    }

    /// Writes the request into the mailbox. Returns the memfd holding an argument too large
    /// for the mailbox (the caller closes it once the task is done), or -1.
    private func writeRequest(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                              index: UInt64, typed: TypedCall?) throws(Failure) -> Int32 {
        guard let typed else {
            return try Mailbox.writeTask(worker, kind: FLS_REQ_TASK, fn: fn, user: user, index: index, arg: arg,
                                         length: length)
        }
        // The signature text, then the tuple at the next 16-byte boundary.
        let text = typed.signature.text
        let textLength = text.utf8.count + 1
        let tupleOffset = (textLength + 15) & ~15
        let box = mailbox
        box.pointee.kind = UInt32(FLS_REQ_TYPED)
        box.pointee.index = index
        box.pointee.typed_fn = typed.fn
        box.pointee.signature_len = UInt32(textLength)
        return try Mailbox.stageArgument(worker, length: tupleOffset + length) { target in
            _ = text.withCString { memcpy(target, $0, textLength) }
            if length > 0 { (target + tupleOffset).copyMemory(from: arg!, byteCount: length) }
        }
    }

    /// Moves the response from the mailbox into the slot (or a typed call's result array).
    private func readResponse(slot: UnsafeMutablePointer<fls_slot>, external: UnsafeMutableRawPointer?,
                              externalCapacity: Int, index: UInt64, typed: TypedCall?) {
        let box = mailbox
        guard box.pointee.status == FL_OK else {
            ResultSlot.fail(slot, status: FL_ETASK, code: box.pointee.code, message: Mailbox.message(worker))
            return
        }
        let length = Int(box.pointee.result_len)
        var source: UnsafeRawPointer? = UnsafeRawPointer(fls_worker_result_area(worker))
        var mapped: UnsafeMutableRawPointer?
        if box.pointee.result_fd >= 0 && length > 0 {
            mapped = fls_map_peer_fd(worker.pointee.pid, box.pointee.result_fd, length)
            guard let mapped else {
                ResultSlot.fail(slot, status: FL_ESYSTEM, code: FL_ESYSTEM,
                                message: "could not map a \(length)-byte result from the worker process")
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
        return "was killed by signal \(-end) (\(String(cString: fls_signal_name(-end))))"
    }
}

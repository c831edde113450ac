#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A function running in its own OS process (`fl_process`), like multiprocessing.Process with
/// the fork start method.
///
/// The child is forked by the starting thread and runs the C side of a worker process
/// (`forklift_worker.h`) for exactly one request, then exits with the function's status. The
/// parent watches it through a pidfd; `join`, `isAlive` and `exitCode` reap it (so it never
/// stays a zombie after one of them saw it end). Any thread may call any method.
final class ChildProcess {
    private let worker: UnsafeMutablePointer<fls_worker>
    private let lock = Lock()
    /// The exit code once reaped: the function's status, an exit status, or a negated signal.
    private var end: Int32?
    /// What the function returned with fl_task_return, copied when the process ended.
    private var result: [UInt8] = []
    /// A memfd holding an argument too large for the mailbox; open until the process ends.
    private var sideFile: Int32 = -1
    let pid: Int32

    private init(worker: UnsafeMutablePointer<fls_worker>) {
        self.worker = worker
        pid = worker.pointee.pid
    }

    deinit {
        if sideFile >= 0 { close(sideFile) }
        fls_worker_close(worker)
        worker.deallocate()
    }

    /// Forks a process running `fn(user, arg, length, ctx)`. The argument is copied.
    static func start(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                      daemon: Bool) throws(Failure) -> ChildProcess {
        let worker = UnsafeMutablePointer<fls_worker>.allocate(capacity: 1)
        let opened = fls_worker_open(worker, ProcessSettings.mailboxCapacity)
        guard opened == 0 else {
            worker.deallocate()
            throw Failure(FL_ESYSTEM, "could not create a process mailbox (errno \(opened))")
        }
        var sideFile: Int32 = -1
        var started = false
        defer {
            if !started {
                if sideFile >= 0 { close(sideFile) }
                fls_worker_close(worker)
                worker.deallocate()
            }
        }
        sideFile = try Mailbox.writeTask(worker, kind: FLS_REQ_TASK_EXIT, fn: fn, user: user, index: 0, arg: arg,
                                         length: length)
        let error: Int32
        if daemon {
            // Forked from the launcher thread, so the daemon's death signal follows the process.
            error = try DaemonLauncher.perform {
                var initializer = fls_worker_init(fn: nil, user: nil, args: nil, args_len: 0, death_signal: SIGKILL)
                return fls_worker_spawn(worker, &initializer)
            }
        } else {
            var initializer = fls_worker_init(fn: nil, user: nil, args: nil, args_len: 0, death_signal: 0)
            error = fls_worker_spawn(worker, &initializer)
        }
        guard error == 0 else { throw Failure(FL_ESYSTEM, "could not fork a process (errno \(error))") }
        started = true
        // The request is in place before the child reads it: publish it.
        fls_worker_send(worker)
        let process = ChildProcess(worker: worker)
        process.sideFile = sideFile
        return process
    }

    /// Reaps the child if it has ended. Call with `lock` held.
    private func refresh() {
        guard end == nil else { return }
        var code: Int32 = 0
        switch fls_process_try_reap(pid, &code) {
        case 0:
            return
        case 1:
            finish(code)
        default:
            // Reaped by someone else (the host ignores SIGCHLD): the status is lost.
            finish(-SIGKILL)
        }
    }

    /// Records the end: a process that answered reports its function's status.
    private func finish(_ code: Int32) {
        let mailbox = worker.pointee.mailbox!
        let answered = fls_atomic_load_u32(&mailbox.pointee.response_seq) != 0
        if answered && code >= 0 {
            end = mailbox.pointee.status == FL_OK ? 0 : mailbox.pointee.code
            if mailbox.pointee.status == FL_OK {
                let length = Int(mailbox.pointee.result_len)
                result = Array(UnsafeRawBufferPointer(start: fls_worker_result_area(worker), count: length))
            }
        } else {
            end = code
        }
        if sideFile >= 0 {
            close(sideFile)
            sideFile = -1
        }
    }

    /// Whether the process still runs.
    var isAlive: Bool { lock.withLock { refresh(); return end == nil } }

    /// The exit code, or nil while the process runs.
    var exitCode: Int32? { lock.withLock { refresh(); return end } }

    /// Waits until the process ends or the deadline passes. Returns whether it ended.
    func join(until deadline: Deadline) -> Bool {
        while true {
            if lock.withLock({ refresh(); return end != nil }) { return true }
            if deadline.hasPassed { return false }
            // The pidfd stays open until this object goes, so waiting on it needs no lock.
            fls_wait_readable(worker.pointee.pid_fd, deadline.instant ?? -1)
        }
    }

    /// Sends a signal unless the process has been reaped (its pid may then belong to another).
    func signal(_ number: Int32) {
        lock.withLock {
            refresh()
            if end == nil { kill(pid, number) }
        }
    }

    /// Runs `body` with the function's result (empty until the process ended successfully).
    func withResult<T>(_ body: (UnsafeRawBufferPointer) -> T) -> T {
        lock.withLock { result.withUnsafeBytes(body) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// How a new process begins (`FL_START_*`).
enum StartMethod: Int32 {
    case fork = 0
    case spawn = 1
    case forkserver = 2
}

/// A function running in its own OS process (`fl_process`), like multiprocessing.Process.
///
/// The child runs the C side of a worker process (`forklift_worker.h`) for exactly one
/// request, then exits with the function's status. It is forked by the starting thread
/// (fork), a new run of the program (spawn, `forklift_spawn.h`), or forked by the fork server.
/// The parent watches it through a pidfd; `join`, `isAlive` and `exitCode` reap it (so it
/// never stays a zombie after one of them saw it end); a fork server's child is reaped by the
/// server, which reports its end on a status socket. Any thread may call any method.
final class ChildProcess {
    private let worker: UnsafeMutablePointer<fls_worker>
    private let lock = Lock()
    /// The exit code once reaped: the function's status, an exit status, or a negated signal.
    private var end: Int32?
    /// What the function returned with fl_task_return, copied when the process ended.
    private var result: [UInt8] = []
    /// A memfd holding an argument too large for the mailbox; open until the process ends.
    private var sideFile: Int32 = -1
    /// The fork server's status socket for this child, or -1 for a child of this process.
    private var statusSocket: Int32 = -1
    let pid: Int32

    private init(worker: UnsafeMutablePointer<fls_worker>) {
        self.worker = worker
        pid = worker.pointee.pid
    }

    deinit {
        if sideFile >= 0 { close(sideFile) }
        if statusSocket >= 0 { close(statusSocket) }
        fls_worker_close(worker)
        worker.deallocate()
    }

    /// Starts a process running `fn(user, arg, length, ctx)`. The argument is copied.
    static func start(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                      daemon: Bool, method: StartMethod) throws(Failure) -> ChildProcess {
        let worker = UnsafeMutablePointer<fls_worker>.allocate(capacity: 1)
        let opened = fls_worker_open(worker, 1, ProcessSettings.processResultCapacity)
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
        if method == .fork {
            var none: ArgumentFile?
            sideFile = try Mailbox.writeTask(worker, slot: 0, kind: FLS_REQ_TASK_EXIT, fn: fn, user: user, index: 0,
                                             arg: arg, length: length, reusing: &none)?.descriptor ?? -1
        } else {
            sideFile = try Mailbox.writeNamedTask(worker, slot: 0, fn: fn, user: user, arg: arg,
                                                  length: length)?.descriptor ?? -1
        }
        fls_worker_assign(worker, 1, 0)
        fls_worker_prepare(worker, 0)
        var statusSocket: Int32 = -1
        let error: Int32
        switch method {
        case .fork where daemon, .spawn where daemon:
            // Forked from the launcher thread, so the daemon's death signal follows the process.
            error = try DaemonLauncher.perform {
                method == .spawn ? fls_worker_spawn_exec(worker, SIGKILL) : Self.fork(worker, deathSignal: SIGKILL)
            }
        case .fork:
            error = Self.fork(worker, deathSignal: 0)
        case .spawn:
            error = fls_worker_spawn_exec(worker, 0)
        case .forkserver:
            statusSocket = try ForkServer.shared.fork(worker, daemon: daemon)
            error = 0
        }
        guard error == 0 else {
            let what = method == .fork ? "fork" : "spawn"
            throw Failure(FL_ESYSTEM, "could not \(what) a process (errno \(error))")
        }
        started = true
        // The request is in place before the child reads it: publish it.
        fls_worker_send(worker)
        let process = ChildProcess(worker: worker)
        process.sideFile = sideFile
        process.statusSocket = statusSocket
        return process
    }

    private static func fork(_ worker: UnsafeMutablePointer<fls_worker>, deathSignal: Int32) -> Int32 {
        var initializer = fls_worker_init(fn: nil, user: nil, args: nil, args_len: 0, death_signal: deathSignal)
        return fls_worker_spawn(worker, &initializer)
    }

    /// Reaps the child if it has ended. Call with `lock` held.
    private func refresh() {
        guard end == nil else { return }
        var code: Int32 = 0
        if statusSocket >= 0 {
            if fls_forkserver_poll_end(statusSocket, worker.pointee.pid_fd, &code) == 1 { finish(code) }
            return
        }
        switch fls_process_try_reap(pid, &code) {
        case 0:
            return
        case 1:
            finish(code)
        default:
            // Reaped by someone else (the host ignores SIGCHLD, or waits for any child): the
            // status is lost, but an answer in the mailbox still tells how the function ended.
            finish(FL_EXIT_UNKNOWN)
        }
    }

    /// Records the end: a process that answered reports its function's status.
    private func finish(_ code: Int32) {
        let mailbox = worker.pointee.mailbox!
        let answered = fls_atomic_load_u32(&mailbox.pointee.response_seq) != 0
        let response = fls_worker_request(worker, 0)!
        if answered && (code >= 0 || code == FL_EXIT_UNKNOWN) {
            end = response.pointee.status == FL_OK ? 0 : fls_exit_status_of_code(response.pointee.code)
            if response.pointee.status == FL_OK {
                let length = Int(response.pointee.result_len)
                result = Array(UnsafeRawBufferPointer(start: fls_worker_result_area(worker, 0), count: length))
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
            // These fds stay open until this object goes, so waiting on them needs no lock.
            fls_wait_readable(statusSocket >= 0 ? statusSocket : worker.pointee.pid_fd, deadline.instant ?? -1)
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

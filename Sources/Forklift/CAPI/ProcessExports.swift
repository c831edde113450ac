#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Fills `options` with the defaults (not a daemon). Returns FL_OK, or FL_EINVAL if options is
/// NULL. Thread-safe.
@_cdecl("fl_process_options_init")
public func fl_process_options_init(_ options: UnsafeMutablePointer<fl_process_options>?) -> CInt {
    initializeOptions(options, fl_process_options(), size: \.size)
}

/// Starts `fn(user, arg, arg_len, ctx)` in a new process (multiprocessing.Process) and stores
/// its handle in `*process`. `options` may be NULL (fork, not a daemon).
///
/// With the default fork start method the child is a fork of the calling process: it sees
/// memory as it was at this call, so `user` and data reached through it are the child's copies,
/// and queues, pipes, locks and shared memory created before this call are shared. Until it
/// calls `fn` the child runs only Forklift's C code (forking a multithreaded process is safe
/// that way). With FL_START_SPAWN or FL_START_FORKSERVER the child is a fresh process: `fn`
/// must be an exported function (found there by name), `user` must be NULL, and shared objects
/// are opened by name (see FL_START_FORK for the trade-offs). In every case `arg` is copied
/// into the child; inside `fn` the fl_task_* calls and the queue, pipe, lock, event, semaphore
/// and shared-memory calls work, other Forklift calls return FL_ENOTSUP. `fn`'s return value
/// becomes the exit code (fl_process_exitcode; 127 if a spawned child could not find `fn`); a
/// value passed to fl_task_return (at most 1 MiB) is read with fl_process_result().
/// Errors: FL_EINVAL (fn or process NULL, arg NULL with a length, uninitialized options, an
/// unknown start method, `fn` without an exported name or `user` not NULL for spawn and
/// forkserver), FL_ESYSTEM (fork or exec failed), FL_ENOMEM. Thread-safe.
@_cdecl("fl_process_start")
public func fl_process_start(_ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?, _ arg: UnsafeRawPointer?,
                             _ arg_len: size_t, _ options: UnsafePointer<fl_process_options>?,
                             _ process: UnsafeMutablePointer<fl_process?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(process, "process")
        out.pointee = nil
        let fn = try Check.required(fn, "fn")
        try Check.bytes(arg, arg_len, "arg")
        var daemon = false
        var method = StartMethod.fork
        if let options {
            // A struct from before start_method leaves it at the default (fork).
            let given = try readOptions(options, over: fl_process_options(),
                                        oldest: MemoryLayout<fl_process_options>.offset(of: \fl_process_options.start_method)!,
                                        size: \.size, initializer: "fl_process_options_init")
            daemon = given.daemon != 0
            guard let chosen = StartMethod(rawValue: given.start_method) else {
                throw Failure(FL_EINVAL, "start_method is \(given.start_method): use FL_START_FORK, "
                    + "FL_START_SPAWN or FL_START_FORKSERVER")
            }
            method = chosen
        }
        let started = try ChildProcess.start(fn, user: user, arg: arg, length: arg_len, daemon: daemon, method: method)
        do throws(Failure) {
            out.pointee = cHandle(try Registry.processes.register(started))
        } catch {
            started.signal(SIGKILL)
            _ = started.join(until: .forever)
            throw error
        }
        return FL_OK
    }
}

/// Waits until the process has ended, at most `timeout` seconds (FL_FOREVER: no limit; 0:
/// poll), and reaps it. Returns FL_OK once it has ended, FL_ETIMEDOUT, FL_EHANDLE, or FL_EINVAL
/// (a NaN timeout).
/// Thread-safe: several threads may join the same process.
@_cdecl("fl_process_join")
public func fl_process_join(_ process: fl_process?, _ timeout: Double) -> CInt {
    withStatus { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        return try Registry.processes.with(process, "process") { process throws(Failure) in
            guard process.join(until: deadline) else {
                throw Failure(FL_ETIMEDOUT, "process \(process.pid) still running at the deadline")
            }
            return FL_OK
        }
    }
}

/// Returns 1 if the process is still running, 0 if it has ended (it is then reaped), or
/// FL_EHANDLE. Thread-safe.
@_cdecl("fl_process_is_alive")
public func fl_process_is_alive(_ process: fl_process?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.processes.with(process, "process") { process in process.isAlive ? 1 : 0 }
    }
}

/// Stores the exit code in `*code` (multiprocessing's exitcode): the function's return value
/// as an exit status holds it (0 for success; else its low 8 bits, so -2 reads 254, or 1 if
/// those are 0; the same for a code passed to fl_task_fail()), the status passed to exit() if the function called it, or the negated
/// signal number if a signal ended the process (-9 for SIGKILL); FL_EXIT_UNKNOWN if it ended
/// before its function returned and its status was collected elsewhere in the program (see
/// FL_EXIT_UNKNOWN). Errors: FL_ESTATE (still running), FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_process_exitcode")
public func fl_process_exitcode(_ process: fl_process?, _ code: UnsafeMutablePointer<CInt>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(code, "code")
        return try Registry.processes.with(process, "process") { process throws(Failure) in
            guard let end = process.exitCode else { throw Failure(FL_ESTATE, "process \(process.pid) is still running") }
            out.pointee = end
            return FL_OK
        }
    }
}

/// Stores the process id in `*pid`. Errors: FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_process_pid")
public func fl_process_pid(_ process: fl_process?, _ pid: UnsafeMutablePointer<Int64>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(pid, "pid")
        out.pointee = Int64(try Registry.processes.with(process, "process") { $0.pid })
        return FL_OK
    }
}

/// Copies the value the process's function passed to fl_task_return() into `buffer` (up to
/// `capacity` bytes) and stores its length in `*len`; a process that failed or returned
/// nothing has an empty result. Errors: FL_ESTATE (still running), FL_ERANGE (buffer too
/// small: `*len` is the size needed), FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_process_result")
public func fl_process_result(_ process: fl_process?, _ buffer: UnsafeMutableRawPointer?, _ capacity: size_t,
                              _ len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(len, "len")
        try Check.bytes(buffer, capacity, "buffer")
        return try Registry.processes.with(process, "process") { process throws(Failure) in
            guard process.exitCode != nil else { throw Failure(FL_ESTATE, "process \(process.pid) is still running") }
            let length = process.withResult { bytes in
                if bytes.count > 0 && bytes.count <= capacity {
                    buffer!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                }
                return bytes.count
            }
            out.pointee = length
            guard length <= capacity else { throw Failure(FL_ERANGE, "the result has \(length) bytes, the buffer \(capacity)") }
            return FL_OK
        }
    }
}

/// Asks the process to end with SIGTERM (multiprocessing's terminate); it ends at once unless
/// its function handles the signal. Does nothing to a process that has already been reaped.
/// Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_process_terminate")
public func fl_process_terminate(_ process: fl_process?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.processes.with(process, "process") { $0.signal(SIGTERM) }
        return FL_OK
    }
}

/// Ends the process with SIGKILL (multiprocessing's kill). Does nothing to a process that has
/// already been reaped. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_process_kill")
public func fl_process_kill(_ process: fl_process?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.processes.with(process, "process") { $0.signal(SIGKILL) }
        return FL_OK
    }
}

/// Frees the handle of a process that has ended (multiprocessing's close); the handle is
/// invalid afterwards. Errors: FL_ESTATE (still running: join, terminate or kill it first),
/// FL_EHANDLE. Thread-safe.
@_cdecl("fl_process_destroy")
public func fl_process_destroy(_ process: fl_process?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.processes.destroy(process, "process") { process throws(Failure) in
            guard !process.isAlive else {
                throw Failure(FL_ESTATE, "process \(process.pid) is still running: join, terminate or kill it first")
            }
        }
        return FL_OK
    }
}

import CForklift

/// Fills `options` with the defaults: one worker per CPU, no initializer, name "forklift".
/// Returns FL_OK, or FL_EINVAL if options is NULL. Thread-safe.
@_cdecl("fl_pool_options_init")
public func fl_pool_options_init(_ options: UnsafeMutablePointer<fl_pool_options>?) -> CInt {
    withStatus { () throws(Failure) in
        let options = try Check.required(options, "options")
        options.pointee = fl_pool_options()
        options.pointee.size = MemoryLayout<fl_pool_options>.size
        options.pointee.workers = FL_WORKERS_DEFAULT
        return FL_OK
    }
}

/// Creates a pool of worker threads and stores its handle in `*pool`.
///
/// `options` may be NULL for the defaults; otherwise it must have been filled by
/// fl_pool_options_init(). Every worker runs the initializer (if any) before this call returns;
/// if one fails, the pool is torn down and the call returns FL_EINIT. `initargs` and `name` are
/// copied. Errors: FL_EINVAL (pool NULL, uninitialized options, workers 0 or out of range,
/// initargs NULL with a length), FL_EINIT, FL_ESYSTEM (threads), FL_ENOMEM. Thread-safe.
@_cdecl("fl_pool_create")
public func fl_pool_create(_ options: UnsafePointer<fl_pool_options>?, _ pool: UnsafeMutablePointer<fl_pool?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(pool, "pool")
        out.pointee = nil
        var settings = fl_pool_options()
        _ = fl_pool_options_init(&settings)
        if let options {
            // Structs from older headers end before the newer fields, which keep their defaults.
            settings = try readOptions(options, over: settings,
                                       oldest: MemoryLayout<fl_pool_options>.offset(of: \fl_pool_options.backend)!,
                                       size: \.size, initializer: "fl_pool_options_init")
        }
        let workers: Int
        switch settings.workers {
        case FL_WORKERS_DEFAULT: workers = Int(fls_cpu_count())
        case 1...FL_WORKERS_MAX: workers = Int(settings.workers)
        default:
            throw Failure(FL_EINVAL, "workers is \(settings.workers): use FL_WORKERS_DEFAULT or 1..\(FL_WORKERS_MAX)")
        }
        try Check.bytes(settings.initargs, settings.initargs_len, "initargs")
        let initargs = settings.initargs_len > 0
            ? Array(UnsafeRawBufferPointer(start: settings.initargs, count: settings.initargs_len)) : []
        let name = settings.name.map { String(String(cString: $0).prefix(10)) } ?? "forklift"
        let processSettings = try ProcessSettings(options: settings)
        let created = try Pool.create(workers: workers, name: name, initializer: settings.initializer,
                                      initializerUser: settings.initializer_user, initargs: initargs,
                                      processSettings: processSettings)
        do throws(Failure) {
            created.handle = try Registry.pools.register(created)
        } catch {
            created.terminate()
            try? created.join(until: .forever)
            throw error
        }
        out.pointee = cHandle(created.handle)
        return FL_OK
    }
}

/// Returns the number of worker threads of a pool (positive), or FL_EHANDLE. Thread-safe.
@_cdecl("fl_pool_workers")
public func fl_pool_workers(_ pool: fl_pool?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.pools.with(pool, "pool") { pool throws(Failure) in CInt(pool.workerCount) }
    }
}

/// Closes a pool: it accepts no new work; queued work and the rest of the input of open
/// iterators still run (their sources are drained by this call, on this thread). Closing a
/// closed or terminated pool does nothing. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_pool_close")
public func fl_pool_close(_ pool: fl_pool?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.pools.with(pool, "pool") { pool throws(Failure) in pool.close() }
        return FL_OK
    }
}

/// Terminates a pool: queued tasks are cancelled — each completes exactly once with
/// FL_ECANCELED and its error callback — and open iterators stop pulling input. Running tasks
/// finish (they may poll fl_task_cancelled()). Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_pool_terminate")
public func fl_pool_terminate(_ pool: fl_pool?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.pools.with(pool, "pool") { pool throws(Failure) in pool.terminate() }
        return FL_OK
    }
}

/// Waits until the workers of a closed or terminated pool have ended and every callback has
/// run, at most `timeout` seconds (FL_FOREVER: no limit). Errors: FL_EHANDLE, FL_ESTATE (the
/// pool is still running: close or terminate it first), FL_ETIMEDOUT, FL_EDEADLK (called from
/// a worker or the callback thread of the same pool). Thread-safe.
@_cdecl("fl_pool_join")
public func fl_pool_join(_ pool: fl_pool?, _ timeout: Double) -> CInt {
    withStatus { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.pools.with(pool, "pool") { pool throws(Failure) in try pool.join(until: deadline) }
        return FL_OK
    }
}

/// Destroys a pool: terminates it unless it was closed, joins it, and invalidates the handle.
/// Results and iterators obtained from it stay valid until released. Errors: FL_EHANDLE,
/// FL_EDEADLK (called from a worker or the callback thread of the same pool). Thread-safe,
/// but the handle must not be used after this call.
@_cdecl("fl_pool_destroy")
public func fl_pool_destroy(_ pool: fl_pool?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.pools.destroy(pool, "pool") { pool throws(Failure) in try pool.shutDown() }
        return FL_OK
    }
}

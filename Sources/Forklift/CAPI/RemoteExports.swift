import CForklift

/// Fills `options` with the defaults (a worker per CPU, no store limit). Returns FL_OK, or
/// FL_EINVAL if options is NULL. Thread-safe.
@_cdecl("fl_runtime_options_init")
public func fl_runtime_options_init(_ options: UnsafeMutablePointer<fl_runtime_options>?) -> CInt {
    initializeOptions(options, fl_runtime_options(), size: \.size)
}

/// Starts a runtime of remote tasks (ray.init) and stores its handle in `*runtime`. `options`
/// may be NULL for the defaults. Errors: FL_EINVAL (runtime NULL, uninitialized options, more
/// than 1024 workers), FL_ESYSTEM (threads), FL_ENOMEM. Thread-safe.
@_cdecl("fl_runtime_create")
public func fl_runtime_create(_ options: UnsafePointer<fl_runtime_options>?,
                              _ runtime: UnsafeMutablePointer<fl_runtime?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(runtime, "runtime")
        out.pointee = nil
        var workers = Int(fls_cpu_count())
        var capacity = 0
        var processWorkers = 0
        if let options {
            // A struct from before process_workers leaves it at 0.
            let given = try readOptions(options, over: fl_runtime_options(),
                                        oldest: MemoryLayout<fl_runtime_options>.offset(of: \fl_runtime_options.process_workers)!,
                                        size: \.size, initializer: "fl_runtime_options_init")
            if given.workers != 0 { workers = given.workers }
            // size_t fields: 2^63 or more arrives negative. A capacity that large is no limit.
            capacity = given.store_capacity < 0 ? 0 : given.store_capacity
            processWorkers = given.process_workers
        }
        guard UInt(bitPattern: workers) <= 1024 else {
            throw Failure(FL_EINVAL, "\(UInt(bitPattern: workers)) workers is more than 1024")
        }
        guard UInt(bitPattern: processWorkers) <= 1024 else {
            throw Failure(FL_EINVAL, "\(UInt(bitPattern: processWorkers)) process workers is more than 1024")
        }
        let created = try RemoteRuntime(workers: workers, storeCapacity: capacity, processWorkers: processWorkers)
        do throws(Failure) {
            out.pointee = cHandle(try Registry.runtimes.register(created))
        } catch {
            try? created.shutDown()
            throw error
        }
        return FL_OK
    }
}

/// Stores the default runtime in `*runtime` (a worker per CPU, no store limit), starting it on
/// first use, and again after it was shut down. Do not destroy it except with
/// fl_runtime_shutdown. Errors: FL_EINVAL, FL_ESYSTEM. Thread-safe.
@_cdecl("fl_runtime_default")
public func fl_runtime_default(_ runtime: UnsafeMutablePointer<fl_runtime?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(runtime, "runtime")
        out.pointee = cHandle(try RemoteRuntime.defaultRuntime())
        return FL_OK
    }
}

/// Shuts the runtime down (ray.shutdown): no new tasks or puts, running tasks finish, tasks
/// that have not run resolve as FL_ECANCELED, and the handle is freed. Actors still alive are
/// then killed: their states are freed (free_state, on this thread, before this returns) and
/// their processes end; their handles stay valid for fl_actor_kill(), their calls give FL_ESTATE. References stay
/// valid (fl_get reports each object's outcome) until released. Errors: FL_EHANDLE, FL_EDEADLK
/// (called from one of its tasks). Thread-safe.
@_cdecl("fl_runtime_shutdown")
public func fl_runtime_shutdown(_ runtime: fl_runtime?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.runtimes.destroy(runtime, "runtime") { runtime throws(Failure) in try runtime.shutDown() }
        return FL_OK
    }
}

/// Fills `options` with the defaults (no retries, no CPUs counted). Returns FL_OK, or
/// FL_EINVAL if options is NULL. Thread-safe.
@_cdecl("fl_remote_options_init")
public func fl_remote_options_init(_ options: UnsafeMutablePointer<fl_remote_options>?) -> CInt {
    initializeOptions(options, fl_remote_options(), size: \.size)
}

/// Submits `fn(user, args, nargs, ctx)` as a remote task (f.remote(...)) and stores a
/// reference to its future result in `*ref`, at once. Blob arguments are copied now; a
/// reference argument passes its object: the task runs once every such object is ready,
/// without holding a worker while it waits, and fails without running if one of them failed
/// (status and code of that cause, message "argument I failed: ..."). `options` may be NULL.
/// A task may submit tasks and wait for them (fl_get runs other tasks meanwhile).
/// Errors: FL_EINVAL (fn or ref NULL, args NULL with nargs, a blob NULL with a length,
/// uninitialized options, a negative max_retries, num_cpus below 0 or above the runtime's
/// workers), FL_EHANDLE (runtime, or a reference
/// argument), FL_ESTATE (shut down), FL_ENOMEM. Thread-safe; not in a worker process.
@_cdecl("fl_remote")
public func fl_remote(_ runtime: fl_runtime?, _ fn: fl_remote_fn?, _ user: UnsafeMutableRawPointer?,
                      _ args: UnsafePointer<fl_arg>?, _ nargs: size_t, _ options: UnsafePointer<fl_remote_options>?,
                      _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        if let ref { ref.pointee = nil }
        return try submitRemote(runtime, try Check.required(fn, "fn"), user, args, nargs, options, ref)
    }
}

/// fl_remote() for a task with `num_returns` results (Ray's num_returns): stores a reference
/// to each in `refs[0 .. num_returns-1]`, at once. The task sets result i with
/// fl_task_return_at(ctx, i, ...) (fl_task_return() sets result 0); a result it does not set
/// is empty. A failure of the task fails every result with the same status and message.
/// Errors: as fl_remote(), and FL_EINVAL for refs NULL or num_returns 0 or above 1024; on
/// error every refs[i] is NULL. Thread-safe.
@_cdecl("fl_remote_multi")
public func fl_remote_multi(_ runtime: fl_runtime?, _ fn: fl_remote_fn?, _ user: UnsafeMutableRawPointer?,
                            _ args: UnsafePointer<fl_arg>?, _ nargs: size_t, _ options: UnsafePointer<fl_remote_options>?,
                            _ num_returns: size_t, _ refs: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let refs = try Check.required(refs, "refs")
        guard num_returns >= 1, num_returns <= 1024 else { throw Failure(FL_EINVAL, "num_returns must be 1 to 1024") }
        for index in 0..<num_returns { refs[index] = nil }
        return try submitRemote(runtime, try Check.required(fn, "fn"), user, args, nargs, options, refs,
                                returns: num_returns)
    }
}

/// Submits `fn` as a remote task: the body of fl_remote, fl_remote_named, fl_remote_multi and
/// fl_remote_typed (`typed`: its signature and C function, `fn` being `typedRemoteTrampoline`).
func submitRemote(_ runtime: fl_runtime?, _ fn: fl_remote_fn, _ user: UnsafeMutableRawPointer?,
                  _ args: UnsafePointer<fl_arg>?, _ nargs: size_t, _ options: UnsafePointer<fl_remote_options>?,
                  _ ref: UnsafeMutablePointer<fl_ref?>?, returns: Int = 1, typed: TypedCall? = nil,
                  userIsTheTasks: Bool = true) throws(Failure) -> CInt {
    let out = try Check.required(ref, "ref")
    out.pointee = nil
    if nargs > 0 { _ = try Check.required(args, "args") }
    try typed?.checkRemoteArguments(args, nargs)
    var settings = RemoteOptions()
    var releaseUser: RemoteTask.ReleaseUser? = nil
    if let options {
        // Structs from before num_cpus or isolate leave them at 0.
        let given = try readOptions(options, over: fl_remote_options(),
                                    oldest: MemoryLayout<fl_remote_options>.offset(of: \fl_remote_options.num_cpus)!,
                                    size: \.size, initializer: "fl_remote_options_init")
        guard given.max_retries >= 0 else { throw Failure(FL_EINVAL, "max_retries must not be negative") }
        settings.maxRetries = Int(given.max_retries)
        settings.retryOnError = given.retry_on_error != 0
        settings.cpus = Int(given.num_cpus)
        settings.isolate = given.isolate != 0
        releaseUser = given.release_user
        guard releaseUser == nil || userIsTheTasks else {
            throw Failure(FL_EINVAL, "release_user is for fl_remote and fl_remote_multi, whose user pointer is the task's own")
        }
    }
    return try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in
        guard settings.cpus >= 0, settings.cpus <= runtime.cpus.capacity else {
            throw Failure(FL_EINVAL, "num_cpus is \(settings.cpus); the runtime has \(runtime.cpus.capacity) CPUs (workers)")
        }
        if settings.isolate {
            guard runtime.processPool != nil else {
                throw Failure(FL_EINVAL, "isolate needs a runtime with process workers (fl_runtime_options.process_workers)")
            }
            guard returns == 1 else { throw Failure(FL_EINVAL, "an isolated task has one return") }
        }
        var arguments = try RemoteArguments(args, nargs)
        let output = RemoteObject(store: runtime.store)
        let extras = (1..<max(returns, 1)).map { _ in RemoteObject(store: runtime.store) }
        let task = RemoteTask(fn: fn, user: user, arguments: arguments.list, blobBytes: arguments.takeBytes(),
                              output: output, extraOutputs: extras, options: settings, runtime: runtime, typed: typed,
                              releaseUser: releaseUser)
        var handles: [UInt64] = []
        do throws(Failure) {
            handles.append(try registerRef(output))
            for extra in extras { handles.append(try registerRef(extra)) }
            try runtime.submit(task)
        } catch {
            for handle in handles { try? Registry.refs.destroy(cHandle(handle), "ref") }
            task.abandon()
            throw error
        }
        for (index, handle) in handles.enumerated() { out[index] = cHandle(handle) }
        return FL_OK
    }
}

/// Registers `fn` (called with `user`) under `name` (1 to 255 bytes; copied), process-wide:
/// fl_remote_named() submits it by name, and traces show the name. Registering the same
/// function and user under the same name again is allowed. Errors: FL_EINVAL (name or fn
/// NULL, empty or too long name), FL_ESTATE (another function has that name). Thread-safe.
@_cdecl("fl_function_register")
public func fl_function_register(_ name: UnsafePointer<CChar>?, _ fn: fl_remote_fn?,
                                 _ user: UnsafeMutableRawPointer?) -> CInt {
    withStatus { () throws(Failure) in
        let name = String(cString: try Check.required(name, "name"))
        try FunctionRegistry.register(name, .init(fn: try Check.required(fn, "fn"), user: user))
        return FL_OK
    }
}

/// Removes the function registered under `name`; tasks already submitted are unaffected.
/// Errors: FL_EINVAL (name NULL, or nothing registered under it). Thread-safe.
@_cdecl("fl_function_unregister")
public func fl_function_unregister(_ name: UnsafePointer<CChar>?) -> CInt {
    withStatus { () throws(Failure) in
        try FunctionRegistry.unregister(String(cString: try Check.required(name, "name")))
        return FL_OK
    }
}

/// fl_remote() with the function registered under `name` (and its user pointer). Errors: as
/// fl_remote(), and FL_EINVAL when nothing is registered under `name`. Thread-safe.
@_cdecl("fl_remote_named")
public func fl_remote_named(_ runtime: fl_runtime?, _ name: UnsafePointer<CChar>?, _ args: UnsafePointer<fl_arg>?,
                            _ nargs: size_t, _ options: UnsafePointer<fl_remote_options>?,
                            _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        if let ref { ref.pointee = nil }
        let entry = try FunctionRegistry.lookup(String(cString: try Check.required(name, "name")))
        return try submitRemote(runtime, entry.fn, entry.user, args, nargs, options, ref, typed: entry.typed,
                                userIsTheTasks: false)
    }
}

/// Starts recording the runtime's task events (clearing earlier ones): each run of a task
/// or actor call with its function's name (registered name, else symbol, else address),
/// thread, start, duration and status. At most 1,048,576 events are kept. Errors:
/// FL_EHANDLE. Thread-safe.
@_cdecl("fl_runtime_trace_start")
public func fl_runtime_trace_start(_ runtime: fl_runtime?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in runtime.timeline.start() }
        return FL_OK
    }
}

/// Stops recording task events; those recorded stay for fl_runtime_trace_write(). Errors:
/// FL_EHANDLE. Thread-safe.
@_cdecl("fl_runtime_trace_stop")
public func fl_runtime_trace_stop(_ runtime: fl_runtime?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in runtime.timeline.stop() }
        return FL_OK
    }
}

/// Writes the recorded events to the file at `path` (created or replaced) as Chrome-trace
/// JSON, which Perfetto (ui.perfetto.dev) and chrome://tracing open: one complete event per
/// run, one track per worker thread. Recording may go on meanwhile. Errors: FL_EHANDLE,
/// FL_EINVAL (path NULL), FL_ESYSTEM (the file could not be written; errno in the message).
/// Thread-safe.
@_cdecl("fl_runtime_trace_write")
public func fl_runtime_trace_write(_ runtime: fl_runtime?, _ path: UnsafePointer<CChar>?) -> CInt {
    withStatus { () throws(Failure) in
        let path = String(cString: try Check.required(path, "path"))
        try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in try runtime.timeline.write(to: path) }
        return FL_OK
    }
}

/// Sets the directory where objects that do not fit the runtime's `store_capacity` go instead
/// of failing with "object store full" (Ray's object spilling), or with NULL turns spilling
/// off (the default). Each such object gets an unnamed file of its own in the directory
/// (O_TMPFILE; a file unlinked at once where the file system lacks it), which is mapped back:
/// views (fl_get) and worker processes read it from the page cache, which the system can
/// write back to disk and drop under memory pressure. The file goes with the object's last
/// reference and view. Objects already in memory stay there; puts, fl_create buffers and task
/// results made from this call on spill when they do not fit, and their bytes are not counted
/// in `object_bytes`. The path is copied. A spill that fails (a full disk) fails the put or
/// result with FL_ENOMEM, naming the reason. Errors: FL_EHANDLE, FL_EINVAL (not a directory
/// this process may create files in). Thread-safe.
@_cdecl("fl_runtime_set_spill_directory")
public func fl_runtime_set_spill_directory(_ runtime: fl_runtime?, _ path: UnsafePointer<CChar>?) -> CInt {
    withStatus { () throws(Failure) in
        let directory = path.map { String(cString: $0) }
        try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in
            try runtime.store.setSpillDirectory(directory)
        }
        return FL_OK
    }
}

/// Copies `len` bytes of `data` into the runtime's store (ray.put) and stores a reference to
/// the new, ready object in `*ref`. Errors: FL_EINVAL, FL_EHANDLE, FL_ESTATE (shut down),
/// FL_ENOMEM (no memory, or "object store full" beyond store_capacity when there is no spill
/// directory or the spill failed: see fl_runtime_set_spill_directory). Thread-safe.
@_cdecl("fl_put")
public func fl_put(_ runtime: fl_runtime?, _ data: UnsafeRawPointer?, _ len: size_t,
                   _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(ref, "ref")
        out.pointee = nil
        try Check.bytes(data, len, "data")
        return try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in
            guard !runtime.isShutDown else { throw Failure(FL_ESTATE, "runtime is shut down") }
            let object = RemoteObject(store: runtime.store)
            var value = runtime.store.newValueSlot
            let target = try ResultSlot.reserve(&value, length: len, external: nil, externalCapacity: 0)
            if len > 0 { target.copyMemory(from: data!, byteCount: len) }
            value.status = FL_OK
            object.resolve(taking: &value)
            if let failure = object.failure { throw failure }
            out.pointee = cHandle(try registerRef(object))
            return FL_OK
        }
    }
}

/// Creates an object of `len` bytes to be filled in place (the zero-copy form of fl_put):
/// stores where to write them in `*buffer` and a reference in `*ref`. The object is pending
/// (fl_get waits, tasks taking it as an argument wait) until fl_seal(); the caller writes the
/// bytes in between, from any thread, and must not touch the buffer after sealing. Releasing
/// the last reference without sealing frees it (a task taking it as an argument holds it, and
/// waits). At fl_runtime_shutdown an object still unsealed resolves as FL_ECANCELED, and the
/// tasks waiting for it fail with that cause. The buffer's contents are unspecified until
/// written (not necessarily zeros: large buffers reuse the shared memory of freed objects).
/// Views of the sealed object (fl_get) point into this same buffer, except for objects of a
/// few bytes, which are copied once when sealed. Errors: FL_EINVAL (buffer or ref NULL),
/// FL_EHANDLE, FL_ESTATE (shut down), FL_ENOMEM (no memory, or the store's capacity without a
/// spill directory; with one, a buffer that does not fit is a file there).
/// Thread-safe.
@_cdecl("fl_create")
public func fl_create(_ runtime: fl_runtime?, _ len: size_t, _ buffer: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                      _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(ref, "ref")
        out.pointee = nil
        let place = try Check.required(buffer, "buffer")
        place.pointee = nil
        try Check.size(len, "len")
        return try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in
            guard !runtime.isShutDown else { throw Failure(FL_ESTATE, "runtime is shut down") }
            let object = RemoteObject(store: runtime.store)
            let target = try object.createBuffer(length: len)
            out.pointee = cHandle(try registerRef(object))
            place.pointee = target
            return FL_OK
        }
    }
}

/// Seals an object made by fl_create(): it becomes ready with the bytes written into its
/// buffer, and whoever waits for it goes on. Errors: FL_EHANDLE, FL_ESTATE (not an unsealed
/// object of fl_create: sealed already, or a task's result or a put; or resolved as
/// FL_ECANCELED by fl_runtime_shutdown before it was sealed, and the buffer freed now).
/// Thread-safe.
@_cdecl("fl_seal")
public func fl_seal(_ ref: fl_ref?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.refs.with(ref, "ref") { object throws(Failure) in try object.seal() }
        return FL_OK
    }
}

/// fl_get() of `count` references with one deadline (ray.get of a list): waits at most
/// `timeout` seconds in all, then for each i stores a read-only view in `data[i]`/`lens[i]`
/// (NULL/0 when not ready or failed) and its status in `statuses[i]` (FL_OK, the failure's
/// status, or FL_ETIMEDOUT); `statuses` may be NULL. Returns FL_OK when all are ready; else
/// the first failure's status in input order (fl_last_error() gives its message), or
/// FL_ETIMEDOUT. Views stay valid until their reference is released. With FL_FOREVER, queued
/// tasks of these objects may run on the calling thread, as for fl_get(). Errors: FL_EINVAL
/// (refs, data or lens NULL with a count), FL_EHANDLE (a reference; nothing is waited for).
/// Thread-safe.
@_cdecl("fl_get_many")
public func fl_get_many(_ refs: UnsafePointer<fl_ref?>?, _ count: size_t, _ timeout: Double,
                        _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ lens: UnsafeMutablePointer<size_t>?,
                        _ statuses: UnsafeMutablePointer<CInt>?) -> CInt {
    withStatus { () throws(Failure) in
        try Check.size(count, "count")
        guard count > 0 else { return FL_OK }
        let refs = try Check.required(refs, "refs")
        let data = try Check.required(data, "data")
        let lens = try Check.required(lens, "lens")
        let deadline = try Check.deadline(timeout)
        var objects: [RemoteObject] = []
        objects.reserveCapacity(count)
        for index in 0..<count {
            objects.append(try Registry.refs.with(refs[index], "ref") { $0 })
        }
        var first: Failure?
        for (index, object) in objects.enumerated() {
            data[index] = nil
            lens[index] = 0
            do throws(Failure) {
                let bytes = try object.view(until: deadline)
                data[index] = bytes.data
                lens[index] = bytes.length
                statuses?[index] = FL_OK
            } catch {
                statuses?[index] = error.code
                if first == nil { first = Failure(error.code, "object \(index): \(error.message)") }
            }
        }
        if let first { throw first }
        return FL_OK
    }
}

/// Waits at most `timeout` seconds (FL_FOREVER: no limit; 0: poll) for the object and stores
/// a read-only view of its bytes in `*data` and `*len` (either may be NULL): no copy, valid
/// until this reference is released (ray.get). A failed object returns its status (FL_ETASK,
/// FL_ECANCELED, FL_ENOMEM, ...) and fl_last_error() gives its message; for FL_ETASK the
/// message ends with the task's own code, as in "seven is not allowed (code 7)".
/// With FL_FOREVER, if the object's task is queued when fl_get is called and no worker has
/// taken it yet, the calling thread runs it itself (as a TBB or .NET wait does; not for
/// isolated tasks, nor for an actor call with others queued behind it); a task that becomes
/// queued later is left to the workers. Called from a remote task, it runs other tasks of
/// the runtime while it waits.
/// Errors: FL_ETIMEDOUT (not ready yet), FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_get")
public func fl_get(_ ref: fl_ref?, _ timeout: Double, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?,
                   _ len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        data?.pointee = nil
        len?.pointee = 0
        let deadline = try Check.deadline(timeout)
        // The references made before and after this one are often the next to be read.
        Registry.refs.prefetchNeighbours(of: rawHandle(ref))
        return try Registry.refs.with(ref, "ref") { object throws(Failure) in
            let bytes = try object.view(until: deadline)
            data?.pointee = bytes.data
            len?.pointee = bytes.length
            return FL_OK
        }
    }
}

/// Waits until at least `num_returns` of the `count` objects are resolved (ready or failed),
/// or `timeout` seconds pass (ray.wait), and sets `ready[i]` to 1 or 0 for each, in input
/// order. Returns FL_OK when `num_returns` are resolved, FL_ETIMEDOUT (with the flags) when
/// fewer are at the deadline. A task of the runtime that waits runs other tasks meanwhile, as
/// in fl_get, so it may wait for tasks it submitted; waiting for all of them (num_returns ==
/// count) waits object by object, as fl_get does. Errors: FL_EINVAL (refs or ready NULL,
/// num_returns above count), FL_EHANDLE (a reference). Thread-safe.
@_cdecl("fl_wait")
public func fl_wait(_ refs: UnsafePointer<fl_ref?>?, _ count: size_t, _ num_returns: size_t, _ timeout: Double,
                    _ ready: UnsafeMutablePointer<UInt8>?) -> CInt {
    withStatus { () throws(Failure) in
        try Check.size(count, "count")
        try Check.size(num_returns, "num_returns")
        guard num_returns <= count else { throw Failure(FL_EINVAL, "num_returns \(num_returns) is more than count \(count)") }
        let deadline = try Check.deadline(timeout)
        guard count > 0 else { return FL_OK }
        let refs = try Check.required(refs, "refs")
        let flags = try Check.required(ready, "ready")
        let objects = try (0..<count).map { i throws(Failure) in try Registry.refs.with(refs[i], "ref") { $0 } }
        func mark() -> Int {
            var done = 0
            for (i, object) in objects.enumerated() {
                flags[i] = object.isReady ? 1 : 0
                done += Int(flags[i])
            }
            return done
        }
        if num_returns == count && !deadline.hasPassed {
            // All of them: each in turn, as fl_get waits (on the object's own word, running a
            // queued task here, hurrying an actor), not woken at every resolution in the process.
            for object in objects where !object.waitHelping(until: deadline) { break }
        } else if mark() < num_returns {
            for object in objects where !object.isReady { object.hurryProducer() }
        }
        let met = RemoteObject.waitHelping(until: deadline, isDone: { mark() >= num_returns }) { slice in
            ObjectStore.waitForResolutions(until: slice) { mark() >= num_returns }
        }
        _ = mark()
        guard met else { throw Failure(FL_ETIMEDOUT, "fewer than \(num_returns) objects ready at the deadline") }
        return FL_OK
    }
}

/// Stores a new reference to the same object in `*copy` (to hand to another owner); each is
/// released on its own. Errors: FL_EHANDLE, FL_EINVAL, FL_ENOMEM. Thread-safe.
@_cdecl("fl_ref_clone")
public func fl_ref_clone(_ ref: fl_ref?, _ copy: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(copy, "copy")
        out.pointee = nil
        let object = try Registry.refs.with(ref, "ref") { $0 }
        out.pointee = cHandle(try registerRef(object))
        return FL_OK
    }
}

/// Makes the object of `container`, an fl_create() buffer not sealed yet, contain the object
/// of `inner`: it keeps that object alive until it is freed itself, as a Ray object keeps the
/// refs serialized in it, so a value that names other objects (a list of refs, a graph) can be
/// stored and read back with fl_ref_contained(). Stores the index of `inner` among the
/// objects `container` contains (0, 1, ... in the order added) in `*index` (may be NULL).
/// `inner` may be pending; it is not copied and the reference stays the caller's. A cycle
/// (an object containing itself through others) is never freed. Errors: FL_EHANDLE,
/// FL_EINVAL (the same object, or one of another runtime), FL_ESTATE (container is not an
/// unsealed fl_create buffer). Thread-safe.
@_cdecl("fl_ref_contain")
public func fl_ref_contain(_ container: fl_ref?, _ inner: fl_ref?, _ index: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        let holder = try Registry.refs.with(container, "container") { $0 }
        let held = try Registry.refs.with(inner, "inner") { $0 }
        let added = try holder.contain(held, asBuffer: true)
        index?.pointee = added
        return FL_OK
    }
}

/// Stores a new reference to the object at `index` among those the object of `container`
/// contains (fl_ref_contain(), fl_task_contain()) in `*ref`; release it on its own. The list is
/// complete once the object has resolved (before, it holds what was added so far). Errors:
/// FL_EHANDLE, FL_EINVAL (ref NULL), FL_ERANGE (index not below fl_ref_contained_count()).
/// Thread-safe.
@_cdecl("fl_ref_contained")
public func fl_ref_contained(_ container: fl_ref?, _ index: size_t, _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(ref, "ref")
        out.pointee = nil
        let object = try Registry.refs.with(container, "container") { $0 }
        out.pointee = cHandle(try registerRef(try containedObject(object, index)))
        return FL_OK
    }
}

/// Stores how many objects the object of `ref` contains in `*count`. Errors: FL_EHANDLE,
/// FL_EINVAL (count NULL). Thread-safe.
@_cdecl("fl_ref_contained_count")
public func fl_ref_contained_count(_ ref: fl_ref?, _ count: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(count, "count")
        out.pointee = 0
        out.pointee = try Registry.refs.with(ref, "ref") { $0.containedCount }
        return FL_OK
    }
}

/// Makes result `output` (0 for fl_task_return's) of the remote task or actor call running
/// with `ctx` contain the object of `inner`, as fl_ref_contain() does for a buffer, and
/// stores its index in `*index` (may be NULL): a task can return a value that names other
/// objects (refs of tasks it submitted, say), which its caller reads with fl_ref_contained().
/// The reference stays the caller's. A task that runs again (max_retries) starts with empty
/// results: what an earlier run contained is let go. Only inside the task's function, on the
/// thread running it. Errors: FL_EHANDLE (ctx is not the running task's, or inner),
/// FL_ENOTSUP (a task of a pool, or one running in a worker process), FL_ERANGE (output
/// beyond the task's num_returns), FL_EINVAL (inner is of another runtime, or is this result),
/// FL_ESTATE (the task was cancelled: its results have resolved).
@_cdecl("fl_task_contain")
public func fl_task_contain(_ ctx: fl_task_ctx?, _ output: size_t, _ inner: fl_ref?,
                            _ index: UnsafeMutablePointer<size_t>?) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 { return FL_ENOTSUP }
    return withStatus { () throws(Failure) in
        _ = try TaskRunner.current(ctx)
        let task = try runningRemoteTask()
        let outputs = task.outputCount
        // A size_t of 2^63 or more arrives negative.
        guard output >= 0, output < outputs else {
            throw Failure(FL_ERANGE, "output \(output) is beyond the task's \(outputs) result\(outputs == 1 ? "" : "s")")
        }
        let held = try Registry.refs.with(inner, "inner") { $0 }
        let added = try task.output(at: output).contain(held, asBuffer: false)
        index?.pointee = added
        return FL_OK
    }
}

/// Stores a new reference to the object at `index` among those contained by the object that
/// argument `arg` of the remote task, actor call or actor constructor running on this thread
/// refers to (an argument given as a ref) in `*ref`: how a task reads the refs inside a value
/// made with fl_ref_contain() or fl_task_contain(). Only inside that task's function (or
/// constructor), on the thread running it. Errors: FL_ENOTSUP (no remote task runs on this thread:
/// a task in a worker process too),
/// FL_ERANGE (arg beyond the arguments, or index beyond what that object contains), FL_EINVAL
/// (ref NULL, or argument `arg` is a blob, not a ref).
@_cdecl("fl_arg_contained")
public func fl_arg_contained(_ arg: size_t, _ index: size_t, _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(ref, "ref")
        out.pointee = nil
        let arguments = try runningRemoteTask().arguments
        guard arg >= 0, arg < arguments.count else {
            throw Failure(FL_ERANGE, "argument \(arg) is beyond the task's \(arguments.count)")
        }
        guard case .object(let object) = arguments[arg] else {
            throw Failure(FL_EINVAL, "argument \(arg) is a blob, not a ref")
        }
        out.pointee = cHandle(try registerRef(try containedObject(object, index)))
        return FL_OK
    }
}

/// The remote task running on this thread (its function, or an actor's constructor).
private func runningRemoteTask() throws(Failure) -> RemoteTask {
    guard let running = fls_tls_remote_task() else {
        throw Failure(FL_ENOTSUP, "no remote task runs on this thread")
    }
    return Unmanaged<RemoteTask>.fromOpaque(running).takeUnretainedValue()
}

/// The object at `index` among those `container` contains, or FL_ERANGE.
private func containedObject(_ container: RemoteObject, _ index: Int) throws(Failure) -> RemoteObject {
    if let object = container.containedObject(at: index) { return object }
    let count = container.containedCount
    throw Failure(FL_ERANGE, "index \(UInt(bitPattern: index)) is beyond the \(count) object\(count == 1 ? "" : "s") contained")
}

/// Releases the reference; views from fl_get through it become invalid. The object goes when
/// its last reference, the last task using it and the last object containing it
/// (fl_ref_contain) are gone. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_ref_release")
public func fl_ref_release(_ ref: fl_ref?) -> CInt {
    withStatus { () throws(Failure) in
        // Finished tasks still holding the object let go of it first, so that it is freed
        // with this reference if this is the last.
        try Registry.refs.destroy(ref, "ref") { object in object.store.graveyard.releaseAll() }
        return FL_OK
    }
}

/// Calls `fn(user, status)` once, when the object resolves (as Ray's ObjectRef.future() or
/// `await ref`): FL_OK for a value, else the failure's status. It runs on the thread that
/// resolves the object (the worker that ran its task, or a thread in fl_seal, fl_cancel,
/// fl_actor_kill, fl_ref_release or fl_runtime_shutdown), or at once on this thread if the
/// object has resolved already. It holds no reference: the object is alive
/// while `fn` runs, but to read it then (fl_get with a timeout of 0 returns at once), keep a
/// reference that outlives the call. An fl_create buffer whose last reference goes before
/// fl_seal calls it with FL_ECANCELED. Keep `fn` short (it delays whoever resolves the
/// object) and do not wait in it for objects that are not ready. Any number of callbacks
/// may wait on one object; each is called once. Errors: FL_EHANDLE, FL_EINVAL (fn NULL).
/// Thread-safe.
@_cdecl("fl_ref_on_ready")
public func fl_ref_on_ready(_ ref: fl_ref?, _ fn: fl_ready_fn?, _ user: UnsafeMutableRawPointer?) -> CInt {
    withStatus { () throws(Failure) in
        let fn = try Check.required(fn, "fn")
        let object = try Registry.refs.with(ref, "ref") { $0 }
        object.onResolution(fn, user: user)
        return FL_OK
    }
}

/// Stores the runtime's counters in `*stats` (a snapshot): tasks submitted, running, finished
/// and failed so far, and the objects and bytes its store holds now. Errors: FL_EHANDLE,
/// FL_EINVAL. Thread-safe.
@_cdecl("fl_runtime_get_stats")
public func fl_runtime_get_stats(_ runtime: fl_runtime?, _ stats: UnsafeMutablePointer<fl_runtime_stats>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(stats, "stats")
        out.pointee = try Registry.runtimes.with(runtime, "runtime") { $0.stats }
        return FL_OK
    }
}

/// Fills `options` with the defaults (max_concurrency 1). Returns FL_OK, or FL_EINVAL if
/// options is NULL. Thread-safe.
@_cdecl("fl_actor_options_init")
public func fl_actor_options_init(_ options: UnsafeMutablePointer<fl_actor_options>?) -> CInt {
    var defaults = fl_actor_options()
    defaults.max_concurrency = 1
    return initializeOptions(options, defaults, size: \.size)
}

/// Creates an actor (Actor.remote(...)) and stores its handle in `*actor`, at once: its
/// constructor `init(user, args, nargs, &state)` runs on a worker as the actor's first call
/// (arguments as for fl_remote, references included). Calls then run against the state, one
/// at a time in submission order unless options.max_concurrency says otherwise. `free_state`
/// (may be NULL) frees the state after fl_actor_kill, or at fl_runtime_shutdown if the actor
/// is still alive then. `options` may be NULL.
/// Errors: FL_EINVAL (init or actor NULL, bad arguments or options), FL_EHANDLE, FL_ESTATE
/// (runtime shut down), FL_ENOMEM. Thread-safe.
@_cdecl("fl_actor_create")
public func fl_actor_create(_ runtime: fl_runtime?, _ initialize: fl_actor_init_fn?, _ free_state: fl_actor_free_fn?,
                            _ user: UnsafeMutableRawPointer?, _ args: UnsafePointer<fl_arg>?, _ nargs: size_t,
                            _ options: UnsafePointer<fl_actor_options>?,
                            _ actor: UnsafeMutablePointer<fl_actor?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(actor, "actor")
        out.pointee = nil
        let initialize = try Check.required(initialize, "init")
        if nargs > 0 { _ = try Check.required(args, "args") }
        var concurrency = 1
        var isolation: ProcessSettings?
        if let options {
            // A struct from before isolate leaves it and the restart counts at 0.
            let given = try readOptions(options, over: fl_actor_options(),
                                        oldest: MemoryLayout<fl_actor_options>.offset(of: \fl_actor_options.isolate)!,
                                        size: \.size, initializer: "fl_actor_options_init")
            guard given.max_concurrency >= 1 else { throw Failure(FL_EINVAL, "max_concurrency must be at least 1") }
            concurrency = Int(given.max_concurrency)
            let restarts = given.max_restarts, retries = given.max_task_retries
            guard restarts >= 0, retries >= 0 else {
                throw Failure(FL_EINVAL, "max_restarts and max_task_retries must not be negative")
            }
            if given.isolate != 0 {
                guard concurrency == 1 else { throw Failure(FL_EINVAL, "an isolated actor has max_concurrency 1") }
                isolation = ProcessSettings(retries: Int(retries), pipelines: false, maxStarts: Int(restarts) + 1)
            } else if restarts > 0 || retries > 0 {
                throw Failure(FL_EINVAL, "max_restarts and max_task_retries need isolate")
            }
        }
        return try Registry.runtimes.with(runtime, "runtime") { runtime throws(Failure) in
            var arguments = try RemoteArguments(args, nargs)
            let created = RemoteActor(runtime: runtime, maxConcurrency: concurrency, construct: initialize,
                                      freeState: free_state, user: user, isolation: isolation)
            let constructor = RemoteTask(fn: RemoteActor.constructorTask, user: Unmanaged.passUnretained(created).toOpaque(),
                                         arguments: arguments.list, blobBytes: arguments.takeBytes(),
                                         output: RemoteObject(store: runtime.store), options: RemoteOptions(),
                                         runtime: runtime, actor: created, constructsActor: true)
            let handle = try Registry.actors.register(created)
            do throws(Failure) {
                try created.submit(constructor)
            } catch {
                try? Registry.actors.destroy(cHandle(handle), "actor")
                constructor.abandon()
                throw error
            }
            out.pointee = cHandle(handle)
            return FL_OK
        }
    }
}

/// Calls `method(state, args, nargs, ctx)` on the actor (actor.method.remote(...)) and stores
/// a reference to its result in `*ref`, at once. Calls run after the constructor, in the order
/// they were made (each waits for its reference arguments without holding a worker or letting
/// later calls pass; one cancelled meanwhile stops waiting, and the later calls go on). Errors: FL_EINVAL, FL_EHANDLE (actor, or a reference argument; also after
/// fl_actor_kill), FL_ESTATE (runtime shut down), FL_ENOMEM. Thread-safe: calls from several
/// threads are ordered as they enter.
@_cdecl("fl_actor_call")
public func fl_actor_call(_ actor: fl_actor?, _ method: fl_remote_fn?, _ args: UnsafePointer<fl_arg>?, _ nargs: size_t,
                          _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(ref, "ref")
        out.pointee = nil
        let method = try Check.required(method, "method")
        if nargs > 0 { _ = try Check.required(args, "args") }
        return try Registry.actors.with(actor, "actor") { actor throws(Failure) in
            var arguments = try RemoteArguments(args, nargs)
            let output = RemoteObject(store: actor.runtime.store)
            let call = RemoteTask(fn: method, user: nil, arguments: arguments.list, blobBytes: arguments.takeBytes(),
                                  output: output, options: RemoteOptions(), runtime: actor.runtime, actor: actor)
            let handle = try registerRef(output)
            do throws(Failure) {
                try actor.submit(call)
            } catch {
                try? Registry.refs.destroy(cHandle(handle), "ref")
                call.abandon()
                throw error
            }
            out.pointee = cHandle(handle)
            return FL_OK
        }
    }
}

/// Ends the actor (ray.kill): calls that have not started resolve as FL_ECANCELED, running ones
/// finish, then `free_state` frees the state; the handle is freed at once. References to its
/// calls stay valid until released. An actor that fl_runtime_shutdown() ended still needs this
/// call to free its handle (it frees nothing more). Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_actor_kill")
public func fl_actor_kill(_ actor: fl_actor?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.actors.destroy(actor, "actor") { actor in actor.kill() }
        return FL_OK
    }
}

/// Cancels the task whose result `ref` names (ray.cancel): its object resolves as FL_ECANCELED
/// at once ("the task was cancelled"); a task that has not started never runs (an actor call
/// is skipped in its turn, which comes at once if it waited for arguments); a running task or actor call finishes on its own, and
/// fl_task_cancelled() tells it to stop early, in a worker process too (fl_cancel_force()
/// stops an isolated task that does not look, not an actor call). No effect once the task has
/// finished. Tasks depending on the object fail with that cause. Recursive, as in Ray: the
/// remote tasks that the task submitted from its own thread while running (nested tasks; not
/// actor calls, which belong to their actor), and that have not finished, are cancelled the
/// same way, theirs in turn, and so is any it submits after this call while it runs on
/// (fl_cancel_with() without FL_CANCEL_RECURSIVE cancels the task alone). Only the first
/// cancel of a task counts: its object is resolved then, and a later cancel changes nothing,
/// recursive or not. Errors: FL_EINVAL (the object was put, not produced by a task), FL_EHANDLE.
/// Thread-safe.
@_cdecl("fl_cancel")
public func fl_cancel(_ ref: fl_ref?) -> CInt {
    cancel(ref, flags: UInt32(FL_CANCEL_RECURSIVE))
}

/// fl_cancel(), and a task running in a worker process (fl_remote_options.isolate) is stopped
/// at once: its process is killed (SIGKILL) and replaced (ray.cancel(force=True)); its nested
/// tasks too. Tasks on threads and actor calls are cancelled as by fl_cancel(). Errors: as
/// fl_cancel(). Thread-safe.
@_cdecl("fl_cancel_force")
public func fl_cancel_force(_ ref: fl_ref?) -> CInt {
    cancel(ref, flags: UInt32(FL_CANCEL_FORCE | FL_CANCEL_RECURSIVE))
}

/// Cancels as fl_cancel() does, as `flags` say (ray.cancel(ref, force=..., recursive=...)):
/// FL_CANCEL_FORCE kills a running isolated task's process (fl_cancel_force());
/// FL_CANCEL_RECURSIVE cancels the task's nested tasks too. fl_cancel() is
/// `fl_cancel_with(ref, FL_CANCEL_RECURSIVE)`. Errors: as fl_cancel(), and FL_EINVAL for other
/// bits in `flags`. Thread-safe.
@_cdecl("fl_cancel_with")
public func fl_cancel_with(_ ref: fl_ref?, _ flags: CUnsignedInt) -> CInt {
    cancel(ref, flags: flags)
}

/// The body of fl_cancel, fl_cancel_force and fl_cancel_with.
private func cancel(_ ref: fl_ref?, flags: UInt32) -> CInt {
    withStatus { () throws(Failure) in
        let known = UInt32(FL_CANCEL_FORCE | FL_CANCEL_RECURSIVE)
        guard flags & ~known == 0 else {
            throw Failure(FL_EINVAL, "unknown cancel flags 0x\(String(flags & ~known, radix: 16)) (FL_CANCEL_FORCE, FL_CANCEL_RECURSIVE)")
        }
        try Registry.refs.with(ref, "ref") { object throws(Failure) in
            guard object.isTaskResult else { throw Failure(FL_EINVAL, "the object was put, not produced by a task") }
            // nil: the task has finished and gone.
            object.producer?.cancel(force: flags & UInt32(FL_CANCEL_FORCE) != 0,
                                    recursive: flags & UInt32(FL_CANCEL_RECURSIVE) != 0)
        }
        return FL_OK
    }
}

/// Registers a reference to `object`, with its slot as the handle's hint: fl_get on a
/// neighbouring reference starts fetching it (`HandleTable.prefetchNeighbours`).
@inline(__always)
private func registerRef(_ object: RemoteObject) throws(Failure) -> UInt64 {
    try Registry.refs.register(object, hint: UnsafeRawPointer(object.slot))
}

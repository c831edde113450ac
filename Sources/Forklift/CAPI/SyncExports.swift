import CForklift

// Locks, events and semaphores shared between processes. Each lives in shared memory: the
// processes started after its creation use the same handle; any other process of the same
// user opens it with the name from fl_*_name() while a process that has it open lives. All of
// these calls are thread-safe and process-safe, and work inside started and worker processes.

/// Creates a process-shared lock and stores it in `*lock` (multiprocessing.Lock; with
/// `recursive` non-zero, multiprocessing.RLock: the holding thread may take it again and must
/// release it as many times). Only the holding thread may release it. If the holder dies
/// (its process crashes or is killed), the lock passes to the next thread that takes it — it
/// never blocks the others forever; what it protected may then be half updated.
/// Errors: FL_EINVAL (lock NULL), FL_ENOMEM.
@_cdecl("fl_lock_create")
public func fl_lock_create(_ recursive: CInt, _ lock: UnsafeMutablePointer<fl_lock?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(lock, "lock")
        out.pointee = nil
        let sync = try SharedSync(kind: recursive != 0 ? FLS_SHARED_RLOCK : FLS_SHARED_LOCK)
        out.pointee = cHandle(try Registry.locks.register(sync))
        return FL_OK
    }
}

/// Takes the lock, waiting at most `timeout` seconds (FL_FOREVER: no limit; 0: try once).
/// Errors: FL_ETIMEDOUT (still held elsewhere), FL_ESTATE (a plain lock already held by the
/// calling thread: waiting would never end), FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_lock_acquire")
public func fl_lock_acquire(_ lock: fl_lock?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.locks.with(lock, "lock") { lock throws(Failure) in try lock.acquireLock(until: deadline) }
        return FL_OK
    }
}

/// Releases the lock (once, for a recursive lock). Errors: FL_ESTATE (the calling thread does
/// not hold it), FL_EHANDLE.
@_cdecl("fl_lock_release")
public func fl_lock_release(_ lock: fl_lock?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.locks.with(lock, "lock") { lock throws(Failure) in try lock.releaseLock() }
        return FL_OK
    }
}

/// Copies the lock's name (NUL-terminated; 64 bytes always suffice) into `buffer`: what
/// another process passes to fl_lock_open(). Errors: FL_ERANGE, FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_lock_name")
public func fl_lock_name(_ lock: fl_lock?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: size_t) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let buffer = try Check.required(buffer, "buffer")
        try SharedObjectName.copy(try Registry.locks.with(lock, "lock") { $0.name }, to: buffer, capacity: capacity)
        return FL_OK
    }
}

/// Opens the lock named `name` (from fl_lock_name() in another process) and stores it in
/// `*lock`. Errors: FL_EINVAL (NULL arguments, no such lock, not a lock), FL_ESYSTEM.
@_cdecl("fl_lock_open")
public func fl_lock_open(_ name: UnsafePointer<CChar>?, _ lock: UnsafeMutablePointer<fl_lock?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(lock, "lock")
        out.pointee = nil
        let name = String(cString: try Check.required(name, "name"))
        let sync = try SharedSync(open: name, kinds: [FLS_SHARED_LOCK, FLS_SHARED_RLOCK], what: "lock")
        out.pointee = cHandle(try Registry.locks.register(sync))
        return FL_OK
    }
}

/// Unmaps the lock from this process and frees the handle (other processes keep theirs). No
/// thread of this process may be waiting on it. Errors: FL_EHANDLE.
@_cdecl("fl_lock_destroy")
public func fl_lock_destroy(_ lock: fl_lock?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.locks.destroy(lock, "lock")
        return FL_OK
    }
}

/// Creates a process-shared event, initially clear, and stores it in `*event`
/// (multiprocessing.Event). Errors: FL_EINVAL (event NULL), FL_ENOMEM.
@_cdecl("fl_event_create")
public func fl_event_create(_ event: UnsafeMutablePointer<fl_event?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(event, "event")
        out.pointee = nil
        out.pointee = cHandle(try Registry.events.register(try SharedSync(kind: FLS_SHARED_EVENT)))
        return FL_OK
    }
}

/// Sets the event: every waiter, in every process, wakes; later waits return at once until
/// fl_event_clear(). Errors: FL_EHANDLE.
@_cdecl("fl_event_set")
public func fl_event_set(_ event: fl_event?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.events.with(event, "event") { fls_event_set($0.sync) }
        return FL_OK
    }
}

/// Clears the event. Errors: FL_EHANDLE.
@_cdecl("fl_event_clear")
public func fl_event_clear(_ event: fl_event?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.events.with(event, "event") { fls_event_clear($0.sync) }
        return FL_OK
    }
}

/// Stores 1 in `*set` if the event is set, else 0. Errors: FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_event_is_set")
public func fl_event_is_set(_ event: fl_event?, _ set: UnsafeMutablePointer<CInt>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(set, "set")
        out.pointee = try Registry.events.with(event, "event") { fls_event_is_set($0.sync) != 0 ? 1 : 0 }
        return FL_OK
    }
}

/// Waits until the event is set, at most `timeout` seconds (FL_FOREVER: no limit).
/// Errors: FL_ETIMEDOUT (still clear), FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_event_wait")
public func fl_event_wait(_ event: fl_event?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.events.with(event, "event") { event throws(Failure) in try event.waitEvent(until: deadline) }
        return FL_OK
    }
}

/// Copies the event's name (64 bytes always suffice) into `buffer`, for fl_event_open() in
/// another process. Errors: FL_ERANGE, FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_event_name")
public func fl_event_name(_ event: fl_event?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: size_t) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let buffer = try Check.required(buffer, "buffer")
        try SharedObjectName.copy(try Registry.events.with(event, "event") { $0.name }, to: buffer, capacity: capacity)
        return FL_OK
    }
}

/// Opens the event named `name` (from fl_event_name()) and stores it in `*event`.
/// Errors: FL_EINVAL (NULL arguments, no such event, not an event), FL_ESYSTEM.
@_cdecl("fl_event_open")
public func fl_event_open(_ name: UnsafePointer<CChar>?, _ event: UnsafeMutablePointer<fl_event?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(event, "event")
        out.pointee = nil
        let name = String(cString: try Check.required(name, "name"))
        let sync = try SharedSync(open: name, kinds: [FLS_SHARED_EVENT], what: "event")
        out.pointee = cHandle(try Registry.events.register(sync))
        return FL_OK
    }
}

/// Unmaps the event from this process and frees the handle. No thread of this process may be
/// waiting on it. Errors: FL_EHANDLE.
@_cdecl("fl_event_destroy")
public func fl_event_destroy(_ event: fl_event?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.events.destroy(event, "event")
        return FL_OK
    }
}

/// Creates a process-shared counting semaphore starting at `value` and stores it in
/// `*semaphore` (multiprocessing.Semaphore). A non-zero `max` bounds it
/// (multiprocessing.BoundedSemaphore): a release beyond `max` fails with FL_ERANGE.
/// Errors: FL_EINVAL (semaphore NULL, value above max), FL_ENOMEM.
@_cdecl("fl_semaphore_create")
public func fl_semaphore_create(_ value: CUnsignedInt, _ max: CUnsignedInt,
                                _ semaphore: UnsafeMutablePointer<fl_semaphore?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(semaphore, "semaphore")
        out.pointee = nil
        guard max == 0 || value <= max else { throw Failure(FL_EINVAL, "initial value \(value) is above max \(max)") }
        let sync = try SharedSync(kind: FLS_SHARED_SEMAPHORE, value: Int64(value), max: Int64(max))
        out.pointee = cHandle(try Registry.semaphores.register(sync))
        return FL_OK
    }
}

/// Decrements the semaphore, waiting at most `timeout` seconds while it is zero (FL_FOREVER:
/// no limit; 0: try once). Errors: FL_ETIMEDOUT, FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_semaphore_acquire")
public func fl_semaphore_acquire(_ semaphore: fl_semaphore?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.semaphores.with(semaphore, "semaphore") { sem throws(Failure) in
            try sem.acquireSemaphore(until: deadline)
        }
        return FL_OK
    }
}

/// Increments the semaphore and wakes one waiter. Any thread of any process may release.
/// Errors: FL_ERANGE (a bounded semaphore at its max, or any at UINT_MAX), FL_EHANDLE.
@_cdecl("fl_semaphore_release")
public func fl_semaphore_release(_ semaphore: fl_semaphore?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.semaphores.with(semaphore, "semaphore") { sem throws(Failure) in try sem.releaseSemaphore() }
        return FL_OK
    }
}

/// Stores the semaphore's current value in `*value` (a snapshot). Errors: FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_semaphore_value")
public func fl_semaphore_value(_ semaphore: fl_semaphore?, _ value: UnsafeMutablePointer<CUnsignedInt>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(value, "value")
        out.pointee = try Registry.semaphores.with(semaphore, "semaphore") { CUnsignedInt(clamping: fls_semaphore_value($0.sync)) }
        return FL_OK
    }
}

/// Copies the semaphore's name (64 bytes always suffice) into `buffer`, for
/// fl_semaphore_open() in another process. Errors: FL_ERANGE, FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_semaphore_name")
public func fl_semaphore_name(_ semaphore: fl_semaphore?, _ buffer: UnsafeMutablePointer<CChar>?,
                              _ capacity: size_t) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let buffer = try Check.required(buffer, "buffer")
        let name = try Registry.semaphores.with(semaphore, "semaphore") { $0.name }
        try SharedObjectName.copy(name, to: buffer, capacity: capacity)
        return FL_OK
    }
}

/// Opens the semaphore named `name` (from fl_semaphore_name()) and stores it in `*semaphore`.
/// Errors: FL_EINVAL (NULL arguments, no such semaphore, not a semaphore), FL_ESYSTEM.
@_cdecl("fl_semaphore_open")
public func fl_semaphore_open(_ name: UnsafePointer<CChar>?, _ semaphore: UnsafeMutablePointer<fl_semaphore?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(semaphore, "semaphore")
        out.pointee = nil
        let name = String(cString: try Check.required(name, "name"))
        let sync = try SharedSync(open: name, kinds: [FLS_SHARED_SEMAPHORE], what: "semaphore")
        out.pointee = cHandle(try Registry.semaphores.register(sync))
        return FL_OK
    }
}

/// Unmaps the semaphore from this process and frees the handle. No thread of this process may
/// be waiting on it. Errors: FL_EHANDLE.
@_cdecl("fl_semaphore_destroy")
public func fl_semaphore_destroy(_ semaphore: fl_semaphore?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.semaphores.destroy(semaphore, "semaphore")
        return FL_OK
    }
}

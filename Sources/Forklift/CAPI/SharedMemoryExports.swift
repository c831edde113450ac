#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Creates a bounded queue of byte messages in shared memory and stores it in `*queue`
/// (multiprocessing.Queue): a ring of `capacity` bytes (0: FL_QUEUE_DEFAULT_CAPACITY; a message
/// costs its length + 8, rounded up to 8) and at most `max_items` messages (0: no count
/// limit). Messages may have any size: one above a quarter of the ring is stored out of line,
/// in the queue's own shared memory (it then costs 16 bytes of the ring; the memory is given
/// back when it is taken), so it is copied once in and once out, never through the kernel.
/// The queue is shared with every process started afterwards by fork (fl_process_start,
/// process pools), which use the same handle; other processes open it by name
/// (fl_queue_name, fl_queue_open). Errors: FL_EINVAL (queue NULL, capacity above 2^40), FL_ENOMEM. Thread-safe.
@_cdecl("fl_queue_create")
public func fl_queue_create(_ capacity: size_t, _ max_items: size_t, _ queue: UnsafeMutablePointer<fl_queue?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(queue, "queue")
        out.pointee = nil
        guard capacity >= 0 && capacity <= 1 << 40 else {
            throw Failure(FL_EINVAL, "capacity of \(UInt(bitPattern: capacity)) bytes is impossible")
        }
        let created = try SharedQueue(capacity: capacity == 0 ? Int(FL_QUEUE_DEFAULT_CAPACITY) : capacity,
                                      maxItems: max_items)
        out.pointee = cHandle(try Registry.queues.register(created))
        return FL_OK
    }
}

/// Appends a copy of `data` (`len` bytes), waiting at most `timeout` seconds for room
/// (FL_FOREVER: no limit; 0: do not wait). Errors: FL_ETIMEDOUT (still full), FL_ENOMEM (no
/// shared memory for a large message), FL_ERANGE (a message of 2^62 bytes or more), FL_ESTATE
/// (closed), FL_EHANDLE, FL_EINVAL.
/// Thread-safe and process-safe; also inside a started process or a worker process.
@_cdecl("fl_queue_put")
public func fl_queue_put(_ queue: fl_queue?, _ data: UnsafeRawPointer?, _ len: size_t, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Check.bytes(data, len, "data")
        let deadline = try Check.deadline(timeout)
        try Registry.queues.with(queue, "queue") { queue throws(Failure) in try queue.put(data, len, until: deadline) }
        return FL_OK
    }
}

/// Removes the oldest message, copying it into `buffer` (`capacity` bytes) and its length into
/// `*len`, waiting at most `timeout` seconds for one. Errors: FL_ETIMEDOUT (still empty),
/// FL_ERANGE (buffer too small: `*len` is the size needed and the message stays queued; pass a
/// NULL buffer and 0 to learn the size), FL_EDONE (closed and empty), FL_EHANDLE, FL_EINVAL.
/// A caller that finds the queue empty watches it for up to 50 µs (spinning, within `timeout`)
/// before it sleeps, so a message that comes soon is taken without a sleep and a wake-up.
/// Thread-safe and process-safe; also inside a started process or a worker process.
@_cdecl("fl_queue_get")
public func fl_queue_get(_ queue: fl_queue?, _ buffer: UnsafeMutableRawPointer?, _ capacity: size_t,
                         _ len: UnsafeMutablePointer<size_t>?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(len, "len")
        try Check.bytes(buffer, capacity, "buffer")
        let deadline = try Check.deadline(timeout)
        var length = 0
        defer { out.pointee = length }
        try Registry.queues.with(queue, "queue") { queue throws(Failure) in
            try queue.get(into: buffer, capacity: capacity, length: &length, until: deadline)
        }
        return FL_OK
    }
}

/// Stores the number of queued messages in `*count` (a snapshot). Errors: FL_EHANDLE,
/// FL_EINVAL. Thread-safe and process-safe.
@_cdecl("fl_queue_count")
public func fl_queue_count(_ queue: fl_queue?, _ count: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(count, "count")
        out.pointee = try Registry.queues.with(queue, "queue") { fls_queue_count($0.queue) }
        return FL_OK
    }
}

/// Closes the queue for every process sharing it: puts fail with FL_ESTATE, gets return the
/// messages left and then FL_EDONE, and waiters wake. Idempotent. Errors: FL_EHANDLE.
/// Thread-safe and process-safe.
@_cdecl("fl_queue_close")
public func fl_queue_close(_ queue: fl_queue?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.queues.with(queue, "queue") { fls_queue_close($0.queue) }
        return FL_OK
    }
}

/// Copies the queue's name (NUL-terminated; 64 bytes always suffice) into `buffer`: what a
/// process that did not inherit the queue (a spawned process, a pool worker started earlier,
/// an unrelated process of the same user) passes to fl_queue_open() while a process that has
/// the queue open lives. Errors: FL_ERANGE, FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_queue_name")
public func fl_queue_name(_ queue: fl_queue?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: size_t) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let buffer = try Check.required(buffer, "buffer")
        try SharedObjectName.copy(try Registry.queues.with(queue, "queue") { $0.name }, to: buffer, capacity: capacity)
        return FL_OK
    }
}

/// Opens the queue named `name` (from fl_queue_name()) and stores it in `*queue`: the same
/// queue, not a copy. Errors: FL_EINVAL (NULL arguments, no such queue, not a queue),
/// FL_ESYSTEM. Thread-safe; also inside a started process or a worker process.
@_cdecl("fl_queue_open")
public func fl_queue_open(_ name: UnsafePointer<CChar>?, _ queue: UnsafeMutablePointer<fl_queue?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(queue, "queue")
        out.pointee = nil
        let name = String(cString: try Check.required(name, "name"))
        out.pointee = cHandle(try Registry.queues.register(try SharedQueue(open: name)))
        return FL_OK
    }
}

/// Unmaps the queue from this process and frees the handle (other processes keep theirs; the
/// memory goes with the last one). Do not call it while another thread of this process waits
/// in the queue. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_queue_destroy")
public func fl_queue_destroy(_ queue: fl_queue?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.queues.destroy(queue, "queue")
        return FL_OK
    }
}

/// Creates a shared-memory segment of `size` bytes, zero-filled, mapped read-write, and stores
/// it in `*shm` (multiprocessing.shared_memory.SharedMemory(create=True)). `name` NULL makes an
/// anonymous segment (a memfd): it is freed when the last process using it unmaps it or dies,
/// so it never leaks. A `name` such as "/my-data" makes a POSIX shared-memory object that
/// outlives the processes until fl_shm_unlink(). Processes started afterwards inherit the
/// mapping; any process of the same user may map it with fl_shm_open() and the name from
/// fl_shm_name(). Errors: FL_EINVAL (shm NULL, bad name — one beginning with "memfd:" too,
/// as anonymous segments' tokens do —, a size of 0 or above 16 TiB),
/// FL_ESTATE (the name exists), FL_ENOMEM, FL_ESYSTEM. Thread-safe; also inside a started
/// process or a worker process.
@_cdecl("fl_shm_create")
public func fl_shm_create(_ name: UnsafePointer<CChar>?, _ size: size_t, _ shm: UnsafeMutablePointer<fl_shm?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(shm, "shm")
        out.pointee = nil
        guard size > 0 && size <= 1 << 44 else {
            throw Failure(FL_EINVAL, "size \(UInt(bitPattern: size)) is impossible for a segment (1 byte to 16 TiB)")
        }
        let segment = try SharedSegment(create: name.map { String(cString: $0) }, size: size)
        out.pointee = cHandle(try Registry.segments.register(segment))
        return FL_OK
    }
}

/// Maps an existing segment by the name fl_shm_name() gives (a POSIX name, or the
/// "memfd:PID:FD" token of an anonymous segment while its creator lives) and stores it in
/// `*shm`. Writes are seen by every process that maps it: no copy is made. Errors: FL_EINVAL
/// (NULL arguments, no such segment, a token naming a descriptor that is not a segment's),
/// FL_ESYSTEM. Thread-safe; also inside a started process or a worker process.
@_cdecl("fl_shm_open")
public func fl_shm_open(_ name: UnsafePointer<CChar>?, _ shm: UnsafeMutablePointer<fl_shm?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(shm, "shm")
        out.pointee = nil
        let name = try Check.required(name, "name")
        let segment = try SharedSegment(open: String(cString: name))
        out.pointee = cHandle(try Registry.segments.register(segment))
        return FL_OK
    }
}

/// Stores the segment's address in this process and its size. The memory is valid until
/// fl_shm_close(). Errors: FL_EHANDLE, FL_EINVAL (both pointers NULL). Thread-safe.
@_cdecl("fl_shm_data")
public func fl_shm_data(_ shm: fl_shm?, _ data: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                        _ size: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        guard data != nil || size != nil else { throw Failure(FL_EINVAL, "data and size are both NULL") }
        try Registry.segments.with(shm, "shm") { segment in
            data?.pointee = segment.data
            size?.pointee = segment.size
        }
        return FL_OK
    }
}

/// Copies the segment's name (NUL-terminated) into `buffer` of `capacity` bytes: what another
/// process passes to fl_shm_open(). Errors: FL_ERANGE (too small; 64 bytes always suffice for
/// an anonymous segment), FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_shm_name")
public func fl_shm_name(_ shm: fl_shm?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: size_t) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let buffer = try Check.required(buffer, "buffer")
        try SharedObjectName.copy(try Registry.segments.with(shm, "shm") { $0.name }, to: buffer, capacity: capacity)
        return FL_OK
    }
}

/// Unmaps the segment from this process and frees the handle; pointers into it become
/// invalid. Other processes keep their mappings. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_shm_close")
public func fl_shm_close(_ shm: fl_shm?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.segments.destroy(shm, "shm")
        return FL_OK
    }
}

/// Removes the name of a named segment (multiprocessing's SharedMemory.unlink): existing
/// mappings stay valid, the memory is freed when the last one goes. Errors: FL_EINVAL (name
/// NULL or no such segment), FL_ESYSTEM. Thread-safe.
@_cdecl("fl_shm_unlink")
public func fl_shm_unlink(_ name: UnsafePointer<CChar>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let name = try Check.required(name, "name")
        guard shm_unlink(name) == 0 else {
            let error = errno
            throw Failure(error == ENOENT ? FL_EINVAL : FL_ESYSTEM,
                          "could not unlink shared memory \"\(String(cString: name))\" (errno \(error))")
        }
        return FL_OK
    }
}

import CForklift

/// Starts a lazy, ordered map over the items of `source` (multiprocessing's imap): returns at
/// once with `*iter`; fl_iter_next() yields results in input order.
///
/// Items are pulled from `source` (see fl_source_fn for its thread) only while fewer than
/// `read_ahead` items are pulled and not yet returned (0: 4 * workers * chunksize), each copied,
/// and sent to workers `chunksize` at a time (0 means 1). Pulling goes a whole chunk at a
/// time, so up to `read_ahead` rounded up to a multiple of `chunksize` may be pulled ahead. fl_pool_close() drains the rest of
/// the input. Destroy with fl_iter_destroy(). Errors: FL_EHANDLE, FL_EINVAL (fn, source or
/// iter NULL), FL_ESTATE (pool not running), FL_ENOMEM. Thread-safe.
@_cdecl("fl_pool_imap")
public func fl_pool_imap(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?, _ source: fl_source_fn?,
                         _ source_user: UnsafeMutableRawPointer?, _ chunksize: size_t, _ read_ahead: size_t,
                         _ iter: UnsafeMutablePointer<fl_iter?>?) -> CInt {
    startImap(pool, fn, user, source, source_user, chunksize, read_ahead, iter, ordered: true)
}

/// As fl_pool_imap(), but fl_iter_next() yields results in completion order
/// (multiprocessing's imap_unordered). Thread-safe.
@_cdecl("fl_pool_imap_unordered")
public func fl_pool_imap_unordered(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                                   _ source: fl_source_fn?, _ source_user: UnsafeMutableRawPointer?, _ chunksize: size_t,
                                   _ read_ahead: size_t, _ iter: UnsafeMutablePointer<fl_iter?>?) -> CInt {
    startImap(pool, fn, user, source, source_user, chunksize, read_ahead, iter, ordered: false)
}

private func startImap(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?, _ source: fl_source_fn?,
                       _ sourceUser: UnsafeMutableRawPointer?, _ chunkSize: Int, _ readAhead: Int,
                       _ iter: UnsafeMutablePointer<fl_iter?>?, ordered: Bool) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(iter, "iter")
        out.pointee = nil
        let fn = try Check.required(fn, "fn")
        let source = try Check.required(source, "source")
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.imap(fn, user: user, source: source, sourceUser: sourceUser, chunkSize: chunkSize,
                          readAhead: readAhead, ordered: ordered)
        }
        out.pointee = cHandle(handle)
        return FL_OK
    }
}

/// Returns the next result, waiting at most `timeout` seconds: FL_OK with its bytes in
/// `*data`/`*len` (each may be NULL; borrowed until the next fl_iter_next() or
/// fl_iter_destroy()); FL_ETASK or FL_ECANCELED for an item that failed, or on a process pool
/// FL_EWORKER (its worker process died, or was killed for the task timeout) (fl_iter_error()
/// gives its code and message; iteration goes on with the next item); FL_ESOURCE once if the source
/// failed; then FL_EDONE at the end. FL_ETIMEDOUT leaves the iterator as it was. Call from one
/// thread at a time.
@_cdecl("fl_iter_next")
public func fl_iter_next(_ iter: fl_iter?, _ timeout: Double, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?,
                         _ len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        data?.pointee = nil
        len?.pointee = 0
        let deadline = try Check.deadline(timeout)
        return try Registry.iterators.with(iter, "iterator") { iterator throws(Failure) in
            let (status, bytes, length) = iterator.next(until: deadline)
            data?.pointee = bytes
            len?.pointee = length
            return status
        }
    }
}

/// Describes the failure of the item fl_iter_next() returned last: `*code` gets the task's code
/// (0 if it did not fail), `*message` its message ("" if none), borrowed until the next
/// fl_iter_next(). Either pointer may be NULL. Errors: FL_EHANDLE.
@_cdecl("fl_iter_error")
public func fl_iter_error(_ iter: fl_iter?, _ code: UnsafeMutablePointer<CInt>?,
                          _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.iterators.with(iter, "iterator") { iterator throws(Failure) in
            iterator.describeLastFailure(code, message)
        }
        return FL_OK
    }
}

/// Destroys an iterator: no more input is pulled; items already queued still run and their
/// results are discarded. Errors: FL_EHANDLE. Thread-safe; the handle is invalid afterwards.
@_cdecl("fl_iter_destroy")
public func fl_iter_destroy(_ iter: fl_iter?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.iterators.destroy(iter, "iterator") { iterator throws(Failure) in iterator.abandon() }
        return FL_OK
    }
}

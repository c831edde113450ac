import CForklift

/// Copies `len` bytes from `data` as the result of the running task (replacing an earlier
/// one). Call only from inside the task function that received `ctx`. Errors: FL_EHANDLE (ctx
/// is not the running task's), FL_EINVAL (data NULL with a length, or a length of 2^63 or
/// more), FL_ERANGE (in a process of fl_process_start: more than its 1 MiB), FL_ENOMEM.
@_cdecl("fl_task_return")
public func fl_task_return(_ ctx: fl_task_ctx?, _ data: UnsafeRawPointer?, _ len: size_t) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 {
        return fls_child_task_return(UnsafeRawPointer(ctx), data, len)
    }
    return withStatus { () throws(Failure) in
        let record = try TaskRunner.current(ctx)
        try Check.bytes(data, len, "data")
        let target = try ResultSlot.reserve(for: record, length: len)
        if len > 0 { target.copyMemory(from: data!, byteCount: len) }
        return FL_OK
    }
}

/// Sets result `index` of a remote task submitted with fl_remote_multi() to a copy of
/// `data` (`len` bytes); index 0 is fl_task_return(). Only inside that task's function.
/// Errors: FL_EHANDLE (ctx is not the running task's), FL_ERANGE (index beyond the task's
/// num_returns), FL_EINVAL, FL_ENOMEM.
@_cdecl("fl_task_return_at")
public func fl_task_return_at(_ ctx: fl_task_ctx?, _ index: size_t, _ data: UnsafeRawPointer?, _ len: size_t) -> CInt {
    if index == 0 { return fl_task_return(ctx, data, len) }
    return withStatus { () throws(Failure) in
        _ = try TaskRunner.current(ctx)
        try Check.bytes(data, len, "data")
        let slot = try ExtraOutputs.slot(index)
        let target = try ResultSlot.reserve(slot, length: len, external: nil, externalCapacity: 0)
        if len > 0 { target.copyMemory(from: data!, byteCount: len) }
        return FL_OK
    }
}

/// Reserves a `len`-byte result and stores where to write it in `*buffer` — the caller's own
/// buffer for fl_pool_apply() when it fits (zero-copy), else library memory. The buffer is
/// valid until the task function returns. Errors: FL_EHANDLE, FL_EINVAL, FL_ERANGE (as for
/// fl_task_return), FL_ENOMEM (no memory for `len` bytes: a `len` of 2^63 or more too).
@_cdecl("fl_task_result_buffer")
public func fl_task_result_buffer(_ ctx: fl_task_ctx?, _ len: size_t,
                                  _ buffer: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 {
        guard let buffer else { return FL_EINVAL }
        return fls_child_task_result_buffer(UnsafeRawPointer(ctx), len, buffer)
    }
    return withStatus { () throws(Failure) in
        let out = try Check.required(buffer, "buffer")
        out.pointee = nil
        let record = try TaskRunner.current(ctx)
        out.pointee = try ResultSlot.reserve(for: record, length: len)
        return FL_OK
    }
}

/// Marks the running task as failed with a non-zero `code` of the task's choosing and a
/// message (copied; NULL for none), dropping any result written. Returns `code`, so a task can
/// `return fl_task_fail(ctx, 42, "bad input");` — or FL_EHANDLE if ctx is not the running
/// task's, FL_EINVAL if code is 0.
@_cdecl("fl_task_fail")
public func fl_task_fail(_ ctx: fl_task_ctx?, _ code: CInt, _ message: UnsafePointer<CChar>?) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 {
        return code == 0 ? FL_EINVAL : fls_child_task_fail(UnsafeRawPointer(ctx), code, message)
    }
    return withStatus { () throws(Failure) in
        let record = try TaskRunner.current(ctx)
        guard code != 0 else { throw Failure(FL_EINVAL, "a failure code must not be 0") }
        ResultSlot.fail(record.pointee.slot, status: FL_ETASK, code: code,
                        message: message.map { String(cString: $0) } ?? "task failed")
        return code
    }
}

/// Stores the running task's item index in `*index`: its position in the input of a map,
/// starmap or imap, 0 for apply. Errors: FL_EHANDLE, FL_EINVAL.
@_cdecl("fl_task_index")
public func fl_task_index(_ ctx: fl_task_ctx?, _ index: UnsafeMutablePointer<size_t>?) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 {
        guard let index else { return FL_EINVAL }
        index.pointee = Int(fls_child_task_index(UnsafeRawPointer(ctx)))
        return FL_OK
    }
    return withStatus { () throws(Failure) in
        let out = try Check.required(index, "index")
        out.pointee = Int(try TaskRunner.current(ctx).pointee.index)
        return FL_OK
    }
}

/// Returns 1 if the running task should stop early — its pool has been terminated, or, for a
/// remote task, its result was cancelled with fl_cancel() — 0 if not, or FL_EHANDLE.
@_cdecl("fl_task_cancelled")
public func fl_task_cancelled(_ ctx: fl_task_ctx?) -> CInt {
    if fls_child_ctx_is_current(UnsafeRawPointer(ctx)) != 0 { return fls_child_task_cancelled(UnsafeRawPointer(ctx)) }
    return withStatus { () throws(Failure) in
        let record = try TaskRunner.current(ctx)
        return fls_atomic_load_u32(record.pointee.cancelled) != 0 ? 1 : 0
    }
}

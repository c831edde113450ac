import CForklift

/// Runs `body` on a result the caller may still use: a registered handle not yet released
/// (or inside its callback), or a callback-scoped handle during its callback.
@inline(__always)
private func withResult<T>(_ result: fl_result?, _ body: (ResultView) throws(Failure) -> T) throws(Failure) -> T {
    if let carried = CallbackThread.scopedResult(rawHandle(result)) {
        return try body(carried)
    }
    return try Registry.results.with(result, "result") { box throws(Failure) in
        guard box.isAccessible else { throw Failure(FL_EHANDLE, "result handle was released") }
        return try body(ResultView(box))
    }
}

/// Waits until the result is ready, at most `timeout` seconds (FL_FOREVER: no limit; 0: poll).
/// Called from a task of the same pool, the worker runs other queued tasks while it waits.
/// Returns FL_OK when ready, FL_ETIMEDOUT, FL_EHANDLE or FL_EINVAL (NaN timeout). Thread-safe.
@_cdecl("fl_result_wait")
public func fl_result_wait(_ result: fl_result?, _ timeout: Double) -> CInt {
    withStatus { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        return try withResult(result) { box throws(Failure) in
            guard box.wait(until: deadline) else { throw Failure(FL_ETIMEDOUT, "result not ready before the timeout") }
            return FL_OK
        }
    }
}

/// Returns 1 if the result is ready, 0 if not, or FL_EHANDLE. Never blocks. Thread-safe.
@_cdecl("fl_result_ready")
public func fl_result_ready(_ result: fl_result?) -> CInt {
    withStatus { () throws(Failure) in try withResult(result) { box throws(Failure) in box.isReady ? 1 : 0 } }
}

/// Returns 1 if the ready result succeeded (every item, for maps), 0 if it failed or was
/// cancelled, FL_ESTATE if it is not ready yet (like multiprocessing), or FL_EHANDLE. Thread-safe.
@_cdecl("fl_result_successful")
public func fl_result_successful(_ result: fl_result?) -> CInt {
    withStatus { () throws(Failure) in
        try withResult(result) { box throws(Failure) in
            guard box.isReady else { throw Failure(FL_ESTATE, "result is not ready") }
            return box.overallStatus() == FL_OK ? 1 : 0
        }
    }
}

/// Waits up to `timeout` seconds, then reports the outcome: FL_OK, the task's FL_ETASK
/// (fl_last_error() and fl_result_error() give its code and message) or FL_ECANCELED, or
/// FL_ETIMEDOUT; on a process pool also FL_EWORKER (the worker process died: the code is its
/// exit status or the negated signal, the message names it; a task that exceeded the task
/// timeout has its worker killed: code -SIGKILL, the message says why). For apply, `*data`/`*len` (each may be NULL) receive the result bytes,
/// borrowed until fl_result_release(); for maps they are NULL/0 and the status is that of the
/// first failed item — read items with fl_result_item(). Thread-safe.
@_cdecl("fl_result_get")
public func fl_result_get(_ result: fl_result?, _ timeout: Double, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?,
                          _ len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        data?.pointee = nil
        len?.pointee = 0
        let deadline = try Check.deadline(timeout)
        return try withResult(result) { box throws(Failure) in
            guard box.wait(until: deadline) else { throw Failure(FL_ETIMEDOUT, "result not ready before the timeout") }
            let status = box.overallStatus()
            if status == FL_OK && box.kind == .apply {
                data?.pointee = ResultSlot.data(box.slots)
                len?.pointee = box.slots.pointee.len
            }
            return status
        }
    }
}

/// Stores the number of items in `*count`: 1 for apply, the input count for map and starmap,
/// 0 for strided maps. Errors: FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_result_count")
public func fl_result_count(_ result: fl_result?, _ count: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        let count = try Check.required(count, "count")
        count.pointee = try withResult(result) { box throws(Failure) in box.kind == .strided ? 0 : box.count }
        return FL_OK
    }
}

/// Reads item `index` of a ready result: FL_OK with its bytes in `*data`/`*len` (each may be
/// NULL; borrowed until fl_result_release()), or the item's failure: FL_ETASK, FL_ECANCELED, or
/// on a process pool FL_EWORKER (its worker process died, or was killed for the task timeout). Errors:
/// FL_ESTATE (not ready: wait first), FL_ERANGE (index >= count), FL_EHANDLE. Thread-safe.
@_cdecl("fl_result_item")
public func fl_result_item(_ result: fl_result?, _ index: size_t, _ data: UnsafeMutablePointer<UnsafeRawPointer?>?,
                           _ len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        data?.pointee = nil
        len?.pointee = 0
        return try withResult(result) { box throws(Failure) in
            let slot = try readySlot(box, index)
            let status = ResultSlot.status(slot, item: box.kind == .map ? index : nil)
            if status == FL_OK {
                data?.pointee = ResultSlot.data(slot)
                len?.pointee = slot.pointee.len
            }
            return status
        }
    }
}

/// Describes the failure of a ready result (its first failed item, for maps): `*code` gets the
/// task's own code (FL_ECANCELED for a cancelled task, 0 if nothing failed), `*message` its
/// message ("" if none), borrowed until fl_result_release(). Either pointer may be NULL.
/// Errors: FL_ESTATE (not ready), FL_EHANDLE. Thread-safe.
@_cdecl("fl_result_error")
public func fl_result_error(_ result: fl_result?, _ code: UnsafeMutablePointer<CInt>?,
                            _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CInt {
    withStatus { () throws(Failure) in
        try withResult(result) { box throws(Failure) in
            guard box.isReady else { throw Failure(FL_ESTATE, "result is not ready") }
            describeFailure(box.failedItem >= 0 ? box.slots + box.failedItem : nil, code, message)
            return FL_OK
        }
    }
}

/// Describes the failure of item `index` of a ready result, as fl_result_error() does.
/// Errors: FL_ESTATE, FL_ERANGE, FL_EHANDLE. Thread-safe.
@_cdecl("fl_result_item_error")
public func fl_result_item_error(_ result: fl_result?, _ index: size_t, _ code: UnsafeMutablePointer<CInt>?,
                                 _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CInt {
    withStatus { () throws(Failure) in
        try withResult(result) { box throws(Failure) in
            describeFailure(try readySlot(box, index), code, message)
            return FL_OK
        }
    }
}

/// Releases the caller's reference. The handle is invalid afterwards (FL_EHANDLE), except
/// inside a callback that is still due to receive it. Releasing a pending result does not
/// cancel its task. Errors: FL_EHANDLE (NULL, already released, or a handle that a callback
/// received for a submission that asked for no result handle: the library frees those).
/// Thread-safe.
@_cdecl("fl_result_release")
public func fl_result_release(_ result: fl_result?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.results.with(result, "result") { box throws(Failure) in
            guard box.releaseByCaller() else { throw Failure(FL_EHANDLE, "result handle was already released") }
        }
        return FL_OK
    }
}

private func readySlot(_ box: ResultView, _ index: Int) throws(Failure) -> UnsafeMutablePointer<fls_slot> {
    guard box.isReady else { throw Failure(FL_ESTATE, "result is not ready: wait for it first") }
    let count = box.kind == .strided ? 0 : box.count
    guard index >= 0 && index < count else { throw Failure(FL_ERANGE, "item \(UInt(bitPattern: index)) of a result with \(count) items") }
    return box.slots + index
}

private let emptyMessage: StaticString = ""

private func describeFailure(_ slot: UnsafeMutablePointer<fls_slot>?, _ code: UnsafeMutablePointer<CInt>?,
                             _ message: UnsafeMutablePointer<UnsafePointer<CChar>?>?) {
    let empty = UnsafeRawPointer(emptyMessage.utf8Start).assumingMemoryBound(to: CChar.self)
    guard let slot, slot.pointee.status != FL_OK else {
        code?.pointee = 0
        message?.pointee = empty
        return
    }
    code?.pointee = slot.pointee.code
    message?.pointee = slot.pointee.message.map { UnsafePointer($0) } ?? empty
}

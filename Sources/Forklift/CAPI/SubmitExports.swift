#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Runs `fn(user, arg, arg_len, ctx)` on a worker and waits for it (multiprocessing's apply).
///
/// `arg` is copied. The result is written straight into `out` (zero-copy) when it fits
/// `out_cap` bytes; `*out_len` (if not NULL) receives its length. Pass out NULL to discard the
/// result. Called from a task of the same pool, the calling worker runs other queued tasks
/// while it waits. Errors: FL_EHANDLE, FL_EINVAL (fn NULL, arg NULL with a length, out NULL
/// with a capacity), FL_ESTATE (pool closed), FL_ETASK / FL_ECANCELED (the task's outcome;
/// fl_last_error() gives its message; on a process pool also FL_EWORKER, see
/// fl_result_get()), FL_ERANGE (the result did not fit: `*out_len` is the
/// size needed and the result is dropped). Thread-safe.
@_cdecl("fl_pool_apply")
public func fl_pool_apply(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                          _ arg: UnsafeRawPointer?, _ arg_len: size_t, _ out: UnsafeMutableRawPointer?,
                          _ out_cap: size_t, _ out_len: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        out_len?.pointee = 0
        let fn = try Check.required(fn, "fn")
        try Check.bytes(arg, arg_len, "arg")
        try Check.bytes(out, out_cap, "out")
        let outcome = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.apply(fn, user: user, arg: arg, length: arg_len, output: out, capacity: out_cap)
        }
        out_len?.pointee = outcome.length
        guard outcome.fits else {
            throw Failure(FL_ERANGE, "result of \(outcome.length) bytes does not fit the buffer of \(out_cap) bytes")
        }
        return FL_OK
    }
}

/// Queues `fn(user, arg, arg_len, ctx)` and returns at once (multiprocessing's apply_async).
///
/// `arg` is copied. When the task completes, `callback` (success) or `error_callback` (failure
/// or cancellation) runs on the pool's callback thread with `callback_user`; either may be
/// NULL. `*result` (if `result` is not NULL) receives a handle to wait on and read; release it
/// with fl_result_release(). With result NULL and no callbacks the task is fire-and-forget.
/// On error nothing is queued and no callback runs. Errors: FL_EHANDLE, FL_EINVAL, FL_ESTATE
/// (pool closed or terminated), FL_ENOMEM. Thread-safe.
@_cdecl("fl_pool_apply_async")
public func fl_pool_apply_async(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                                _ arg: UnsafeRawPointer?, _ arg_len: size_t, _ callback: fl_result_cb?,
                                _ error_callback: fl_result_cb?, _ callback_user: UnsafeMutableRawPointer?,
                                _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let fn = try Check.required(fn, "fn")
        try Check.bytes(arg, arg_len, "arg")
        let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.applyAsync(fn, user: user, arg: arg, length: arg_len, callbacks: callbacks, wantsHandle: result != nil)
        }
        result?.pointee = cHandle(handle)
        return FL_OK
    }
}

/// Applies `fn` to each of `count` items of `item_size` bytes at `items` and waits for all
/// (multiprocessing's map); item i is passed as `(items + i * item_size, item_size)`.
///
/// `items` is borrowed for the duration of the call. Items run in chunks of `chunksize` (0: the
/// default, ceil(count / (4 * workers))). `*result` receives a ready result with one item per
/// input in input order (fl_result_item()); its status (fl_result_get()) is that of the first
/// failed item. Release it with fl_result_release(). Errors: FL_EHANDLE, FL_EINVAL (fn or result
/// NULL, items NULL with items to read, an impossible size), FL_ESTATE, FL_ENOMEM; a failed item
/// does not fail the call. Thread-safe.
@_cdecl("fl_pool_map")
public func fl_pool_map(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?, _ items: UnsafeRawPointer?,
                        _ item_size: size_t, _ count: size_t, _ chunksize: size_t,
                        _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    submitMap(pool, fn, user, items, item_size, count, chunksize, .none, result, wait: true, copy: false)
}

/// The asynchronous form of fl_pool_map() (multiprocessing's map_async): returns at once.
///
/// `items` is copied, so it may be freed when the call returns. Callbacks run once, when
/// every item is done: `callback` if all succeeded, else `error_callback`; either may be NULL.
/// `result` may be NULL when callbacks are given. Errors as fl_pool_map(). Thread-safe.
@_cdecl("fl_pool_map_async")
public func fl_pool_map_async(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                              _ items: UnsafeRawPointer?, _ item_size: size_t, _ count: size_t, _ chunksize: size_t,
                              _ callback: fl_result_cb?, _ error_callback: fl_result_cb?,
                              _ callback_user: UnsafeMutableRawPointer?,
                              _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
    return submitMap(pool, fn, user, items, item_size, count, chunksize, callbacks, result, wait: false, copy: true)
}

private func submitMap(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?, _ items: UnsafeRawPointer?,
                       _ itemSize: Int, _ count: Int, _ chunkSize: Int, _ callbacks: Callbacks,
                       _ result: UnsafeMutablePointer<fl_result?>?, wait: Bool, copy: Bool) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let fn = try Check.required(fn, "fn")
        if result == nil && (wait || callbacks.isEmpty) { throw Failure(FL_EINVAL, "result must not be NULL") }
        let total = try Check.product(count, itemSize, "items")
        try Check.bytes(items, total, "items")
        var base = items
        var owned: UnsafeMutableRawPointer?
        if copy && total > 0 {
            guard let block = malloc(total) else { throw Failure(FL_ENOMEM, "no memory to copy \(total) bytes of items") }
            block.copyMemory(from: items!, byteCount: total)
            owned = block
            base = UnsafeRawPointer(block)
        }
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.map(fn, user: user, input: .items(base: base, size: itemSize), count: count, chunkSize: chunkSize,
                         ownedInput: owned, callbacks: callbacks, wait: wait)
        }
        publish(handle, to: result)
        return FL_OK
    }
}

/// Applies `fn` to each of `count` argument blobs and waits for all (multiprocessing's
/// starmap): call i receives `(args[i].data, args[i].len)`, typically a packed struct of
/// several arguments. Blobs may differ in size. `args` and the bytes it points to are borrowed
/// for the duration of the call. Results, chunks and errors as fl_pool_map(). Thread-safe.
@_cdecl("fl_pool_starmap")
public func fl_pool_starmap(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                            _ args: UnsafePointer<fl_blob>?, _ count: size_t, _ chunksize: size_t,
                            _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    submitStarmap(pool, fn, user, args, count, chunksize, .none, result, wait: true)
}

/// The asynchronous form of fl_pool_starmap() (starmap_async). `args` and the blobs' bytes are
/// copied. Callbacks and `result` as fl_pool_map_async(). Thread-safe.
@_cdecl("fl_pool_starmap_async")
public func fl_pool_starmap_async(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                                  _ args: UnsafePointer<fl_blob>?, _ count: size_t, _ chunksize: size_t,
                                  _ callback: fl_result_cb?, _ error_callback: fl_result_cb?,
                                  _ callback_user: UnsafeMutableRawPointer?,
                                  _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
    return submitStarmap(pool, fn, user, args, count, chunksize, callbacks, result, wait: false)
}

private func submitStarmap(_ pool: fl_pool?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                           _ args: UnsafePointer<fl_blob>?, _ count: Int, _ chunkSize: Int, _ callbacks: Callbacks,
                           _ result: UnsafeMutablePointer<fl_result?>?, wait: Bool) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let fn = try Check.required(fn, "fn")
        if result == nil && (wait || callbacks.isEmpty) { throw Failure(FL_EINVAL, "result must not be NULL") }
        let tableSize = try Check.product(count, MemoryLayout<fl_blob>.stride, "args")
        try Check.bytes(args, tableSize, "args")
        var bytes = 0
        for i in 0..<count {
            try Check.bytes(args![i].data, args![i].len, "args[i].data")
            bytes += args![i].len
        }
        var table = args
        var owned: UnsafeMutableRawPointer?
        if !wait && count > 0 {
            // One block: the blob table, then every blob's bytes.
            guard let block = malloc(tableSize + bytes) else { throw Failure(FL_ENOMEM, "no memory to copy the arguments") }
            let copies = block.assumingMemoryBound(to: fl_blob.self)
            var cursor = block + tableSize
            for i in 0..<count {
                let length = args![i].len
                if length > 0 { cursor.copyMemory(from: args![i].data, byteCount: length) }
                copies[i] = fl_blob(data: length > 0 ? UnsafeRawPointer(cursor) : nil, len: length)
                cursor += length
            }
            owned = block
            table = UnsafePointer(copies)
        }
        let blobs = table ?? UnsafePointer(bitPattern: MemoryLayout<fl_blob>.alignment)!
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.map(fn, user: user, input: .blobs(blobs), count: count, chunkSize: chunkSize, ownedInput: owned,
                         callbacks: callbacks, wait: wait)
        }
        publish(handle, to: result)
        return FL_OK
    }
}

/// The fast path for numeric arrays: runs `kernel` over `count` elements in chunks, each call
/// covering a contiguous range, and waits for all. Like TBB's parallel_for and dispatch_apply,
/// the calling thread runs chunks too, so the kernel must not rely on a worker initializer. Element i is read at
/// `in + i * in_stride` and written at `out + i * out_stride`; strides may be negative or zero,
/// and `in` may equal `out` (in place). No per-element allocation or call. `chunksize` 0 means
/// about 64 chunks per worker, at least 4096 elements each. Both arrays are borrowed for the duration of the call.
/// Errors: FL_EHANDLE, FL_EINVAL (kernel NULL), FL_ESTATE, FL_ETASK (a kernel returned
/// non-zero: the failure of the lowest such chunk, with its element range in fl_last_error()),
/// FL_ENOTSUP (a process pool: its workers cannot write the caller's memory). Thread-safe.
@_cdecl("fl_pool_map_strided")
public func fl_pool_map_strided(_ pool: fl_pool?, _ kernel: fl_kernel_fn?, _ user: UnsafeMutableRawPointer?,
                                _ in_: UnsafeRawPointer?, _ in_stride: ptrdiff_t, _ out: UnsafeMutableRawPointer?,
                                _ out_stride: ptrdiff_t, _ count: size_t, _ chunksize: size_t) -> CInt {
    withStatus { () throws(Failure) in
        let kernel = try Check.required(kernel, "kernel")
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.mapStrided(kernel, user: user, input: in_, inputStride: in_stride, output: out,
                                outputStride: out_stride, count: count, chunkSize: chunksize, callbacks: .none, wait: true)
        }
        return try finishSynchronous(handle)
    }
}

/// The asynchronous form of fl_pool_map_strided(): returns at once with `*result`; both arrays
/// stay borrowed until the result is ready. Callbacks as fl_pool_map_async(). Thread-safe.
@_cdecl("fl_pool_map_strided_async")
public func fl_pool_map_strided_async(_ pool: fl_pool?, _ kernel: fl_kernel_fn?, _ user: UnsafeMutableRawPointer?,
                                      _ in_: UnsafeRawPointer?, _ in_stride: ptrdiff_t, _ out: UnsafeMutableRawPointer?,
                                      _ out_stride: ptrdiff_t, _ count: size_t, _ chunksize: size_t,
                                      _ callback: fl_result_cb?, _ error_callback: fl_result_cb?,
                                      _ callback_user: UnsafeMutableRawPointer?,
                                      _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let kernel = try Check.required(kernel, "kernel")
        let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
        if result == nil && callbacks.isEmpty { throw Failure(FL_EINVAL, "result must not be NULL without callbacks") }
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.mapStrided(kernel, user: user, input: in_, inputStride: in_stride, output: out,
                                outputStride: out_stride, count: count, chunkSize: chunksize, callbacks: callbacks,
                                wait: false)
        }
        publish(handle, to: result)
        return FL_OK
    }
}

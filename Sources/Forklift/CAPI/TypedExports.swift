import CForklift

/// Parses and prepares a function signature for typed calls and stores it in `*sig`.
///
/// Syntax: `RET(ARG, ...)`, for example "double(double, double)" for pow or
/// "i64(i32, double, ptr)". Types: void (result only; "(void)" means no arguments), i8 u8 i16
/// u16 i32 u32 i64 u64, char int unsigned long ulong size_t, float double, ptr (any pointer,
/// strings included), and structs passed by value as "{T, T, ...}" (nestable). At most 64
/// arguments, 64 fields per struct and 8 levels of nesting. Variadic functions are rejected.
/// The signature is immutable and may be used from any thread at once.
/// Errors: FL_EINVAL (text or sig NULL; a syntax error, named with its offset in
/// fl_last_error()), FL_ENOMEM. Thread-safe.
@_cdecl("fl_signature_create")
public func fl_signature_create(_ text: UnsafePointer<CChar>?, _ sig: UnsafeMutablePointer<fl_signature?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(sig, "sig")
        out.pointee = nil
        let text = try Check.required(text, "text")
        let signature = try Signature(String(cString: text))
        out.pointee = cHandle(try Registry.signatures.register(signature))
        return FL_OK
    }
}

/// Describes how to lay out a call: `*arg_count` arguments; an argument tuple of `*tuple_size`
/// bytes, whose members are the arguments in order, each at its natural alignment (the layout
/// of a C struct declared with those members); a result of `*result_size` bytes (0 for void).
/// Any pointer may be NULL. Errors: FL_EHANDLE. Thread-safe.
@_cdecl("fl_signature_layout")
public func fl_signature_layout(_ sig: fl_signature?, _ arg_count: UnsafeMutablePointer<size_t>?,
                                _ tuple_size: UnsafeMutablePointer<size_t>?,
                                _ result_size: UnsafeMutablePointer<size_t>?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.signatures.with(sig, "signature") { signature throws(Failure) in
            arg_count?.pointee = signature.argumentCount
            tuple_size?.pointee = signature.tupleSize
            result_size?.pointee = signature.resultSize
        }
        return FL_OK
    }
}

/// Destroys a signature handle. Calls already submitted with it are unaffected. Errors:
/// FL_EHANDLE. Thread-safe; the handle is invalid afterwards.
@_cdecl("fl_signature_destroy")
public func fl_signature_destroy(_ sig: fl_signature?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.signatures.destroy(sig, "signature")
        return FL_OK
    }
}

/// Calls `fn` — any C function matching `sig`, cast to fl_fn — with the arguments in `tuple`
/// (laid out as fl_signature_layout() says; copied) on a worker and waits. The return value is
/// written to `result` (result_size bytes; may be NULL to discard it). This is apply with no
/// wrapper function: `fl_pool_apply_typed(pool, sig, (fl_fn)pow, &args, &out)`. Errors:
/// FL_EHANDLE, FL_EINVAL (fn NULL, tuple NULL with arguments), FL_ESTATE, FL_ECANCELED.
/// Thread-safe.
@_cdecl("fl_pool_apply_typed")
public func fl_pool_apply_typed(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?, _ tuple: UnsafeRawPointer?,
                                _ result: UnsafeMutableRawPointer?) -> CInt {
    withStatus { () throws(Failure) in
        let fn = try Check.required(fn, "fn")
        let signature = try Registry.signatures.with(sig, "signature") { $0 }
        try Check.bytes(tuple, signature.tupleSize, "tuple")
        try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.applyTyped(signature, fn, tuple: tuple, result: result)
        }
        return FL_OK
    }
}

/// The asynchronous form of fl_pool_apply_typed(): `tuple` is copied; the return value is read
/// with fl_result_get() (result_size bytes). Callbacks, `result` and errors as
/// fl_pool_apply_async(). Thread-safe.
@_cdecl("fl_pool_apply_typed_async")
public func fl_pool_apply_typed_async(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?, _ tuple: UnsafeRawPointer?,
                                      _ callback: fl_result_cb?, _ error_callback: fl_result_cb?,
                                      _ callback_user: UnsafeMutableRawPointer?,
                                      _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let fn = try Check.required(fn, "fn")
        let signature = try Registry.signatures.with(sig, "signature") { $0 }
        try Check.bytes(tuple, signature.tupleSize, "tuple")
        let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.applyTypedAsync(signature, fn, tuple: tuple, callbacks: callbacks, wantsHandle: result != nil)
        }
        result?.pointee = cHandle(handle)
        return FL_OK
    }
}

/// Calls `fn(tuples[i])` for each of `count` argument tuples (starmap with no wrapper
/// function) and waits. Tuple i is at `tuples + i * tuple_size`; its return value is written to
/// `results + i * result_size` (results may be NULL for void functions). Both arrays are
/// borrowed for the call. `chunksize` as fl_pool_map(). Errors: FL_EHANDLE, FL_EINVAL,
/// FL_ESTATE, FL_ECANCELED. Thread-safe.
@_cdecl("fl_pool_starmap_typed")
public func fl_pool_starmap_typed(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?, _ tuples: UnsafeRawPointer?,
                                  _ count: size_t, _ results: UnsafeMutableRawPointer?, _ chunksize: size_t) -> CInt {
    submitTypedMap(pool, sig, fn, tuples, count, results, chunksize, .none, nil, wait: true, singleArgument: false)
}

/// As fl_pool_starmap_typed() for a one-argument signature (map): `args` is an array of that
/// argument type. Errors as fl_pool_starmap_typed(), and FL_EINVAL if the signature does not
/// take exactly one argument. Thread-safe.
@_cdecl("fl_pool_map_typed")
public func fl_pool_map_typed(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?, _ args: UnsafeRawPointer?,
                              _ count: size_t, _ results: UnsafeMutableRawPointer?, _ chunksize: size_t) -> CInt {
    submitTypedMap(pool, sig, fn, args, count, results, chunksize, .none, nil, wait: true, singleArgument: true)
}

/// The asynchronous form of fl_pool_starmap_typed(): returns at once. `tuples` and `results`
/// stay borrowed until the result is ready; wait with fl_result_wait() or use the callbacks
/// (as fl_pool_map_async()). `result` may be NULL when callbacks are given. Thread-safe.
@_cdecl("fl_pool_starmap_typed_async")
public func fl_pool_starmap_typed_async(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?,
                                        _ tuples: UnsafeRawPointer?, _ count: size_t,
                                        _ results: UnsafeMutableRawPointer?, _ chunksize: size_t,
                                        _ callback: fl_result_cb?, _ error_callback: fl_result_cb?,
                                        _ callback_user: UnsafeMutableRawPointer?,
                                        _ result: UnsafeMutablePointer<fl_result?>?) -> CInt {
    let callbacks = Callbacks(onResult: callback, onError: error_callback, user: callback_user)
    return submitTypedMap(pool, sig, fn, tuples, count, results, chunksize, callbacks, result, wait: false,
                          singleArgument: false)
}

private func submitTypedMap(_ pool: fl_pool?, _ sig: fl_signature?, _ fn: fl_fn?, _ tuples: UnsafeRawPointer?,
                            _ count: Int, _ results: UnsafeMutableRawPointer?, _ chunkSize: Int,
                            _ callbacks: Callbacks, _ result: UnsafeMutablePointer<fl_result?>?, wait: Bool,
                            singleArgument: Bool) -> CInt {
    withStatus { () throws(Failure) in
        result?.pointee = nil
        let fn = try Check.required(fn, "fn")
        if !wait && result == nil && callbacks.isEmpty { throw Failure(FL_EINVAL, "result must not be NULL without callbacks") }
        let signature = try Registry.signatures.with(sig, "signature") { $0 }
        if singleArgument && signature.argumentCount != 1 {
            throw Failure(FL_EINVAL, "map needs a one-argument signature; this one takes \(signature.argumentCount)")
        }
        let name: StaticString = singleArgument ? "args" : "tuples"  // as the header names it
        try Check.bytes(tuples, try Check.product(count, signature.tupleSize, name), name)
        try Check.bytes(results, try Check.product(count, signature.resultSize, "results"), "results")
        let handle = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            try pool.starmapTyped(signature, fn, tuples: tuples, count: count, results: results, chunkSize: chunkSize,
                                  callbacks: callbacks, wait: wait)
        }
        guard wait else {
            publish(handle, to: result)
            return FL_OK
        }
        return try finishSynchronous(handle)
    }
}

import CForklift

/// Submits a call of `fn` — any C function matching `sig`, cast to fl_fn — as a remote task and
/// stores a reference to its result in `*ref`, at once (a remote call with no wrapper function:
/// `fl_remote_typed(rt, sig, (fl_fn)pow, args, 2, NULL, &ref)`). Argument i is the value of the
/// signature's argument i: a blob of exactly its size (`&x, sizeof x`; copied now), or a
/// reference whose object holds exactly that many bytes — for instance the result of another
/// typed task, which makes a graph of plain C functions. The result object holds the return
/// value (result_size bytes of fl_signature_layout(); empty for void). An object argument of
/// another size fails the task (FL_ETASK, code FL_EINVAL, message naming the argument) without
/// calling `fn`. Options as fl_remote(), isolate included: the call then runs in a worker
/// process. The signature may be destroyed once this returns. Errors: as fl_remote(), and
/// FL_EINVAL for fn NULL, nargs not the signature's argument count, or a blob of another
/// size than its argument; FL_EHANDLE for sig. Thread-safe.
@_cdecl("fl_remote_typed")
public func fl_remote_typed(_ runtime: fl_runtime?, _ sig: fl_signature?, _ fn: fl_fn?, _ args: UnsafePointer<fl_arg>?,
                            _ nargs: size_t, _ options: UnsafePointer<fl_remote_options>?,
                            _ ref: UnsafeMutablePointer<fl_ref?>?) -> CInt {
    withStatus { () throws(Failure) in
        if let ref { ref.pointee = nil }
        let fn = try Check.required(fn, "fn")
        let signature = try Registry.signatures.with(sig, "signature") { $0 }
        let call = TypedCall(signature: signature, fn: fn, results: nil)
        return try submitRemote(runtime, typedRemoteTrampoline, call.user, args, nargs, options, ref, typed: call,
                                userIsTheTasks: false)
    }
}

/// Registers `fn`, a C function matching `sig`, under `name` (as fl_function_register()):
/// fl_remote_named() then submits it as fl_remote_typed() would, and traces show the name.
/// The registration keeps what it needs of `sig`. Registering the same function with the same
/// signature text again is allowed. Errors: FL_EINVAL (name or fn NULL, empty or too long
/// name), FL_EHANDLE (sig), FL_ESTATE (another function, or this one with another signature,
/// has that name). Thread-safe.
@_cdecl("fl_function_register_typed")
public func fl_function_register_typed(_ name: UnsafePointer<CChar>?, _ sig: fl_signature?, _ fn: fl_fn?) -> CInt {
    withStatus { () throws(Failure) in
        let name = String(cString: try Check.required(name, "name"))
        let fn = try Check.required(fn, "fn")
        let signature = try Registry.signatures.with(sig, "signature") { $0 }
        let call = TypedCall(signature: signature, fn: fn, results: nil)
        try FunctionRegistry.register(name, .init(fn: typedRemoteTrampoline, user: call.user, typed: call))
        return FL_OK
    }
}

import CForklift

/// A typed call in flight: the signature, the function, and where results go. Typed operations
/// are blob operations whose task is `typedTrampoline` and whose argument blob is the tuple.
final class TypedCall {
    let signature: Signature
    let fn: fl_fn
    /// Item i's result goes to `results + i * resultSize`; nil: into the task's own result.
    let results: UnsafeMutableRawPointer?

    init(signature: Signature, fn: fl_fn, results: UnsafeMutableRawPointer?) {
        self.signature = signature
        self.fn = fn
        self.results = results
    }

    var user: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

/// The blob task behind every typed call: unpacks nothing (libffi reads the tuple in place),
/// calls the function, and writes the result where the call says.
let typedTrampoline: fl_task_fn = { user, tuple, _, context in
    let call = Unmanaged<TypedCall>.fromOpaque(user!).takeUnretainedValue()
    let record = UnsafeMutablePointer<fls_ctx_record>(context!)
    let size = call.signature.resultSize
    var target: UnsafeMutableRawPointer?
    if let results = call.results {
        target = size > 0 ? results + Int(record.pointee.index) * size : nil
    } else if size > 0 {
        do throws(Failure) {
            target = try ResultSlot.reserve(for: record, length: size)
        } catch {
            return fl_task_fail(context, FL_ENOMEM, error.message)
        }
    }
    call.signature.call(call.fn, tuple: tuple, result: target)
    return 0
}

/// Whether `fn` is `typedTrampoline` (whose `user` is then a `TypedCall`).
func isTypedTrampoline(_ fn: fl_task_fn) -> Bool {
    unsafeBitCast(fn, to: UnsafeRawPointer.self) == unsafeBitCast(typedTrampoline, to: UnsafeRawPointer.self)
}

/// Typed calls on a pool.
extension Pool {
    /// Calls `fn` with the arguments in `tuple` on a worker and waits; the result goes straight
    /// into `result`.
    func applyTyped(_ signature: Signature, _ fn: fl_fn, tuple: UnsafeRawPointer?,
                    result: UnsafeMutableRawPointer?) throws(Failure) {
        let call = TypedCall(signature: signature, fn: fn, results: nil)
        try withExtendedLifetime(call) { () throws(Failure) in
            _ = try apply(typedTrampoline, user: call.user, arg: tuple, length: signature.tupleSize, output: result,
                          capacity: result == nil ? 0 : signature.resultSize)
        }
    }

    /// Queues a typed call; its result is read through the result handle.
    func applyTypedAsync(_ signature: Signature, _ fn: fl_fn, tuple: UnsafeRawPointer?, callbacks: Callbacks,
                         wantsHandle: Bool) throws(Failure) -> UInt64 {
        let call = TypedCall(signature: signature, fn: fn, results: nil)
        return try applyAsync(typedTrampoline, user: call.user, arg: tuple, length: signature.tupleSize,
                              callbacks: callbacks, wantsHandle: wantsHandle, keepAlive: call)
    }

    /// Calls `fn` once per tuple, results into `results` in input order. With `wait`, returns
    /// once all are done.
    func starmapTyped(_ signature: Signature, _ fn: fl_fn, tuples: UnsafeRawPointer?, count: Int,
                      results: UnsafeMutableRawPointer?, chunkSize: Int, callbacks: Callbacks,
                      wait: Bool) throws(Failure) -> UInt64 {
        let call = TypedCall(signature: signature, fn: fn, results: results)
        return try map(typedTrampoline, user: call.user, input: .items(base: tuples, size: signature.tupleSize),
                       count: count, chunkSize: chunkSize, ownedInput: nil, callbacks: callbacks, wait: wait,
                       keepAlive: call)
    }
}

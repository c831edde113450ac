import CForklift

/// The remote function behind every typed task (fl_remote_typed): its `user` is a `TypedCall`
/// (a signature and any C function). Each argument blob holds one argument's value; the
/// function is called through libffi and its return value becomes the task's result. A blob
/// of the wrong size (an object argument, checked only now) fails the task with FL_EINVAL as
/// its code, without calling anything. Worker processes do the same in C (remote_call.c).
let typedRemoteTrampoline: fl_remote_fn = { user, args, count, context in
    let call = Unmanaged<TypedCall>.fromOpaque(user!).takeUnretainedValue()
    let record = UnsafeMutablePointer<fls_ctx_record>(context!)
    let size = call.signature.resultSize
    var result: UnsafeMutableRawPointer?
    if size > 0 {
        do throws(Failure) {
            result = try ResultSlot.reserve(for: record, length: size)
        } catch {
            return fl_task_fail(context, FL_ENOMEM, error.message)
        }
    }
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { error in
        guard fls_sig_call_blobs(call.signature.prepared, call.fn, args, count, result, error.baseAddress!,
                                 error.count) == 0 else {
            return fl_task_fail(context, FL_EINVAL, error.baseAddress)
        }
        return 0
    }
}

/// The C function a remote task calls in the end: a typed task's (`typed`), else `fn` itself.
/// Traces name it and worker processes are sent it.
func calledFunction(_ fn: fl_remote_fn, typed: TypedCall?) -> UnsafeRawPointer {
    unsafeBitCast(typed?.fn, to: UnsafeRawPointer?.self) ?? unsafeBitCast(fn, to: UnsafeRawPointer.self)
}

extension TypedCall {
    /// Checks blob arguments of a typed task at submission: their count and each value's size
    /// (object arguments are checked when the task runs).
    func checkRemoteArguments(_ args: UnsafePointer<fl_arg>?, _ count: Int) throws(Failure) {
        guard count == signature.argumentCount else {
            throw Failure(FL_EINVAL, "\(count) arguments given; the signature \"\(signature.text)\" takes \(signature.argumentCount)")
        }
        for index in 0..<count where args![index].ref == nil {
            let expected = fls_sig_arg_size(signature.prepared, index)
            guard args![index].len == expected else {
                throw Failure(FL_EINVAL, "args[\(index)] holds \(args![index].len) bytes; argument \(index) of \"\(signature.text)\" takes \(expected)")
            }
        }
    }
}

import CForklift

/// Writing requests into, and reading responses out of, the mailbox a worker process shares
/// with its parent (`forklift_worker.h`). Used by process pools and by `fl_process`.
enum Mailbox {
    /// Writes a blob-task request of `kind` (FLS_REQ_TASK or FLS_REQ_TASK_EXIT). Returns the
    /// memfd holding an argument too large for the mailbox (the caller closes it once the
    /// child is done with it), or -1.
    static func writeTask(_ worker: UnsafeMutablePointer<fls_worker>, kind: Int32, fn: fl_task_fn,
                          user: UnsafeMutableRawPointer?, index: UInt64, arg: UnsafeRawPointer?,
                          length: Int) throws(Failure) -> Int32 {
        let mailbox = worker.pointee.mailbox!
        mailbox.pointee.kind = UInt32(kind)
        mailbox.pointee.fn = fn
        mailbox.pointee.user = user
        mailbox.pointee.index = index
        return try stageArgument(worker, length: length) { target in
            if length > 0 { target.copyMemory(from: arg!, byteCount: length) }
        }
    }

    /// Puts `length` bytes of argument where the child reads them: written by `fill` into the
    /// mailbox's argument area, or, when larger than the area, into a new memfd (returned;
    /// -1 otherwise). Sets `arg_len` and `arg_fd`.
    static func stageArgument(_ worker: UnsafeMutablePointer<fls_worker>, length: Int,
                              fill: (UnsafeMutableRawPointer) -> Void) throws(Failure) -> Int32 {
        let mailbox = worker.pointee.mailbox!
        mailbox.pointee.arg_len = UInt64(length)
        mailbox.pointee.arg_fd = -1
        if length <= ProcessSettings.mailboxCapacity {
            fill(fls_worker_arg_area(worker))
            return -1
        }
        let staging = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 16)
        defer { staging.deallocate() }
        fill(staging)
        let fd = fls_memfd_with(staging, length, "forklift-argument")
        guard fd >= 0 else { throw Failure(FL_ENOMEM, "no shared memory for an argument of \(length) bytes") }
        mailbox.pointee.arg_fd = fd
        return fd
    }

    /// The failure message of the response.
    static func message(_ worker: UnsafeMutablePointer<fls_worker>) -> String {
        withUnsafeBytes(of: &worker.pointee.mailbox.pointee.message) {
            String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
        }
    }
}

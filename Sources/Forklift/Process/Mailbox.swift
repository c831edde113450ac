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
        mailbox.pointee.name_len = 0
        return try stageArgument(worker, length: length) { target in
            if length > 0 { target.copyMemory(from: arg!, byteCount: length) }
        }
    }

    /// Writes a blob-task request (FLS_REQ_TASK_EXIT) for a child that does not share this
    /// address space: `fn` travels as the object file and symbol that name it. Returns the
    /// side memfd, as `writeTask`.
    static func writeNamedTask(_ worker: UnsafeMutablePointer<fls_worker>, fn: fl_task_fn,
                               user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?,
                               length: Int) throws(Failure) -> Int32 {
        guard user == nil else {
            throw Failure(FL_EINVAL, "user must be NULL with the spawn and forkserver start methods: the new "
                + "process does not share this address space (pass data in the argument)")
        }
        var path = [CChar](repeating: 0, count: 4096)
        var symbol = [CChar](repeating: 0, count: 1024)
        guard fls_function_name(unsafeBitCast(fn, to: UnsafeRawPointer.self), &path, path.count, &symbol,
                                symbol.count) == 0 else {
            throw Failure(FL_EINVAL, "the function has no exported name for a new process to find: make it a "
                + "non-static function of a shared library or of a program linked with -rdynamic")
        }
        let names = Array(path.prefix { $0 != 0 }) + [0] + Array(symbol.prefix { $0 != 0 }) + [0]
        let skip = (names.count + 15) & ~15
        let mailbox = worker.pointee.mailbox!
        mailbox.pointee.kind = UInt32(FLS_REQ_TASK_EXIT)
        mailbox.pointee.fn = fn
        mailbox.pointee.user = nil
        mailbox.pointee.index = 0
        mailbox.pointee.name_len = UInt32(names.count)
        return try stageArgument(worker, length: skip + length) { target in
            names.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: names.count) }
            if length > 0 { (target + skip).copyMemory(from: arg!, byteCount: length) }
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

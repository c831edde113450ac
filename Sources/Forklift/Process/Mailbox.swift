#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Writing requests into, and reading responses out of, the slots of the mailbox a worker
/// process shares with its parent (`forklift_worker.h`). Used by process pools and by
/// `fl_process`. Requests are written into a slot; the caller assigns the slot to a request
/// number (`fls_worker_assign`) before publishing it.
enum Mailbox {
    /// Writes a blob-task request of `kind` (FLS_REQ_TASK or FLS_REQ_TASK_EXIT). Returns the
    /// memfd holding an argument too large for the slot's area (the caller closes or keeps it
    /// once the child is done with it), or nil; `kept` as in `stageArgument`.
    static func writeTask(_ worker: UnsafeMutablePointer<fls_worker>, slot: UInt32, kind: Int32, fn: fl_task_fn,
                          user: UnsafeMutableRawPointer?, index: UInt64, arg: UnsafeRawPointer?,
                          length: Int, reusing kept: inout ArgumentFile?) throws(Failure) -> ArgumentFile? {
        let request = fls_worker_request(worker, slot)!
        request.pointee.kind = UInt32(kind)
        request.pointee.fn = fn
        request.pointee.user = user
        request.pointee.index = index
        request.pointee.name_len = 0
        return try stageArgument(worker, slot: slot, head: nil, dataOffset: 0, data: arg, length: length, reusing: &kept)
    }

    /// Writes a blob-task request (FLS_REQ_TASK_EXIT) for a child that does not share this
    /// address space: `fn` travels as the object file and symbol that name it. Returns the
    /// side memfd, as `writeTask`.
    static func writeNamedTask(_ worker: UnsafeMutablePointer<fls_worker>, slot: UInt32, fn: fl_task_fn,
                               user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?,
                               length: Int) throws(Failure) -> ArgumentFile? {
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
        let request = fls_worker_request(worker, slot)!
        request.pointee.kind = UInt32(FLS_REQ_TASK_EXIT)
        request.pointee.fn = fn
        request.pointee.user = nil
        request.pointee.index = 0
        request.pointee.name_len = UInt32(names.count)
        var none: ArgumentFile?
        let staged = names.withUnsafeBytes { head in
            Result { () throws(Failure) -> ArgumentFile? in
                try stageArgument(worker, slot: slot, head: head, dataOffset: skip, data: arg, length: length,
                                  reusing: &none)
            }
        }
        return try staged.get()
    }

    /// Puts an argument where the child reads it: `head` (if any) at its start, then `length`
    /// bytes of `data` at `dataOffset` (at least the head's length). Copied into the slot's
    /// argument area when it fits; else written by the kernel into a memfd straight from where
    /// the bytes are (a large argument is copied once, not first into a fresh staging buffer,
    /// whose page faults cost more than the copy), which is returned (nil otherwise). The memfd
    /// is `kept`, taken from there, when there is one and the argument is at most
    /// `ArgumentFile.keptLimit` bytes (if writing into it fails, it is closed), else a new
    /// one. Sets `arg_len` and `arg_fd`.
    static func stageArgument(_ worker: UnsafeMutablePointer<fls_worker>, slot: UInt32, head: UnsafeRawBufferPointer?,
                              dataOffset: Int, data: UnsafeRawPointer?, length: Int,
                              reusing kept: inout ArgumentFile?) throws(Failure) -> ArgumentFile? {
        let request = fls_worker_request(worker, slot)!
        let total = dataOffset + length
        request.pointee.arg_len = UInt64(total)
        request.pointee.arg_fd = -1
        if total <= Int(worker.pointee.mailbox.pointee.capacity) {
            let area = fls_worker_arg_area(worker, slot)!
            if let head, head.count > 0 { area.copyMemory(from: head.baseAddress!, byteCount: head.count) }
            if length > 0 { (area + dataOffset).copyMemory(from: data!, byteCount: length) }
            return nil
        }
        var file: ArgumentFile?
        if let reused = kept, total <= ArgumentFile.keptLimit {
            kept = nil
            if fls_memfd_write_head(reused.descriptor, reused.size, head?.baseAddress, head?.count ?? 0, dataOffset,
                                    length > 0 ? data : nil, length) == 0 {
                file = ArgumentFile(descriptor: reused.descriptor, size: max(reused.size, total))
            } else {
                reused.close()  // a new file may still succeed (the kept one could not grow)
            }
        }
        if file == nil {
            let fd = fls_memfd_with_head(head?.baseAddress, head?.count ?? 0, dataOffset, length > 0 ? data : nil,
                                         length, "forklift-argument")
            guard fd >= 0 else { throw Failure(FL_ENOMEM, "no shared memory for an argument of \(total) bytes") }
            file = ArgumentFile(descriptor: fd, size: total)
        }
        request.pointee.arg_fd = file!.descriptor
        return file
    }

    /// The failure message of a response.
    static func message(_ request: UnsafeMutablePointer<fls_request>) -> String {
        withUnsafeBytes(of: &request.pointee.message) {
            String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
        }
    }
}

import CForklift

/// Runs one blob-convention task on the calling thread with a live `fl_task_ctx`, and leaves
/// its outcome in a slot.
enum TaskRunner {
    /// Calls `fn` and records the outcome in `slot` (which must be pending and empty).
    /// - Parameters:
    ///   - external: a caller's buffer that receives the result without a copy, or nil.
    ///   - cancelled: the pool's termination flag, readable through `fl_task_cancelled`.
    @inline(__always)
    static func run(_ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?, length: Int,
                    slot: UnsafeMutablePointer<fls_slot>, external: UnsafeMutableRawPointer? = nil,
                    externalCapacity: Int = 0, index: UInt64, cancelled: UnsafePointer<UInt32>) {
        let thread = fls_tls_state()!
        if let process = thread.pointee.worker_process {
            // A process pool's worker thread: the task runs in its worker process.
            _ = Unmanaged<WorkerProcess>.fromOpaque(process)._withUnsafeGuaranteedRef {
                $0.run(fn, user: user, arg: arg, length: length, slot: slot, external: external,
                       externalCapacity: externalCapacity, index: index)
            }
            return
        }
        var record = fls_ctx_record(slot: slot, external: external, external_cap: externalCapacity,
                                   index: index, cancelled: cancelled)
        let returned: Int32 = withUnsafeMutablePointer(to: &record) { context in
            let outer = thread.pointee.task_ctx
            thread.pointee.task_ctx = UnsafeMutableRawPointer(context)
            defer { thread.pointee.task_ctx = outer }
            return fn(user, arg, length, OpaquePointer(context))
        }
        if slot.pointee.status == FLS_SLOT_PENDING {
            if returned == 0 {
                slot.pointee.status = FL_OK
            } else {
                ResultSlot.fail(slot, status: FL_ETASK, code: returned, message: "task returned \(returned)")
            }
        }
    }

    /// The context record of the task running on this thread, if `context` is it.
    /// Any other value (NULL, stale, a context of another thread) is rejected unread.
    @inline(__always)
    static func current(_ context: OpaquePointer?) throws(Failure) -> UnsafeMutablePointer<fls_ctx_record> {
        guard let context, let active = fls_tls_task_ctx(), UnsafeMutableRawPointer(context) == active else {
            throw Failure(FL_EHANDLE, "task context is not that of the task running on this thread")
        }
        return active.assumingMemoryBound(to: fls_ctx_record.self)
    }
}

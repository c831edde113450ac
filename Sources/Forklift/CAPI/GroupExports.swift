import CForklift

/// Creates a task group on `pool` and stores it in `*group`. Errors: FL_EHANDLE, FL_EINVAL
/// (group NULL), FL_ESTATE (pool not running), FL_ENOMEM. Thread-safe.
@_cdecl("fl_group_create")
public func fl_group_create(_ pool: fl_pool?, _ group: UnsafeMutablePointer<fl_group?>?) -> CInt {
    withStatus { () throws(Failure) in
        let out = try Check.required(group, "group")
        out.pointee = nil
        let created = try Registry.pools.with(pool, "pool") { pool throws(Failure) in
            guard !pool.isWindingDown && !pool.isCancelled else { throw Failure(FL_ESTATE, "pool is not running") }
            return TaskGroup(pool: pool)
        }
        out.pointee = cHandle(try Registry.groups.register(created))
        return FL_OK
    }
}

/// Queues `fn(user, arg, arg_len, ctx)` as a task of the group and returns at once; `arg` is
/// copied. The task's result, if any, is discarded; a failure is kept for fl_group_wait().
/// This is the lightest way to run a task: no result handle, no callback. Errors: FL_EHANDLE,
/// FL_EINVAL (fn NULL, arg NULL with a length), FL_ESTATE (pool closed), FL_ENOMEM. On error
/// nothing is queued. Thread-safe; tasks may submit to their own group.
@_cdecl("fl_group_submit")
public func fl_group_submit(_ group: fl_group?, _ fn: fl_task_fn?, _ user: UnsafeMutableRawPointer?,
                            _ arg: UnsafeRawPointer?, _ arg_len: size_t) -> CInt {
    withStatus { () throws(Failure) in
        let fn = try Check.required(fn, "fn")
        try Check.bytes(arg, arg_len, "arg")
        try Registry.groups.with(group, "group") { group throws(Failure) in
            try group.submit(fn, user: user, arg: arg, length: arg_len)
        }
        return FL_OK
    }
}

/// Waits until every task submitted to the group so far has completed, at most `timeout`
/// seconds. Returns FL_OK; FL_ETASK or FL_ECANCELED if a task failed or was cancelled since
/// the previous wait (fl_last_error() counts them and gives the first failure's message);
/// FL_ETIMEDOUT; FL_EHANDLE. A worker of the same pool runs queued tasks while it waits.
/// Thread-safe.
@_cdecl("fl_group_wait")
public func fl_group_wait(_ group: fl_group?, _ timeout: Double) -> CInt {
    withStatus { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.groups.with(group, "group") { group throws(Failure) in try group.wait(until: deadline) }
        return FL_OK
    }
}

/// Waits for the group's tasks (as fl_group_wait() with no limit, ignoring their failures) and
/// destroys it. Errors: FL_EHANDLE. The handle is invalid afterwards.
@_cdecl("fl_group_destroy")
public func fl_group_destroy(_ group: fl_group?) -> CInt {
    withStatus { () throws(Failure) in
        try Registry.groups.destroy(group, "group") { group throws(Failure) in try? group.wait(until: .forever) }
        return FL_OK
    }
}

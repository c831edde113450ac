import CForklift

/// Creates a connected pair of pipe ends and stores them in `*first` and `*second`
/// (multiprocessing.Pipe). With `duplex` non-zero both ends send and receive; otherwise
/// `first` only receives and `second` only sends. Messages are byte blobs of any size, each
/// delivered whole and in order; large ones (above 64 KiB) travel in shared memory passed
/// along with the message. Processes started afterwards with the fork start method inherit
/// both ends (each process should close the ends it does not use, so that the peer sees the
/// end of the stream). A pipe has no name to open it by: a spawn or forkserver child, which
/// inherits no handles, talks to its parent through a queue (fl_queue_name) instead.
/// Errors: FL_EINVAL (NULL pointers), FL_ESYSTEM. Thread-safe.
@_cdecl("fl_pipe_create")
public func fl_pipe_create(_ duplex: CInt, _ first: UnsafeMutablePointer<fl_pipe?>?,
                           _ second: UnsafeMutablePointer<fl_pipe?>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let a = try Check.required(first, "first")
        let b = try Check.required(second, "second")
        a.pointee = nil
        b.pointee = nil
        let (one, two) = try PipeEnd.pair(duplex: duplex != 0)
        let handleOne = try Registry.pipes.register(one)
        do throws(Failure) {
            b.pointee = cHandle(try Registry.pipes.register(two))
        } catch {
            try? Registry.pipes.destroy(cHandle(handleOne), "pipe")
            throw error
        }
        a.pointee = cHandle(handleOne)
        return FL_OK
    }
}

/// Sends a copy of `data` (`len` bytes) as one message, waiting at most `timeout` seconds
/// while the pipe is full (FL_FOREVER: no limit). Concurrent senders, in any processes, never
/// interleave. Errors: FL_ETIMEDOUT, FL_ESTATE (a receive-only end, or the other end is
/// closed in every process), FL_ENOMEM, FL_EHANDLE, FL_EINVAL. Thread-safe and process-safe.
@_cdecl("fl_pipe_send")
public func fl_pipe_send(_ pipe: fl_pipe?, _ data: UnsafeRawPointer?, _ len: size_t, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Check.bytes(data, len, "data")
        let deadline = try Check.deadline(timeout)
        try Registry.pipes.with(pipe, "pipe") { end throws(Failure) in try end.send(data, len, until: deadline) }
        return FL_OK
    }
}

/// Receives the next message into `buffer` (`capacity` bytes) and its length into `*len`,
/// waiting at most `timeout` seconds for one. Errors: FL_ETIMEDOUT, FL_ERANGE (buffer too
/// small: `*len` is the size needed and the message stays; a NULL buffer and 0 ask the size),
/// FL_EDONE (the other end is closed in every process and no message is left), FL_ESTATE (a
/// send-only end), FL_EHANDLE, FL_EINVAL. Thread-safe; two processes must not receive from the
/// same end at once.
@_cdecl("fl_pipe_recv")
public func fl_pipe_recv(_ pipe: fl_pipe?, _ buffer: UnsafeMutableRawPointer?, _ capacity: size_t,
                         _ len: UnsafeMutablePointer<size_t>?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(len, "len")
        try Check.bytes(buffer, capacity, "buffer")
        let deadline = try Check.deadline(timeout)
        var length = 0
        defer { out.pointee = length }
        try Registry.pipes.with(pipe, "pipe") { end throws(Failure) in
            try end.receive(into: buffer, capacity: capacity, length: &length, until: deadline)
        }
        return FL_OK
    }
}

/// Waits at most `timeout` seconds (0: do not wait) until fl_pipe_recv() would not block: a
/// message is there, or the other end is closed. Returns FL_OK then, else FL_ETIMEDOUT.
/// Errors: FL_ESTATE (a send-only end), FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_pipe_poll")
public func fl_pipe_poll(_ pipe: fl_pipe?, _ timeout: Double) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let deadline = try Check.deadline(timeout)
        try Registry.pipes.with(pipe, "pipe") { end throws(Failure) in try end.poll(until: deadline) }
        return FL_OK
    }
}

/// Stores the end's file descriptor in `*fd`, to wait for messages with poll/epoll or an
/// event loop (readable: fl_pipe_recv() will not block). The descriptor stays owned by the
/// pipe: do not read, write or close it. Errors: FL_EHANDLE, FL_EINVAL. Thread-safe.
@_cdecl("fl_pipe_fd")
public func fl_pipe_fd(_ pipe: fl_pipe?, _ fd: UnsafeMutablePointer<CInt>?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        let out = try Check.required(fd, "fd")
        out.pointee = try Registry.pipes.with(pipe, "pipe") { $0.fd }
        return FL_OK
    }
}

/// Closes this process's copy of the end and frees the handle. Once every process has closed
/// its copies, the other end's receiver gets FL_EDONE after the last message, and its sender
/// FL_ESTATE. No thread of this process may be using the end. Errors: FL_EHANDLE.
@_cdecl("fl_pipe_close")
public func fl_pipe_close(_ pipe: fl_pipe?) -> CInt {
    withStatusAnywhere { () throws(Failure) in
        try Registry.pipes.destroy(pipe, "pipe")
        return FL_OK
    }
}

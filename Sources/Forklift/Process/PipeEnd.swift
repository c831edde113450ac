#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// One end of a message pipe (`fl_pipe`, multiprocessing's Connection): a Unix
/// sequenced-packet socket, so every message arrives whole and concurrent senders never
/// interleave. Messages above `FLS_PIPE_INLINE` bytes travel as a memfd passed along with the
/// message, so the socket buffer never limits their size. Processes forked after its creation
/// inherit the end.
final class PipeEnd {
    let fd: Int32
    let canSend: Bool
    let canReceive: Bool
    /// Receiving peeks the size, then takes the message: one reader at a time per process.
    private let receiveLock = Lock()

    init(fd: Int32, canSend: Bool, canReceive: Bool) {
        self.fd = fd
        self.canSend = canSend
        self.canReceive = canReceive
    }

    deinit { close(fd) }

    /// Two connected ends: both ways when `duplex`, else the first receives and the second sends.
    static func pair(duplex: Bool) throws(Failure) -> (PipeEnd, PipeEnd) {
        var fds: [Int32] = [-1, -1]
        let error = fls_pipe_create(&fds)
        guard error == 0 else { throw Failure(FL_ESYSTEM, "could not create a pipe (errno \(error))") }
        if !duplex {
            shutdown(fds[0], Int32(SHUT_WR))
            shutdown(fds[1], Int32(SHUT_RD))
        }
        return (PipeEnd(fd: fds[0], canSend: duplex, canReceive: true),
                PipeEnd(fd: fds[1], canSend: true, canReceive: duplex))
    }

    func send(_ data: UnsafeRawPointer?, _ length: Int, until deadline: Deadline) throws(Failure) {
        guard canSend else { throw Failure(FL_ESTATE, "this end of the pipe only receives") }
        switch fls_pipe_send(fd, data, length, deadline.instant ?? -1) {
        case FL_OK: return
        case FL_ETIMEDOUT: throw Failure(FL_ETIMEDOUT, "pipe still full at the deadline")
        case FL_ESTATE: throw Failure(FL_ESTATE, "the other end of the pipe is closed")
        case FL_ENOMEM: throw Failure(FL_ENOMEM, "no shared memory for a message of \(length) bytes")
        default: throw Failure(FL_ESYSTEM, "could not send on the pipe (errno \(errno))")
        }
    }

    func receive(into buffer: UnsafeMutableRawPointer?, capacity: Int, length: inout Int,
                 until deadline: Deadline) throws(Failure) {
        guard canReceive else { throw Failure(FL_ESTATE, "this end of the pipe only sends") }
        receiveLock.lock()
        defer { receiveLock.unlock() }
        switch fls_pipe_recv(fd, buffer, capacity, &length, deadline.instant ?? -1) {
        case FL_OK: return
        case FL_ERANGE:
            throw Failure(FL_ERANGE, "the next message has \(length) bytes, the buffer \(capacity); it stays in the pipe")
        case FL_EDONE: throw Failure(FL_EDONE, "the other end of the pipe is closed and no message is left")
        case FL_ETIMEDOUT: throw Failure(FL_ETIMEDOUT, "no message at the deadline")
        case FL_ENOMEM: throw Failure(FL_ENOMEM, "could not map a \(length)-byte message")
        default: throw Failure(FL_ESYSTEM, "could not receive from the pipe (errno \(errno))")
        }
    }

    func poll(until deadline: Deadline) throws(Failure) {
        guard canReceive else { throw Failure(FL_ESTATE, "this end of the pipe only sends") }
        guard fls_pipe_poll(fd, deadline.instant ?? -1) == FL_OK else {
            throw Failure(FL_ETIMEDOUT, "no message at the deadline")
        }
    }
}

import CForklift

/// A bounded queue of byte messages in shared memory (`fl_queue`): a ring buffer behind a
/// robust, process-shared mutex, in a memfd, with large messages out of line in the same memfd
/// (see `ipc.c`). Processes forked after its
/// creation share it through the same handle; others open it by `name`. Each process unmaps
/// its own mapping.
final class SharedQueue {
    let queue: OpaquePointer
    private let fd: Int32
    /// What another process passes to fl_queue_open.
    let name: String

    init(capacity: Int, maxItems: Int) throws(Failure) {
        var error: Int32 = 0
        var fd: Int32 = -1
        guard let queue = fls_queue_create(capacity, maxItems, &fd, &error) else {
            throw Failure(FL_ENOMEM, "could not map a queue of \(capacity) bytes (errno \(error))")
        }
        self.queue = queue
        self.fd = fd
        name = SharedObjectName.of(fd: fd)
    }

    init(open name: String) throws(Failure) {
        var error: Int32 = 0
        var fd: Int32 = -1
        guard let queue = name.withCString({ fls_queue_open($0, &fd, &error) }) else {
            throw SharedObjectName.openFailure(error, name, "queue")
        }
        self.queue = queue
        self.fd = fd
        self.name = SharedObjectName.of(fd: fd)
    }

    deinit { fls_queue_unmap(queue, fd) }

    /// The largest message the queue accepts.
    var maxMessage: Int { fls_queue_max_message(queue) }

    func put(_ data: UnsafeRawPointer?, _ length: Int, until deadline: Deadline) throws(Failure) {
        switch fls_queue_put(queue, fd, data, length, deadline.instant ?? -1) {
        case FL_OK: return
        case FL_ERANGE:
            throw Failure(FL_ERANGE, "message of \(length) bytes is larger than the queue's limit of \(maxMessage)")
        case FL_ENOMEM: throw Failure(FL_ENOMEM, "no shared memory for a message of \(length) bytes")
        case FL_ESTATE: throw Failure(FL_ESTATE, "queue is closed")
        default: throw Failure(FL_ETIMEDOUT, "queue still full at the deadline")
        }
    }

    func get(into buffer: UnsafeMutableRawPointer?, capacity: Int, length: inout Int,
             until deadline: Deadline) throws(Failure) {
        switch fls_queue_get(queue, fd, buffer, capacity, &length, deadline.instant ?? -1) {
        case FL_OK: return
        case FL_ENOMEM: throw Failure(FL_ENOMEM, "could not map the next message (\(length) bytes); it is lost")
        case FL_ERANGE:
            throw Failure(FL_ERANGE, "the next message has \(length) bytes, the buffer \(capacity); it stays queued")
        case FL_EDONE: throw Failure(FL_EDONE, "queue is closed and empty")
        default: throw Failure(FL_ETIMEDOUT, "queue still empty at the deadline")
        }
    }
}

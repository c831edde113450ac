import CForklift

/// A process-shared lock, recursive lock, event or semaphore (`fl_lock`, `fl_event`,
/// `fl_semaphore`), in a memfd (see `forklift_sync.h`). Processes forked after its creation
/// share it through the same handle; others open it by `name`.
final class SharedSync {
    let sync: OpaquePointer
    private let fd: Int32
    /// What another process passes to the matching fl_*_open.
    let name: String

    init(kind: Int32, value: Int64 = 0, max: Int64 = 0) throws(Failure) {
        var error: Int32 = 0
        var fd: Int32 = -1
        guard let sync = fls_sync_create(UInt32(kind), value, max, &fd, &error) else {
            throw Failure(FL_ENOMEM, "could not create shared memory for a synchronization object (errno \(error))")
        }
        self.sync = sync
        self.fd = fd
        name = SharedObjectName.of(fd: fd)
    }

    /// Opens the object named `name`, which must be of one of `kinds`; `what` names it in errors.
    init(open name: String, kinds: [Int32], what: String) throws(Failure) {
        var error: Int32 = 0
        var fd: Int32 = -1
        let mask = kinds.reduce(UInt32(0)) { $0 | 1 << UInt32($1) }
        guard let object = name.withCString({ fls_shared_open($0, mask, &fd, &error) }) else {
            throw SharedObjectName.openFailure(error, name, what)
        }
        sync = OpaquePointer(object)
        self.fd = fd
        self.name = SharedObjectName.of(fd: fd)
    }

    deinit { fls_shared_close(UnsafeMutableRawPointer(sync), fd) }

    var kind: Int32 { Int32(fls_sync_kind(sync)) }

    func acquireLock(until deadline: Deadline) throws(Failure) {
        switch fls_lock_acquire(sync, deadline.instant ?? -1) {
        case FL_OK: return
        case FL_ETIMEDOUT: throw Failure(FL_ETIMEDOUT, "lock still held by another thread at the deadline")
        case FL_ESTATE: throw Failure(FL_ESTATE, "lock is already held by this thread (use a recursive lock)")
        default: throw Failure(FL_ESYSTEM, "could not take the lock")
        }
    }

    func releaseLock() throws(Failure) {
        guard fls_lock_release(sync) == FL_OK else {
            throw Failure(FL_ESTATE, "lock is not held by the calling thread")
        }
    }

    func waitEvent(until deadline: Deadline) throws(Failure) {
        guard fls_event_wait(sync, deadline.instant ?? -1) == FL_OK else {
            throw Failure(FL_ETIMEDOUT, "event still not set at the deadline")
        }
    }

    func acquireSemaphore(until deadline: Deadline) throws(Failure) {
        guard fls_semaphore_acquire(sync, deadline.instant ?? -1) == FL_OK else {
            throw Failure(FL_ETIMEDOUT, "semaphore still zero at the deadline")
        }
    }

    func releaseSemaphore() throws(Failure) {
        guard fls_semaphore_release(sync) == FL_OK else {
            throw Failure(FL_ERANGE, "semaphore is at its maximum value (its bound, or 4294967295 without one)")
        }
    }
}

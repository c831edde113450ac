#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Names of process-shared objects (queues, locks, events, semaphores) for processes that did
/// not inherit them: "memfd:PID:FD", the memfd of a process that has the object open, mapped
/// by another process of the same user through /proc/PID/fd.
enum SharedObjectName {
    /// The name of the memfd `fd` of this process.
    static func of(fd: Int32) -> String { "memfd:\(getpid()):\(fd)" }

    /// The failure of opening `name` as a `what` (errno `error` from fls_shared_open).
    static func openFailure(_ error: Int32, _ name: String, _ what: String) -> Failure {
        switch error {
        case EINVAL: return Failure(FL_EINVAL, "\"\(name)\" is not a name from fl_\(what)_name()")
        case ENOENT, ESRCH: return Failure(FL_EINVAL, "no \(what) named \"\(name)\" (has the process that made it ended?)")
        case EPROTOTYPE: return Failure(FL_EINVAL, "\"\(name)\" is not \(withArticle(what))")
        case EACCES, EPERM: return Failure(FL_ESYSTEM, "no permission to open \(what) \"\(name)\"")
        default: return Failure(FL_ESYSTEM, "could not open \(what) \"\(name)\" (errno \(error))")
        }
    }

    /// Copies `name` NUL-terminated into `buffer` of `capacity` bytes.
    static func copy(_ name: String, to buffer: UnsafeMutablePointer<CChar>, capacity: Int) throws(Failure) {
        let bytes = Array(name.utf8)
        guard bytes.count < capacity else { throw Failure(FL_ERANGE, "the name needs \(bytes.count + 1) bytes") }
        for (i, byte) in bytes.enumerated() { buffer[i] = CChar(bitPattern: byte) }
        buffer[bytes.count] = 0
    }
}

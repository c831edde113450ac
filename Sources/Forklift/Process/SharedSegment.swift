#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A shared-memory segment mapped into this process (`fl_shm`): anonymous (a memfd, gone when
/// the last process unmaps it) or named (a POSIX shared-memory object, gone after
/// fl_shm_unlink and the last unmap).
final class SharedSegment {
    private var segment: fls_segment
    /// The name another process passes to fl_shm_open: the POSIX name, or "memfd:PID:FD".
    let name: String

    init(create name: String?, size: Int) throws(Failure) {
        if let name, name.hasPrefix("memfd:") {
            // fl_shm_open would read it as an anonymous segment's token.
            throw Failure(FL_EINVAL, "\"\(name)\" is not a valid shared-memory name (\"memfd:\" begins anonymous segments' tokens)")
        }
        var mapped = fls_segment()
        let error = name.map { text in text.withCString { fls_segment_create($0, size, &mapped) } }
            ?? fls_segment_create(nil, size, &mapped)
        guard error == 0 else { throw Self.failure(error, name ?? "anonymous segment", creating: true) }
        segment = mapped
        self.name = name ?? "memfd:\(getpid()):\(mapped.fd)"
    }

    init(open name: String) throws(Failure) {
        var mapped = fls_segment()
        let error = name.withCString { fls_segment_open($0, &mapped) }
        guard error == 0 else { throw Self.failure(error, name, creating: false) }
        segment = mapped
        self.name = mapped.named != 0 ? name : "memfd:\(getpid()):\(mapped.fd)"
    }

    deinit { fls_segment_close(&segment) }

    var data: UnsafeMutableRawPointer? { segment.data }
    var size: Int { segment.size }

    private static func failure(_ error: Int32, _ name: String, creating: Bool) -> Failure {
        switch error {
        case EEXIST: return Failure(FL_ESTATE, "shared memory \"\(name)\" already exists")
        case ENOENT: return Failure(FL_EINVAL, "no shared memory named \"\(name)\"")
        case EINVAL, ENAMETOOLONG: return Failure(FL_EINVAL, "\"\(name)\" is not a valid shared-memory name")
        case EPROTOTYPE: return Failure(FL_EINVAL, "\"\(name)\" names a descriptor that is not a shared-memory segment")
        case EACCES, EPERM: return Failure(FL_ESYSTEM, "no permission for shared memory \"\(name)\"")
        case ENOMEM, ENOSPC, EFBIG: return Failure(FL_ENOMEM, "no memory for shared memory \"\(name)\"")
        default:
            return Failure(FL_ESYSTEM, "could not \(creating ? "create" : "open") shared memory \"\(name)\" (errno \(error))")
        }
    }
}

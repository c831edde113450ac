import CForklift

/// A failure on its way out through the C ABI: a status code and the detail message that
/// `fl_last_error()` will report on the calling thread.
struct Failure: Error {
    /// One of the negative `FL_E*` codes.
    let code: Int32
    /// What went wrong, in words a C programmer can act on.
    let message: String

    init(_ code: Int32, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// The status codes and their names.
enum Status {
    /// Records `message` as this thread's last error and returns `code`, so that an export can
    /// `return Status.fail(FL_EINVAL, "...")`.
    @inline(never)
    static func fail(_ code: Int32, _ message: String) -> Int32 {
        message.withCString { fls_tls_set_message($0) }
        return code
    }

    /// Records a `Failure` as this thread's last error and returns its code.
    static func fail(_ failure: Failure) -> Int32 {
        fail(failure.code, failure.message)
    }

    /// The static description of a status code, for `fl_strerror`.
    static func describe(_ code: Int32) -> StaticString {
        switch code {
        case FL_OK: return "success"
        case FL_EINVAL: return "invalid argument"
        case FL_EHANDLE: return "invalid handle (NULL, destroyed, released or of another type)"
        case FL_ENOMEM: return "out of memory"
        case FL_ESTATE: return "operation not allowed in the current state"
        case FL_ETIMEDOUT: return "timed out"
        case FL_ECANCELED: return "task cancelled"
        case FL_ETASK: return "task failed"
        case FL_EDONE: return "no more items"
        case FL_ERANGE: return "out of range or buffer too small"
        case FL_EDEADLK: return "the call would wait for itself"
        case FL_EINIT: return "worker initializer failed"
        case FL_ESOURCE: return "input source failed"
        case FL_ESYSTEM: return "system resource unavailable"
        case FL_EWORKER: return "worker process died"
        case FL_ENOTSUP: return "not supported here"
        default: return "unknown status code"
        }
    }
}

/// `noun` with its indefinite article, for messages: "an actor", "a ref". (Off the hot
/// paths: only failures are worded.)
func withArticle(_ noun: String) -> String {
    guard let first = noun.unicodeScalars.first else { return noun }
    return ("aeiou".unicodeScalars.contains(first) ? "an " : "a ") + noun
}

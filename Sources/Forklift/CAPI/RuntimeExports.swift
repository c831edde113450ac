import CForklift

private let versionString: StaticString = "0.1.0"

/// Returns the library's version as "major.minor.patch". The string is static.
/// Thread-safe.
@_cdecl("fl_version")
public func fl_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(versionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Returns the library's version as major * 10000 + minor * 100 + patch, to compare with
/// FL_VERSION_NUMBER from the header the program was compiled against: the majors must match.
/// Thread-safe.
@_cdecl("fl_version_number")
public func fl_version_number() -> CInt {
    CInt(FL_VERSION_MAJOR * 10000 + FL_VERSION_MINOR * 100 + FL_VERSION_PATCH)
}

/// Returns a static description of a status code ("unknown status code" for others). Never
/// NULL; the caller does not free it. Thread-safe.
@_cdecl("fl_strerror")
public func fl_strerror(_ code: CInt) -> UnsafePointer<CChar> {
    UnsafeRawPointer(Status.describe(code).utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Returns the detail message of the last call that failed on the calling thread ("" if none).
/// At most 1023 bytes: a longer message (a failure passed down a long chain of tasks) keeps
/// its start and its end, where the first cause is, with " ... " between them. The string
/// belongs to the thread and is valid until its next failing call. Thread-safe.
@_cdecl("fl_last_error")
public func fl_last_error() -> UnsafePointer<CChar> {
    fls_tls_message()
}

/// Returns the number of CPUs this process may run on (at least 1): the default pool size.
/// Thread-safe.
@_cdecl("fl_cpu_count")
public func fl_cpu_count() -> CInt {
    fls_cpu_count()
}

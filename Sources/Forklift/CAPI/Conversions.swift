import CForklift

/// Runs an export body, turning a thrown `Failure` into its status code and last-error message.
@inline(__always)
func withStatus(_ body: () throws(Failure) -> Int32) -> Int32 {
    if let refusal = Refusal(rawValue: fls_call_restriction()) { return Status.fail(FL_ENOTSUP, refusal.message) }
    return withStatusAnywhere(body)
}

/// Why a process may not make a call (`fls_call_restriction`).
enum Refusal: Int32 {
    case workerProcess = 1
    case forkedChild = 2

    var message: String {
        switch self {
        case .workerProcess:
            return "inside a worker process or a started process only the fl_task_*, queue, pipe, lock, event, "
                + "semaphore and shared-memory calls are available"
        case .forkedChild:
            return "this process is a fork() of one whose Forklift threads were running, and they do not exist "
                + "here: only the fl_task_*, queue, pipe, lock, event, semaphore and shared-memory calls are "
                + "available (exec, or use fl_process_start)"
        }
    }
}

/// `withStatus` for the calls that also work inside a worker process or a started process
/// (queues, shared memory): their paths take no lock and touch only this process's copies.
@inline(__always)
func withStatusAnywhere(_ body: () throws(Failure) -> Int32) -> Int32 {
    do {
        return try body()
    } catch {
        return Status.fail(error)
    }
}

/// Validation helpers shared by the exports.
enum Check {
    /// A required pointer argument.
    @inline(__always)
    static func required<T>(_ value: T?, _ name: StaticString) throws(Failure) -> T {
        guard let value else { throw Failure(FL_EINVAL, "\(name) must not be NULL") }
        return value
    }

    /// A byte range: NULL is allowed only for an empty range.
    @inline(__always)
    static func bytes(_ pointer: UnsafeRawPointer?, _ length: Int, _ name: StaticString) throws(Failure) {
        if pointer == nil && length != 0 { throw Failure(FL_EINVAL, "\(name) is NULL but its length is \(length)") }
        if length < 0 { throw Failure(FL_EINVAL, "\(name) length is impossible") }
    }

    /// A size or count from C: a `size_t` of 2^63 or more arrives as a negative Int, and is an
    /// impossible size error ("\(name) 18446744073709551615 is impossible").
    @inline(__always)
    static func size(_ value: Int, _ name: StaticString) throws(Failure) {
        guard value >= 0 else { throw Failure(FL_EINVAL, "\(name) \(UInt(bitPattern: value)) is impossible") }
    }

    /// `count * size` without overflow, as an impossible size error otherwise.
    static func product(_ count: Int, _ size: Int, _ name: StaticString) throws(Failure) -> Int {
        let (total, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, count >= 0, size >= 0, total <= Int(Int32.max) * 1024 else {
            throw Failure(FL_EINVAL, "\(name): \(UInt(bitPattern: count)) items of \(UInt(bitPattern: size)) bytes is an impossible size")
        }
        return total
    }

    /// A timeout in seconds.
    static func deadline(_ timeout: Double) throws(Failure) -> Deadline {
        try Deadline(timeout: timeout)
    }
}


/// Hands a new result handle to the caller, or gives up the caller's hold when it wants none.
func publish(_ handle: UInt64, to result: UnsafeMutablePointer<fl_result?>?) {
    if let result {
        result.pointee = cHandle(handle)
    } else if let box = Registry.results.borrow(handle) {
        _ = box.releaseByCaller()
        Registry.results.giveBack(handle)
    }
}

/// The status of a synchronous submission's ready result, which is then dropped.
func finishSynchronous(_ handle: UInt64) throws(Failure) -> Int32 {
    let status = try Registry.results.with(cHandle(handle), "result") { box throws(Failure) in box.overallStatus() }
    Registry.results.retire(handle)
    return status
}

/// The options a caller passed, laid over `defaults`: only the `size` bytes the caller's struct
/// has are read, so a struct from an older header (smaller, but at least `oldest` bytes: the
/// first layout) leaves the fields it lacks at their defaults. Throws FL_EINVAL for a size no
/// header had (an uninitialized struct).
func readOptions<Options>(_ options: UnsafePointer<Options>, over defaults: Options, oldest: Int,
                          size: WritableKeyPath<Options, Int>, initializer: String) throws(Failure) -> Options {
    let given = UnsafeRawPointer(options).loadUnaligned(fromByteOffset: MemoryLayout<Options>.offset(of: size)!,
                                                        as: Int.self)
    guard given >= oldest && given <= 4096 else {
        throw Failure(FL_EINVAL, "options.size is \(given): initialize options with \(initializer)")
    }
    var result = defaults
    withUnsafeMutableBytes(of: &result) { target in
        target.copyMemory(from: UnsafeRawBufferPointer(start: options, count: min(given, target.count)))
    }
    result[keyPath: size] = MemoryLayout<Options>.size
    return result
}

/// Fills an options struct with its zero defaults and its own size (the `fl_*_options_init`
/// calls whose defaults are all zero).
func initializeOptions<Options>(_ options: UnsafeMutablePointer<Options>?, _ empty: Options,
                                size: WritableKeyPath<Options, Int>) -> Int32 {
    withStatus { () throws(Failure) in
        let options = try Check.required(options, "options")
        options.pointee = empty
        options.pointee[keyPath: size] = MemoryLayout<Options>.size
        return FL_OK
    }
}

import CForklift

/// Remote functions registered by name (`fl_function_register`), process-wide: names are
/// how a task is named in traces, and what callers that cannot pass a function pointer use
/// (`fl_remote_named`).
enum FunctionRegistry {
    /// A registered function and the user pointer it is called with.
    struct Entry {
        let fn: fl_remote_fn
        let user: UnsafeMutableRawPointer?
    }

    /// The longest name accepted, in bytes.
    static let maxNameLength = 255

    private static let lock = Lock()
    nonisolated(unsafe) private static var entries: [String: Entry] = [:]

    /// Registers `entry` under `name`. Registering the same function and user again is
    /// allowed; another function under a taken name is refused.
    static func register(_ name: String, _ entry: Entry) throws(Failure) {
        try validate(name)
        try lock.withLock { () throws(Failure) in
            if let existing = entries[name] {
                guard unsafeBitCast(existing.fn, to: UnsafeRawPointer.self) == unsafeBitCast(entry.fn, to: UnsafeRawPointer.self),
                      existing.user == entry.user else {
                    throw Failure(FL_ESTATE, "a different function is already registered as \"\(name)\"")
                }
                return
            }
            entries[name] = entry
        }
    }

    /// Removes `name`; throws if nothing is registered under it.
    static func unregister(_ name: String) throws(Failure) {
        try lock.withLock { () throws(Failure) in
            guard entries.removeValue(forKey: name) != nil else {
                throw Failure(FL_EINVAL, "no function is registered as \"\(name)\"")
            }
        }
    }

    /// The function registered under `name`.
    static func lookup(_ name: String) throws(Failure) -> Entry {
        try lock.withLock { () throws(Failure) -> Entry in
            guard let entry = entries[name] else { throw Failure(FL_EINVAL, "no function is registered as \"\(name)\"") }
            return entry
        }
    }

    /// The name `fn` is registered under, if any (for traces).
    static func name(of fn: fl_remote_fn) -> String? {
        let address = unsafeBitCast(fn, to: UnsafeRawPointer.self)
        return lock.withLock {
            entries.first { unsafeBitCast($0.value.fn, to: UnsafeRawPointer.self) == address }?.key
        }
    }

    private static func validate(_ name: String) throws(Failure) {
        guard !name.isEmpty, name.utf8.count <= maxNameLength else {
            throw Failure(FL_EINVAL, "a function name must have 1 to \(maxNameLength) bytes")
        }
    }
}

import CForklift

/// Remote functions registered by name (`fl_function_register`), process-wide: names are
/// how a task is named in traces, and what callers that cannot pass a function pointer use
/// (`fl_remote_named`).
enum FunctionRegistry {
    /// A registered function and the user pointer it is called with; for a typed function
    /// (`fl_function_register_typed`), `fn` is `typedRemoteTrampoline` and `user` is `typed`.
    struct Entry {
        let fn: fl_remote_fn
        let user: UnsafeMutableRawPointer?
        var typed: TypedCall? = nil

        /// The function traces name: a typed function's C function, else `fn`.
        var address: UnsafeRawPointer { calledFunction(fn, typed: typed) }

        /// Whether `other` registers the same function (re-registering it is allowed).
        func isSame(as other: Entry) -> Bool {
            guard address == other.address else { return false }
            if let typed, let otherTyped = other.typed { return typed.signature.text == otherTyped.signature.text }
            return typed == nil && other.typed == nil && user == other.user
        }
    }

    /// The longest name accepted, in bytes.
    static let maxNameLength = 255

    private static let lock = Lock()
    nonisolated(unsafe) private static var entries: [String: Entry] = [:]
    /// The last name each unregistered function had (for traces of tasks that ran before it
    /// was unregistered); one entry per function, so it stays as small as the registrations.
    nonisolated(unsafe) private static var formerNames: [UnsafeRawPointer: String] = [:]

    /// Registers `entry` under `name`. Registering the same function and user again is
    /// allowed; another function under a taken name is refused.
    static func register(_ name: String, _ entry: Entry) throws(Failure) {
        try validate(name)
        try lock.withLock { () throws(Failure) in
            if let existing = entries[name] {
                guard existing.isSame(as: entry) else {
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
            guard let removed = entries.removeValue(forKey: name) else {
                throw Failure(FL_EINVAL, "no function is registered as \"\(name)\"")
            }
            formerNames[removed.address] = name
        }
    }

    /// The function registered under `name`.
    static func lookup(_ name: String) throws(Failure) -> Entry {
        try lock.withLock { () throws(Failure) -> Entry in
            guard let entry = entries[name] else { throw Failure(FL_EINVAL, "no function is registered as \"\(name)\"") }
            return entry
        }
    }

    /// The name the function at `address`, called with `user`, is registered under, else the
    /// last name it was registered under, if any (for traces). A function registered under
    /// several names with other user pointers is named by the one it was called with; among
    /// names that fit equally, the first in byte order.
    static func name(of address: UnsafeRawPointer, user: UnsafeRawPointer?) -> String? {
        lock.withLock {
            let matching = entries.filter { $0.value.address == address }
            let exact = matching.filter { $0.value.typed == nil && UnsafeRawPointer($0.value.user) == user }
            return (exact.isEmpty ? matching : exact).keys.min() ?? formerNames[address]
        }
    }

    private static func validate(_ name: String) throws(Failure) {
        guard !name.isEmpty, name.utf8.count <= maxNameLength else {
            throw Failure(FL_EINVAL, "a function name must have 1 to \(maxNameLength) bytes")
        }
    }
}

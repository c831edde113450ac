/// The objects that objects of a store contain (fl_ref_contain, fl_task_contain): each keeps
/// the ones it names alive until it is freed, as a Ray object keeps the refs serialized in
/// it. A side table, so that an object that contains none (most) pays nothing but a flag bit
/// (`RemoteObject.containsRefs`) for it.
final class ContainedRefs {
    private let lock = Lock()
    /// Guarded by `lock`: for each containing object, what it contains, in the order added.
    private var table: [ObjectIdentifier: [RemoteObject]] = [:]

    /// Adds `inner` to what `container` contains; returns its index there.
    func add(_ inner: RemoteObject, to container: RemoteObject) -> Int {
        lock.withLock {
            table[ObjectIdentifier(container), default: []].append(inner)
            return table[ObjectIdentifier(container)]!.count - 1
        }
    }

    /// What `container` contains (empty if nothing).
    func contents(of container: RemoteObject) -> [RemoteObject] {
        lock.withLock { table[ObjectIdentifier(container)] ?? [] }
    }

    /// `container` is being freed: lets go of what it contains, after the lock (freeing an
    /// inner object may free what that one contains, which takes the lock again).
    func drop(_ container: RemoteObject) {
        let contents = lock.withLock { table.removeValue(forKey: ObjectIdentifier(container)) }
        withExtendedLifetime(contents) {}
    }
}
